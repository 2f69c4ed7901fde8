"""FrozenBatchNorm: BN's eval map in every mode, nothing to train, BN checkpoints load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bnlab
from bnlab.nn import FrozenBatchNorm1d, FrozenBatchNorm2d

TOL = dict(rtol=1e-10, atol=1e-10)  # float64


def _trained_bn():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    for _ in range(3):
        bn(torch.randn(8, 4, 3, 3, dtype=torch.float64) * 2 + 1)
    return bn.eval()


def test_frozen_loads_a_bn_state_dict_and_matches_bn_eval_in_train_mode():
    bn = _trained_bn()
    frozen = FrozenBatchNorm2d(4, dtype=torch.float64)
    frozen.load_state_dict(bn.state_dict())  # strict: num_batches_tracked is accepted
    frozen.train()
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    x = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = frozen(xa), bn(xb)
    torch.testing.assert_close(ya, yb, **TOL)
    g = torch.randn_like(x)
    ya.backward(g), yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, **TOL)
    assert list(frozen.parameters()) == []
    for k, v in frozen.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_from_batchnorm_copies_the_eval_map_and_refuses_layers_without_statistics():
    bn = _trained_bn()
    frozen = FrozenBatchNorm2d.from_batchnorm(bn)
    assert frozen.running_mean.dtype == torch.float64 and not frozen.training
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(frozen(x), bn(x), **TOL)
    plain = bnlab.nn.BatchNorm1d(3, affine=False).eval()
    torch.testing.assert_close(
        FrozenBatchNorm1d.from_batchnorm(plain)(x[:, :3, 0, 0].float()), plain(x[:, :3, 0, 0].float())
    )
    with pytest.raises(ValueError, match="running statistics"):
        FrozenBatchNorm1d.from_batchnorm(nn.BatchNorm1d(3, track_running_stats=False))


def test_frozen_checks_input_dims():
    with pytest.raises(ValueError, match=r"expected 4D input \(got 3D input\)"):
        FrozenBatchNorm2d(4)(torch.randn(2, 4, 3))
