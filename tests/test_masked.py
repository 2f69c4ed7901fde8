"""MaskedBatchNorm1d against torch's BatchNorm1d on the valid elements only."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnlab.nn import BatchNorm1d, MaskedBatchNorm1d

TOL = dict(rtol=1e-10, atol=1e-10)  # float64

LENGTHS = torch.tensor([7, 3, 0, 5])  # one sequence entirely padding


def _batch(seed: int, pad_value: float = 0.0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, 7, generator=gen, dtype=torch.float64) * 2 + 1
    mask = torch.arange(7) < LENGTHS[:, None]  # (N, L)
    x = x.masked_fill(~mask[:, None, :], pad_value)
    return x, mask, torch.randn(4, 3, 7, generator=gen, dtype=torch.float64)


def _valid(t, mask):
    """(K, C): the valid positions, sample by sample -- written independently of the layer."""
    return torch.cat([t[n, :, : int(LENGTHS[n])].T for n in range(t.shape[0])])


def test_masked_bn_equals_bn_over_the_unpadded_elements():
    torch.manual_seed(0)
    masked, bn = MaskedBatchNorm1d(3, dtype=torch.float64), nn.BatchNorm1d(3, dtype=torch.float64)
    with torch.no_grad():
        masked.weight.uniform_(0.5, 1.5)
        masked.bias.uniform_(-1, 1)
    bn.load_state_dict(masked.state_dict())
    for step in range(2):
        x, mask, g = _batch(step, pad_value=1e3 * (step + 1))  # padding values must not matter
        xa, xb = x.clone().requires_grad_(), _valid(x, mask).requires_grad_()
        ya, yb = masked(xa, mask), bn(xb)
        torch.testing.assert_close(_valid(ya, mask), yb, **TOL)
        assert (ya.masked_select(~mask[:, None, :]) == 0).all()  # padded outputs are 0
        ya.backward(g), yb.backward(_valid(g, mask))
        torch.testing.assert_close(_valid(xa.grad, mask), xb.grad, **TOL)
        assert (xa.grad.masked_select(~mask[:, None, :]) == 0).all()
        torch.testing.assert_close(masked.weight.grad, bn.weight.grad, **TOL)
        torch.testing.assert_close(masked.bias.grad, bn.bias.grad, **TOL)
    torch.testing.assert_close(masked.running_mean, bn.running_mean, **TOL)
    torch.testing.assert_close(masked.running_var, bn.running_var, **TOL)
    masked.eval(), bn.eval()
    x, mask, _ = _batch(5)
    torch.testing.assert_close(_valid(masked(x, mask), mask), bn(_valid(x, mask)), **TOL)


def test_no_mask_is_plain_batchnorm1d():
    torch.manual_seed(1)
    x = torch.randn(4, 3, 7, dtype=torch.float64)
    torch.testing.assert_close(
        MaskedBatchNorm1d(3, dtype=torch.float64)(x), BatchNorm1d(3, dtype=torch.float64)(x), **TOL
    )


def test_mask_errors_name_what_was_expected_and_what_arrived():
    layer = MaskedBatchNorm1d(3)
    x = torch.randn(4, 3, 7)
    with pytest.raises(
        ValueError, match=r"expected mask of shape \(N, L\) = \(4, 7\) .* \(got mask of shape \(4, 6\)\)"
    ):
        layer(x, torch.ones(4, 6, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"expected a torch.bool mask \(got torch.float32\)"):
        layer(x, torch.ones(4, 7))
    one_valid = torch.zeros(4, 7, dtype=torch.bool)
    one_valid[0, 0] = True
    with pytest.raises(ValueError, match=r"expected more than 1 valid position .* \(got 1 "):
        layer(x, one_valid)
    with pytest.raises(ValueError, match=r"expected 3D input \(got 2D input\)"):
        layer(torch.randn(4, 3), torch.ones(4, 1, dtype=torch.bool))
