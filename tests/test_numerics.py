"""Numerical robustness: a large common offset must not cancel the variance away."""

import contextlib

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
    # A float32 mean alone would bound the output error below by its rounding (ulp(1e4)/2 = 4.9e-4).
    assert ours_err <= torch_err, (ours_err, torch_err)


def test_running_var_accurate_with_large_offset():
    x = (1e4 + torch.randn(64, 4, 8, 8, dtype=torch.float64)).float()
    bn = bnlab.nn.BatchNorm2d(4, momentum=1.0)
    bn(x)
    exact = x.double().var((0, 2, 3), unbiased=True)
    torch.testing.assert_close(bn.running_var.double(), exact, rtol=1e-3, atol=0)


@pytest.mark.parametrize("fast", [True, False], ids=["kernels", "reference"])
@pytest.mark.parametrize("shape", [(2, 256), (4, 256, 3), (8, 64, 2, 2), (3, 16, 4, 4)])
def test_small_variance_output_as_accurate_as_torch(shape, fast):
    """A channel with a tiny variance at a large mean (std 0.01 at 2): invstd ~100 magnifies the
    float32 rounding of the mean (up to 1.2e-7) into an output error up to 1.2e-5. torch normalizes
    by its float64 mean; bnlab folds the mean's rounding residual into the shift, so its error
    stays at the output's own rounding (~1e-7), on both backends."""
    gen = torch.Generator().manual_seed(1)
    x = (2 + 0.01 * torch.randn(shape, generator=gen, dtype=torch.float64)).float()
    x64 = x.double()
    dims = [0] + list(range(2, x.dim()))
    shp = [1, shape[1]] + [1] * (x.dim() - 2)
    exact = (x64 - x64.mean(dims).view(shp)) / torch.sqrt(x64.var(dims, unbiased=False).view(shp) + 1e-5)
    layer_cls = {2: bnlab.nn.BatchNorm1d, 3: bnlab.nn.BatchNorm1d, 4: bnlab.nn.BatchNorm2d}[x.dim()]
    ref_cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}[x.dim()]
    with torch.no_grad(), contextlib.nullcontext() if fast else bnlab.core.dispatch.reference_only():
        ours_err = float((layer_cls(shape[1], affine=False)(x).double() - exact).abs().max())
    torch_err = float((ref_cls(shape[1], affine=False)(x).double() - exact).abs().max())
    assert ours_err <= max(torch_err, 1e-6), (ours_err, torch_err)
    assert ours_err < 1e-6, ours_err  # without the fold: ~1e-5 on these inputs
