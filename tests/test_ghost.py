"""Ghost BN against an independent loop of torch's batch_norm over the ghost batches."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as TF

import bnlab.core.ops
from bnlab.nn import GhostBatchNorm1d, GhostBatchNorm2d, GhostBatchNorm3d
from bnlab.nn.ghost import ghost_sizes

TOL = dict(rtol=1e-10, atol=1e-10)  # float64: only summation order differs


def _reference(x, weight, bias, sizes, eps=1e-5):
    """torch.nn.functional.batch_norm on each ghost batch, one after the other."""
    return torch.cat([TF.batch_norm(part, None, None, weight, bias, True, 0.0, eps) for part in x.split(sizes)])


def test_ghost_sizes_fold_the_remainder_into_the_last_ghost():
    assert ghost_sizes(12, 4) == [4, 4, 4]
    assert ghost_sizes(10, 4) == [4, 6]
    assert ghost_sizes(15, 4) == [4, 4, 7]
    assert ghost_sizes(3, 4) == [3]
    assert ghost_sizes(4, 4) == [4]


@pytest.mark.parametrize("n, v, shape", [(12, 4, (3, 5, 5)), (10, 4, (3, 5, 5)), (15, 4, (6,)), (3, 4, (3, 2, 2))])
def test_ghost_outputs_and_gradients_equal_bn_per_ghost(n, v, shape):
    torch.manual_seed(0)
    cls = GhostBatchNorm2d if len(shape) == 3 else GhostBatchNorm1d
    layer = cls(shape[0], v, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-1, 1)
    w, b = layer.weight.detach().clone().requires_grad_(), layer.bias.detach().clone().requires_grad_()
    x = torch.randn(n, *shape, dtype=torch.float64) * 2 + 1
    x[:v] += 5  # ghosts with different statistics: a per-batch BN would not match
    g = torch.randn_like(x)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    y, want = layer(xa), _reference(xb, w, b, ghost_sizes(n, v))
    torch.testing.assert_close(y, want, **TOL)
    y.backward(g)
    want.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, **TOL)
    torch.testing.assert_close(layer.weight.grad, w.grad, **TOL)
    torch.testing.assert_close(layer.bias.grad, b.grad, **TOL)


def test_running_stats_are_those_of_bn_on_the_whole_batch_and_eval_is_bn():
    torch.manual_seed(1)
    ghost, bn = (
        GhostBatchNorm2d(3, 4, momentum=None, dtype=torch.float64),
        nn.BatchNorm2d(3, momentum=None, dtype=torch.float64),
    )
    for n in (16, 10, 7):
        x = torch.randn(n, 3, 4, 4, dtype=torch.float64) * 3 + torch.arange(n, dtype=torch.float64).view(n, 1, 1, 1)
        ghost(x), bn(x)
    torch.testing.assert_close(ghost.running_mean, bn.running_mean, **TOL)
    torch.testing.assert_close(ghost.running_var, bn.running_var, **TOL)
    assert int(ghost.num_batches_tracked) == int(bn.num_batches_tracked) == 3
    ghost.eval(), bn.eval()
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(ghost(x), bn(x), **TOL)


def test_ghost_size_equal_to_batch_is_plain_bn():
    torch.manual_seed(2)
    ghost, bn = GhostBatchNorm1d(4, 8, dtype=torch.float64), nn.BatchNorm1d(4, dtype=torch.float64)
    x = torch.randn(8, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(ghost(x), bn(x), **TOL)


def test_ghosts_are_normalized_in_at_most_two_calls_of_the_bn_core(monkeypatch):
    calls = []
    real = bnlab.core.ops.apply_train
    monkeypatch.setattr(bnlab.core.ops, "apply_train", lambda *a: calls.append(1) or real(*a))
    layer = GhostBatchNorm1d(4, 2)
    layer(torch.randn(64, 4))  # 32 ghosts
    assert len(calls) == 1
    layer(torch.randn(65, 4))  # 31 ghosts of 2 and one of 3
    assert len(calls) == 3


def test_ghost_rejects_bad_virtual_batch_sizes():
    with pytest.raises(ValueError, match=r"expected virtual_batch_size > 0 \(got 0\)"):
        GhostBatchNorm2d(4, 0)
    with pytest.raises(ValueError, match=r"got -2"):
        GhostBatchNorm2d(4, -2)
    with pytest.raises(TypeError, match="expected an int virtual_batch_size"):
        GhostBatchNorm2d(4, 2.5)


def test_ghost_of_one_value_per_channel_is_refused_in_training():
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        GhostBatchNorm1d(4, 1)(torch.randn(8, 4))


def test_without_running_stats_eval_normalizes_per_ghost_as_in_training():
    torch.manual_seed(3)
    layer = GhostBatchNorm1d(3, 4, track_running_stats=False, dtype=torch.float64)
    x = torch.randn(10, 3, dtype=torch.float64)
    torch.testing.assert_close(layer.eval()(x), _reference(x, layer.weight, layer.bias, [4, 6]), **TOL)


@pytest.mark.parametrize("n, shape, fmt", [(12, (3, 1, 5), "2d"), (10, (3, 2, 2), "2d"), (12, (3, 2, 2, 2), "3d")])
def test_channels_last_input_gives_channels_last_output_equal_to_bn_per_ghost(n, shape, fmt):
    """Channels-last memory stays channels-last (as torch's BN keeps it), with the same values and
    gradients as the reference; 10 samples in ghosts of 4 and 6."""
    torch.manual_seed(0)
    memory = torch.channels_last if fmt == "2d" else torch.channels_last_3d
    cls = GhostBatchNorm2d if fmt == "2d" else GhostBatchNorm3d
    layer = cls(shape[0], 4, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-1, 1)
    w, b = layer.weight.detach().clone().requires_grad_(), layer.bias.detach().clone().requires_grad_()
    x = torch.randn(n, *shape, dtype=torch.float64) * 2 + 1
    x[:4] += 5
    dy = torch.randn_like(x)
    xl = x.contiguous(memory_format=memory).requires_grad_()
    y = layer(xl)
    y.backward(dy.contiguous(memory_format=memory))
    assert y.is_contiguous(memory_format=memory)
    xr = x.clone().requires_grad_()
    ref = _reference(xr, w, b, ghost_sizes(n, 4))
    ref.backward(dy)
    torch.testing.assert_close(y, ref, **TOL)
    for got, want in ((xl.grad, xr.grad), (layer.weight.grad, w.grad), (layer.bias.grad, b.grad)):
        torch.testing.assert_close(got, want, **TOL)
