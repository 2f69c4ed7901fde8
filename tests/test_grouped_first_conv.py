"""The grouped lab CNN's first convolution (one input channel per member) on bnlab's loops
(bnlab.kernels.numba_conv): the same outputs and gradients as the members' own torch Conv1d layers,
for the lab's kernel width (five taps, summed in one pass) and for others (the loop over taps)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnlab.train.grouped import GroupedConv1d

# float32 sums of up to a few thousand products, in another order than oneDNN's (relative to the largest entry)
TOL = {torch.float32: 2e-5, torch.float64: 1e-12}


def _members(k, taps, stride, padding, dilation, bias, dtype):
    torch.manual_seed(0)
    return [
        nn.Conv1d(1, 25, taps, stride=stride, padding=padding, dilation=dilation, bias=bias).to(dtype) for _ in range(k)
    ]


def _close(got, want, dtype):
    scale = want.abs().max().clamp_min(1.0)
    assert (got - want).abs().max() <= TOL[dtype] * scale, (got - want).abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("taps", "stride", "padding", "dilation", "bias"),
    [(5, 2, 1, 1, True), (3, 1, 2, 2, False), (4, 3, 0, 1, True)],
)
def test_first_conv_matches_each_members_conv1d(dtype, taps, stride, padding, dilation, bias):
    k, n, length = 6, 30, 40
    convs = _members(k, taps, stride, padding, dilation, bias, dtype)
    grouped = GroupedConv1d(convs)
    x = torch.randn(n, k, length, dtype=dtype, requires_grad=True)
    y = grouped(x)  # (N, k*25, 1, L')
    want = torch.cat([convs[i](x[:, i : i + 1]) for i in range(k)], 1).unsqueeze(2)
    assert y.shape == want.shape and y.is_contiguous(memory_format=torch.channels_last)
    _close(y, want, dtype)
    dy = torch.randn_like(want)
    params = [grouped.weight] + ([grouped.bias] if bias else [])
    got = torch.autograd.grad(y, [x, *params], dy)
    ref_params = [c.weight for c in convs] + ([c.bias for c in convs] if bias else [])
    ref = torch.autograd.grad(want, [x, *ref_params], dy)
    _close(got[0], ref[0], dtype)
    _close(got[1], torch.cat(ref[1 : 1 + k]), dtype)
    if bias:
        _close(got[2], torch.cat(ref[1 + k :]), dtype)


def test_first_conv_without_an_input_gradient_gives_the_same_parameter_gradients():
    """The lab's case (the input is data): the same weight and bias gradients as with one."""
    convs = _members(4, 5, 2, 1, 1, True, torch.float32)
    grouped = GroupedConv1d(convs)
    x = torch.randn(20, 4, 40)
    dy = torch.randn(20, 100, 1, 19)
    plain = torch.autograd.grad(grouped(x), [grouped.weight, grouped.bias], dy)
    with_x = torch.autograd.grad(grouped(x.requires_grad_()), [grouped.weight, grouped.bias], dy)
    for a, b in zip(plain, with_x):
        assert torch.equal(a, b)


def test_first_conv_in_another_dtype_takes_torchs_grouped_convolution():
    """bfloat16 (like a GPU tensor) is not the loops' to compute: torch's grouped convolution, same values."""
    convs = _members(3, 5, 2, 1, 1, True, torch.float32)
    x = torch.randn(10, 3, 40)
    want = GroupedConv1d(convs)(x)
    got = GroupedConv1d([c.to(torch.bfloat16) for c in convs])(x.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16 and got.shape == want.shape
    assert (got.float() - want).abs().max() <= 0.05 * want.abs().max()
