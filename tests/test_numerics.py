"""Numerical robustness: a large common offset must not cancel the variance away."""

import pytest
import torch

import bnlab


@pytest.mark.parametrize("offset", [1e4, 1e6])
def test_large_offset_normalizes_as_accurately_as_torch(offset):
    gen = torch.Generator().manual_seed(0)
    x64 = offset + torch.randn(32, 8, 16, 16, generator=gen, dtype=torch.float64)
    x = x64.float()  # what float32 can represent of it
    exact = torch.nn.functional.batch_norm(x.double(), None, None, training=True)
    with torch.no_grad():
        ours_err = float((bnlab.nn.BatchNorm2d(8)(x).double() - exact).abs().max())
        torch_err = float((torch.nn.BatchNorm2d(8)(x).double() - exact).abs().max())
    # E[x^2]-E[x]^2 in float32 loses the variance entirely at offset 1e4 (it comes out negative).
    # The output error is bounded below by float32's rounding of the mean (ulp(1e4)/2 = 4.9e-4).
    assert ours_err <= torch_err, (ours_err, torch_err)


def test_running_var_accurate_with_large_offset():
    x = (1e4 + torch.randn(64, 4, 8, 8, dtype=torch.float64)).float()
    bn = bnlab.nn.BatchNorm2d(4, momentum=1.0)
    bn(x)
    exact = x.double().var((0, 2, 3), unbiased=True)
    torch.testing.assert_close(bn.running_var.double(), exact, rtol=1e-3, atol=0)
