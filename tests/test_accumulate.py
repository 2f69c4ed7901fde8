"""ExactBNAccumulation: k micro-batches, one commit = one forward over the concatenated batch."""

import pytest
import torch
from torch import nn

import bnlab
from bnlab.surgery import ExactBNAccumulation

TOL = dict(rtol=1e-12, atol=1e-12)  # float64


def _model(bn_cls, momentum):
    torch.manual_seed(0)
    # two BN layers that both read the raw input: each sees exactly the effective batch's values
    return nn.ModuleDict(
        {"a": bn_cls(3, momentum=momentum, dtype=torch.float64), "b": bn_cls(3, momentum=momentum, dtype=torch.float64)}
    )


def _forward(model, x):
    return model["a"](x) + model["b"](2 * x)


@pytest.mark.parametrize("bn_cls", [nn.BatchNorm2d, bnlab.nn.BatchNorm2d])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_stats_equal_one_forward_over_the_effective_batch(bn_cls, momentum):
    ours, ref = _model(bn_cls, momentum), _model(bn_cls, momentum)
    gen = torch.Generator().manual_seed(1)
    steps = [[3, 5, 1], [4, 4], [2, 7, 3, 2]]  # uneven micro-batch sizes per optimizer step
    with ExactBNAccumulation(ours) as acc:
        for sizes in steps:
            micro = [torch.randn(n, 3, 4, 4, generator=gen, dtype=torch.float64) * 2 + 1 for n in sizes]
            for x in micro:
                _forward(ours, x).sum().backward()
            acc.commit()
            with torch.no_grad():
                _forward(ref, torch.cat(micro))
            for k in ("a", "b"):
                torch.testing.assert_close(ours[k].running_mean, ref[k].running_mean, **TOL)
                torch.testing.assert_close(ours[k].running_var, ref[k].running_var, **TOL)
                assert int(ours[k].num_batches_tracked) == int(ref[k].num_batches_tracked)
    assert ours["a"].momentum == momentum and not ours["a"]._forward_pre_hooks


def test_without_the_helper_micro_batches_give_different_running_stats():
    """The problem the helper solves: k per-micro-batch updates differ from one full-batch update."""
    plain, ref = nn.BatchNorm2d(3).double(), nn.BatchNorm2d(3).double()
    micro = [torch.randn(n, 3, 4, 4, dtype=torch.float64) + 1 for n in (2, 6)]
    for x in micro:
        plain(x)
    ref(torch.cat(micro))
    assert (plain.running_mean - ref.running_mean).abs().max() > 1e-3


def test_eval_forwards_are_not_recorded_and_gradients_are_unchanged():
    model, ref = nn.BatchNorm1d(3).double(), nn.BatchNorm1d(3).double()
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    with ExactBNAccumulation(model) as acc:
        model.eval()
        model(torch.randn(4, 3, dtype=torch.float64))
        assert acc.pending == 0
        model.train()
        model(x).pow(2).sum().backward()
        acc.commit()
    xr = x.detach().clone().requires_grad_()
    ref(xr).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, **TOL)
    torch.testing.assert_close(model.running_var, ref.running_var, **TOL)


def test_uncommitted_micro_batches_warn_and_leave_stats_untouched():
    model = nn.BatchNorm1d(3)
    with pytest.warns(UserWarning, match="1 micro-batch"):
        with ExactBNAccumulation(model):
            model(torch.randn(4, 3))
    assert torch.equal(model.running_mean, torch.zeros(3)) and int(model.num_batches_tracked) == 0


def test_commit_outside_the_block_is_an_error():
    acc = ExactBNAccumulation(nn.BatchNorm1d(3))
    with pytest.raises(RuntimeError, match="inside the"):
        acc.commit()
