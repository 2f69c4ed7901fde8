"""Batch Renorm against BN (r_max=1, d_max=0) and against Algorithm 1 of the paper written in torch."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bnlab.nn import BatchRenorm1d, BatchRenorm2d, GhostBatchNorm2d, renorm_warmup, set_renorm_limits

TOL = dict(rtol=1e-10, atol=1e-10)  # float64


def _init(layer):
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-1, 1)
    return layer


def _paper(x, weight, bias, rm, rv, r_max, d_max, eps=1e-5):
    """Ioffe 2017, Algorithm 1, with r and d detached (stop_gradient)."""
    dims = (0, 2, 3)
    mean = x.mean(dims)
    sigma_b = torch.sqrt(x.var(dims, unbiased=False) + eps)
    sigma = torch.sqrt(rv + eps)
    r = (sigma_b / sigma).clamp(1 / r_max, r_max).detach()
    d = ((mean - rm) / sigma).clamp(-d_max, d_max).detach()
    v = (1, -1, 1, 1)
    xhat = (x - mean.view(v)) / sigma_b.view(v) * r.view(v) + d.view(v)
    return xhat * weight.view(v) + bias.view(v)


def test_renorm_with_r_max_1_d_max_0_is_batch_norm():
    torch.manual_seed(0)
    renorm = _init(BatchRenorm2d(3, r_max=1.0, d_max=0.0, dtype=torch.float64))
    bn = nn.BatchNorm2d(3, dtype=torch.float64)
    bn.load_state_dict(renorm.state_dict())
    for step in range(3):
        x = torch.randn(6, 3, 4, 4, dtype=torch.float64) * 2 + step
        g = torch.randn_like(x)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = renorm(xa), bn(xb)
        torch.testing.assert_close(ya, yb, **TOL)
        ya.backward(g), yb.backward(g)
        for a, b in ((xa.grad, xb.grad), (renorm.weight.grad, bn.weight.grad), (renorm.bias.grad, bn.bias.grad)):
            torch.testing.assert_close(a, b, **TOL)
    torch.testing.assert_close(renorm.running_var, bn.running_var, **TOL)


@pytest.mark.parametrize("r_max, d_max", [(1.5, 0.5), (3.0, 5.0)])
def test_renorm_equals_the_papers_algorithm_with_r_and_d_constant(r_max, d_max):
    torch.manual_seed(1)
    layer = _init(BatchRenorm2d(4, r_max=r_max, d_max=d_max, dtype=torch.float64))
    with torch.no_grad():  # running statistics far enough from the batch's that some r, d clip
        layer.running_mean.copy_(torch.tensor([0.0, 1.0, -2.0, 0.3], dtype=torch.float64))
        layer.running_var.copy_(torch.tensor([1.0, 0.2, 9.0, 2.0], dtype=torch.float64))
    rm, rv = layer.running_mean.clone(), layer.running_var.clone()
    w, b = layer.weight.detach().clone().requires_grad_(), layer.bias.detach().clone().requires_grad_()
    x = torch.randn(5, 4, 3, 3, dtype=torch.float64) * 1.5 + 0.5
    g = torch.randn_like(x)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = layer(xa), _paper(xb, w, b, rm, rv, r_max, d_max)
    torch.testing.assert_close(ya, yb, **TOL)
    ya.backward(g), yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, **TOL)
    torch.testing.assert_close(layer.weight.grad, w.grad, **TOL)
    torch.testing.assert_close(layer.bias.grad, b.grad, **TOL)
    # running statistics: PyTorch's update with the unbiased batch variance
    torch.testing.assert_close(layer.running_mean, 0.9 * rm + 0.1 * x.mean((0, 2, 3)), **TOL)
    torch.testing.assert_close(layer.running_var, 0.9 * rv + 0.1 * x.var((0, 2, 3), unbiased=True), **TOL)


def test_unclipped_training_output_equals_the_eval_output():
    torch.manual_seed(2)
    layer = _init(BatchRenorm1d(3, r_max=1e6, d_max=1e6, dtype=torch.float64))
    with torch.no_grad():
        layer.running_mean.uniform_(-1, 1)
        layer.running_var.uniform_(0.5, 2)
    x = torch.randn(7, 3, dtype=torch.float64)
    want = layer.eval()(x)
    torch.testing.assert_close(layer.train()(x), want, **TOL)


def test_limits_are_validated_on_construction_and_assignment():
    with pytest.raises(ValueError, match=r"expected r_max >= 1 \(got 0.5\)"):
        BatchRenorm2d(3, r_max=0.5)
    with pytest.raises(ValueError, match=r"expected d_max >= 0 \(got -1\)"):
        BatchRenorm2d(3, d_max=-1)
    layer = BatchRenorm2d(3)
    with pytest.raises(ValueError, match="r_max"):
        layer.r_max = 0.9
    with pytest.raises(TypeError, match="d_max"):
        layer.d_max = float("nan")
    with pytest.raises(ValueError, match="track_running_stats=True"):
        BatchRenorm2d(3, track_running_stats=False)
    layer.r_max, layer.d_max = 2, 0.25
    assert (layer.r_max, layer.d_max) == (2.0, 0.25)


def test_warmup_follows_the_papers_schedule_and_applies_to_every_layer():
    assert renorm_warmup(0) == (1.0, 0.0)
    assert renorm_warmup(5000) == (1.0, 0.0)
    r, d = renorm_warmup(22500)  # halfway for r (5k..40k); 7/8 of the way for d (5k..25k)
    assert math.isclose(r, 2.0) and math.isclose(d, 4.375)
    assert renorm_warmup(25000)[1] == 5.0 and renorm_warmup(40000) == (3.0, 5.0) == renorm_warmup(10**6)
    with pytest.raises(ValueError, match="hold_steps"):
        renorm_warmup(0, hold_steps=100, d_max_step=50)
    model = nn.Sequential(BatchRenorm2d(3), GhostBatchNorm2d(3, 2), nn.Sequential(BatchRenorm1d(4)))
    assert set_renorm_limits(model, *renorm_warmup(22500)) == 2
    assert model[2][0].r_max == 2.0
