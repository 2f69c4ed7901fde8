"""inf, NaN and huge values on the Triton backend follow torch.nn.BatchNorm, as the CPU kernels do
(tests/test_nonfinite_values.py's table, run here by Triton's interpreter on CPU tensors).

Reference: ``torch.nn.BatchNorm1d/2d`` on the same input and buffers, in training and eval: NaN
where torch has NaN, the same infinities, finite values within test_nonfinite_values' tolerance
(float32 1e-5). Both launch geometries run every case: the reduction split over programs (partial
moments + merge) and the one-launch forward of small inputs. float64 is not here: the dispatch
sends it to the reference backend. The full table (6 values x 4 shapes x training/eval x 2
geometries) is marked slow; the default run keeps one shape per memory family.
"""

from __future__ import annotations

import os

import pytest
import torch

# Triton reads TRITON_INTERPRET as it decorates kernels: set before triton is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton", reason="needs triton (pip install 'bnlab[gpu]')")

import bnlab
from bnlab.core import dispatch
from bnlab.core.backends import triton_gpu
from test_nonfinite_values import INF, NAN, SHAPES, VALUES, _check, _pair, _same

pytestmark = pytest.mark.skipif(
    not triton_gpu._interpreted(),
    reason="triton was imported before TRITON_INTERPRET=1 was set (run this file in its own process)",
)

# The default run: long planes (several tiles) and channels-last rows; the rest of the table is slow.
FAST_SHAPES = [(2, 3, 9000), (4, 3, 6, 5)]
TABLE_SHAPES = [pytest.param(s, marks=() if s in FAST_SHAPES else pytest.mark.slow) for s in SHAPES]


@pytest.fixture(autouse=True)
def triton_backend():
    dispatch.set_backend("triton")
    try:
        yield
    finally:
        dispatch.set_backend(None)


@pytest.fixture(params=["split", "single"])
def launches(request, monkeypatch):
    """Both geometries: the reduction split over programs, and one launch per direction."""
    monkeypatch.setattr(triton_gpu, "SINGLE_MAX_NUMEL", 0 if request.param == "split" else 1 << 18)
    return request.param


def _on_triton(x: torch.Tensor, module) -> None:
    assert dispatch.select(x, module.weight.detach(), module.bias.detach()) is dispatch.TRITON


@pytest.mark.parametrize("shape", TABLE_SHAPES)
@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("train", [True, False])
def test_a_non_finite_or_huge_value_gives_torchs_output_and_statistics(launches, shape, value, train):
    torch.manual_seed(0)
    x = torch.randn(shape)
    if len(shape) == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    x[(1, 0) + (0,) * (x.dim() - 2)] = value
    ours, ref = _pair(shape)
    _on_triton(x, ours)
    _check(x, ours, ref, train)


@pytest.mark.parametrize("value", [INF, NAN, -3e38, 1e4])
def test_a_channel_starting_with_a_non_finite_huge_or_outlying_value(launches, value):
    """The first value of a channel and of the first tile, where a kernel might take its shift: an
    inf or NaN there gives torch's inf/NaN statistics, a huge or outlying one costs no precision."""
    torch.manual_seed(5)
    x = torch.randn(2, 3, 9000)
    x[0, 0, 0] = value
    _check(x, *_pair(x.shape), True)


@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[3]])
@pytest.mark.parametrize("train", [True, False])
def test_an_infinite_running_var_stays_infinite_as_in_torch(launches, shape, train):
    torch.manual_seed(1)
    x = torch.randn(shape)
    _check(x, *_pair(shape, running_var=INF), train, steps=2)


def test_float16_running_var_overflow_then_eval_as_in_torch(launches):
    """momentum * var above 65504 rounds the float16 running_var to inf; torch keeps it inf at the
    next update and its eval output is then beta, finite."""
    torch.manual_seed(2)
    x = (torch.randn(32, 3, 10) * 400).half()
    ours, ref = _pair((32, 3, 10), torch.float16, momentum=0.9)
    _on_triton(x, ours)
    _check(x, ours, ref, True, torch.float16, steps=2)
    assert ours.running_var.isinf().all()
    _check(x, ours, ref, False, torch.float16)
    assert ours.eval()(x).isfinite().all()


HALF_CASES = [(torch.bfloat16, v) for v in (INF, -INF, NAN, 1e26, -1e30)] + [
    (torch.float16, v) for v in (INF, -INF, NAN, 6e4)
]


@pytest.mark.parametrize(("dtype", "value"), HALF_CASES, ids=str)
def test_half_types_non_finite_or_huge_values_as_torch(launches, dtype, value):
    """bfloat16 holds float32's range: the same values; float16 tops out at 65504 (larger values are
    inf), where the float32 statistics cannot overflow. Torch's output is rounded to the half type,
    so finite values within 2 of its ulps."""
    torch.manual_seed(6)
    x = torch.randn(4, 3, 6, 5).to(dtype).contiguous(memory_format=torch.channels_last)
    x[1, 0, 0, 0] = value
    ours, ref = _pair(x.shape, dtype)
    tol = 2 * torch.finfo(dtype).eps
    for train in (True, False):
        ours.train(train), ref.train(train)
        with torch.no_grad():
            y, y_ref = ours(x), ref(x)
        for a, b in ((y, y_ref), (ours.running_mean, ref.running_mean), (ours.running_var, ref.running_var)):
            assert torch.equal(a.isnan(), b.isnan()), (a, b)
            assert torch.equal(a.isposinf(), b.isposinf()) and torch.equal(a.isneginf(), b.isneginf()), (a, b)
            finite = a.isfinite()
            torch.testing.assert_close(a[finite].float(), b[finite].float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("value", [-INF, -3e38, NAN, INF])
def test_fused_relu_of_a_large_negative_value_is_zero_as_torch(launches, value):
    """BN + ReLU fused: relu is 0 where z <= 0 and NaN where z is NaN, as torch.relu."""
    torch.manual_seed(3)
    ours = bnlab.nn.BatchNormAct1d(3, act="relu").eval()
    ref = torch.nn.BatchNorm1d(3).eval()
    with torch.no_grad():
        ours.weight.fill_(10.0)
        ref.weight.fill_(10.0)
    x = torch.randn(8, 3, 70)
    x[0, 0, 0] = value
    for inp in (x, x[:, :, 0].contiguous()):
        with torch.no_grad():
            _same(ours(inp), torch.relu(ref(inp)), torch.float32)


def test_channel_of_equal_huge_values_has_variance_zero(launches):
    """Equal values of 1e30 in a channel: the variance is exactly 0 and the output beta (the exact
    values are the reference: torch's own output there is its mean's rounding residue times invstd)."""
    x = torch.randn(40, 3)
    x[:, 0] = 1e30
    ours = bnlab.nn.BatchNorm1d(3)
    with torch.no_grad():
        ours.bias.fill_(0.5)
    y = ours(x)
    assert torch.equal(y[:, 0], torch.full((40,), 0.5))
    assert ours.running_var[0] == 0.9  # (1 - momentum) * 1 + momentum * 0
