"""inf, NaN and huge values follow torch's IEEE behaviour on every path (kernels and reference).

Each case of the table runs bnlab's layer on the fast path and on the reference path, in training
and in eval, against ``torch.nn.BatchNorm1d/2d`` on the same input and buffers: the output and the
running statistics must have NaN where torch has NaN, the same infinities, and finite values within
a float32 tolerance. Shapes cover the kernels' memory families: long planes (several blocks), short
planes run as rows, (N, C) rows, channels-last.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bnlab
from bnlab.core import dispatch

INF, NAN = float("inf"), float("nan")
TOL = {
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.float16: {"rtol": 1e-2, "atol": 1e-2},
    torch.float64: {"rtol": 1e-5, "atol": 1e-5},
}
SHAPES = [(2, 3, 9000), (64, 3, 7), (16, 3), (4, 3, 6, 5)]  # planes of 2 blocks, rows of planes, rows, 4D
VALUES = [INF, -INF, NAN, 1e26, -1e30, 3e38]  # one such value in channel 0


def _same(a: torch.Tensor, b: torch.Tensor, dtype) -> None:
    assert torch.equal(a.isnan(), b.isnan()), (a, b)
    assert torch.equal(a.isposinf(), b.isposinf()) and torch.equal(a.isneginf(), b.isneginf()), (a, b)
    finite = a.isfinite()
    torch.testing.assert_close(a[finite].double(), b[finite].double(), **TOL[dtype])


def _pair(shape, dtype=torch.float32, momentum=0.1, running_var=None):
    cls = (bnlab.nn.BatchNorm1d, nn.BatchNorm1d) if len(shape) < 4 else (bnlab.nn.BatchNorm2d, nn.BatchNorm2d)
    ours, ref = cls[0](shape[1], momentum=momentum), cls[1](shape[1], momentum=momentum)
    with torch.no_grad():
        ours.weight.copy_(torch.tensor([2.0, -1.5, 0.5]))
        ours.bias.copy_(torch.tensor([0.25, -0.5, 1.0]))
        if running_var is not None:
            ours.running_var.fill_(running_var)
    ref.load_state_dict(ours.state_dict())
    return ours.to(dtype), ref.to(dtype)


def _check(x, ours, ref, train: bool, dtype=torch.float32, steps: int = 1):
    ours.train(train), ref.train(train)
    with torch.no_grad():
        for _ in range(steps):
            y, y_ref = ours(x), ref(x)
    _same(y, y_ref, dtype)
    _same(ours.running_mean, ref.running_mean, dtype)
    _same(ours.running_var, ref.running_var, dtype)


@pytest.fixture(params=["fast", "reference"])
def path(request):
    dispatch.set_fast(request.param == "fast")
    yield request.param
    dispatch.set_fast(True)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("train", [True, False])
def test_a_non_finite_or_huge_value_gives_torchs_output_and_statistics(path, shape, value, train):
    torch.manual_seed(0)
    x = torch.randn(shape)
    if len(shape) == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    x[(1, 0) + (0,) * (x.dim() - 2)] = value
    _check(x, *_pair(shape), train)


@pytest.mark.parametrize("value", [INF, NAN, 1e26])
def test_a_non_finite_or_huge_value_in_a_later_block_of_wide_rows(path, value):
    """Rows of 100 * 49 values run their statistics in blocks of whole channels' columns; the last
    channel's lie in the last block, whose float64 fallback must read its own columns."""
    torch.manual_seed(5)
    x = torch.randn(3, 100, 49)
    x[1, 99, 5] = value
    ours, ref = bnlab.nn.BatchNorm1d(100), nn.BatchNorm1d(100)
    with torch.no_grad():
        ours.weight.copy_(torch.linspace(-2.0, 2.0, 100))
        ours.bias.copy_(torch.linspace(1.0, -1.0, 100))
    ref.load_state_dict(ours.state_dict())
    _check(x, ours, ref, True)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("train", [True, False])
def test_an_infinite_running_var_stays_infinite_as_in_torch(path, shape, train):
    torch.manual_seed(1)
    x = torch.randn(shape)
    _check(x, *_pair(shape, running_var=INF), train, steps=2)


def test_float16_running_var_overflow_then_eval_as_in_torch(path):
    """momentum * var above 65504 rounds the float16 running_var to inf; torch keeps it inf at the
    next update and its eval output is then beta, finite."""
    torch.manual_seed(2)
    x = (torch.randn(32, 3, 10) * 400).half()  # variance about 1.6e5
    ours, ref = _pair((32, 3, 10), torch.float16, momentum=0.9)
    _check(x, ours, ref, True, torch.float16, steps=2)
    assert ours.running_var.isinf().all()
    _check(x, ours, ref, False, torch.float16)
    assert ours.eval()(x).isfinite().all()


@pytest.mark.parametrize("value", [-INF, -3e38, NAN, INF])
def test_fused_relu_of_a_large_negative_value_is_zero_as_torch(path, value):
    """BN + ReLU fused: relu is a select (0 where z <= 0), not z * 0, which is NaN at z = -inf."""
    torch.manual_seed(3)
    ours = bnlab.nn.BatchNormAct1d(3, act="relu").eval()
    ref = nn.BatchNorm1d(3).eval()
    with torch.no_grad():
        ours.weight.fill_(10.0)
        ref.weight.fill_(10.0)
    x = torch.randn(8, 3, 70)  # planes of 70: the plane kernels; (8, 3) below: the row kernels
    x[0, 0, 0] = value
    for inp in (x, x[:, :, 0].contiguous()):
        with torch.no_grad():
            _same(ours(inp), torch.relu(ref(inp)), torch.float32)


def test_channel_of_equal_huge_values_has_variance_zero():
    """Equal values of 1e30 in a channel: the variance is exactly 0 and the output beta. (The
    kernels' float32 squares of the mean's rounding residue overflowed to a NaN variance; torch's
    own output there is its mean's residue times invstd, 4.6e24 in float32, so the exact values are
    the reference.)"""
    x = torch.randn(40, 3)
    x[:, 0] = 1e30
    for fast in (True, False):
        dispatch.set_fast(fast)
        try:
            ours = bnlab.nn.BatchNorm1d(3)
            with torch.no_grad():
                ours.bias.fill_(0.5)
            y = ours(x)
        finally:
            dispatch.set_fast(True)
        assert torch.equal(y[:, 0], torch.full((40,), 0.5))
        assert ours.running_var[0] == 0.9  # (1 - momentum) * 1 + momentum * 0


@pytest.mark.parametrize("shape", SHAPES)
def test_float64_values_whose_squares_overflow_give_an_infinite_variance_as_torch(path, shape):
    """float64 values near 1e200: the sums of squares overflow float64 itself; the first block's
    merge formed inf * 0 = NaN there."""
    torch.manual_seed(4)
    x = torch.randn(shape, dtype=torch.float64) * 1e200
    ours, ref = _pair(shape)
    _check(x, ours.double(), ref.double(), True, torch.float64)
