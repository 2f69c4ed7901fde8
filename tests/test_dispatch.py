"""Which calls take the fast kernels and which the pure-torch reference (bnlab.core.dispatch)."""

from __future__ import annotations

import numba
import pytest
import torch

from bnlab import functional as F
from bnlab import nn as bnn
from bnlab.core import dispatch
from bnlab.core.backends import numba_cpu as numba_backend
from bnlab.kernels import numba_cpu


def test_plain_cpu_float_tensors_take_the_fast_path():
    x = torch.randn(2, 3, 4, 4)
    w, b = torch.ones(3), torch.zeros(3)
    assert dispatch.why_reference(x, w, b) is None
    assert dispatch.why_reference(x.double(), w.double(), None) is None


@pytest.mark.parametrize(
    "x, expected",
    [
        (torch.randn(2, 3, 4, 4), "ncs"),
        (torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last), "rc"),
        (torch.randn(2, 3, 4, 4, 4).contiguous(memory_format=torch.channels_last_3d), "rc"),
        (torch.randn(2, 5, 3).transpose(1, 2), "rc"),  # (N, C, L) with channels innermost
        (torch.randn(2, 3, 7), "ncs"),
        (torch.randn(8, 3), "rc"),
        (torch.randn(8, 3, 1, 1), "rc"),  # spatial size 1: rows of C
        (torch.randn(2, 3, 4, 6)[..., ::2], None),
        (torch.randn(2, 3, 4, 5).transpose(2, 3), None),
        (torch.randn(3, 8).t(), None),
    ],
)
def test_layout_classifies_memory_formats(x, expected):
    assert dispatch.layout(x) == expected


@pytest.mark.parametrize(
    "args, reason",
    [
        ((torch.randn(2, 3, 4).to(torch.complex64),), "dtype"),
        ((torch.randn(2, 3, 4).bfloat16(), torch.ones(3, dtype=torch.float16)), "mixed dtypes"),
        ((torch.randn(2, 3, 4), torch.ones(3, dtype=torch.bfloat16)), "mixed dtypes"),
        ((torch.randn(2, 3, 4).double(), torch.ones(3)), "mixed dtypes"),
        ((torch.randn(0, 3, 4),), "empty input"),
        ((torch.randn(2, 3, 8)[..., ::2],), "strides"),
        ((torch.randn(2, 3, 4), torch.ones(6)[::2]), "non-contiguous"),
        ((torch.randn(2, 3, 4).to_sparse(),), "layout"),
    ],
)
def test_what_the_fast_path_does_not_cover_takes_the_reference(args, reason):
    assert reason in dispatch.why_reference(*args)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_types_run_the_float32_kernels_with_float32_statistics(dtype):
    x, w = torch.randn(2, 3, 4).to(dtype), torch.ones(3, dtype=dtype)
    assert dispatch.why_reference(x, w, w) is None
    stats32 = (torch.zeros(3), torch.ones(3))
    assert dispatch.why_reference(x, w, w, grad=torch.randn(2, 3, 4), stats=stats32) is None
    assert "mixed dtypes" in dispatch.why_reference(x, w, w, stats=(torch.zeros(3, dtype=dtype),))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_float32_vectors_with_a_half_type_input_run_fast(dtype):
    # torch's mixed precision (a float32 model fed half-type activations, as under autocast): the fast
    # backends compute half types in float32 and take float32 vectors as they are.
    x, w32 = torch.randn(2, 3, 4).to(dtype), torch.ones(3)
    assert dispatch.why_reference(x, w32, w32, torch.zeros(3), torch.ones(3)) is None
    assert dispatch.select(x, w32, w32, torch.zeros(3), torch.ones(3)) is dispatch.FAST_BACKENDS["cpu"]
    assert dispatch.select_eval(x, torch.zeros(3), torch.ones(3), w32, w32) is dispatch.FAST_BACKENDS["cpu"]
    assert "mixed dtypes" in dispatch.why_reference(x, w32.double())  # float32 only, not any wider dtype


def test_tensor_subclasses_take_the_reference():
    class Tagged(torch.Tensor):
        pass

    x = torch.randn(2, 3, 4).as_subclass(Tagged)
    assert "not a plain tensor" in dispatch.why_reference(x)


def test_gradient_of_another_shape_takes_the_reference():
    x = torch.randn(2, 3, 4)
    assert "gradient of shape" in dispatch.why_reference(x, grad=torch.randn(2, 3, 5))


def test_reference_only_disables_and_restores():
    x = torch.randn(2, 3, 4)
    with dispatch.reference_only():
        assert dispatch.why_reference(x) == "fast path disabled"
        assert dispatch.select(x) is dispatch.REFERENCE
    assert dispatch.why_reference(x) is None
    assert dispatch.select(x) is dispatch.FAST_BACKENDS["cpu"]


def test_tracing_takes_the_reference(monkeypatch):
    x = torch.randn(4, 3, 5)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert "traced" in dispatch.why_reference(x)
    assert dispatch.select(x) is dispatch.TRACED and dispatch.select_eval(x) is dispatch.TRACED
    y = F.batch_norm(x, None, None, training=True)  # still works, on the reference
    torch.testing.assert_close(y, torch.nn.functional.batch_norm(x, None, None, training=True), rtol=1e-4, atol=1e-5)


def test_torch_func_transforms_take_the_reference():
    seen = []

    def f(x):
        seen.append(dispatch.why_reference(x))
        return x.sum()

    torch.func.vmap(f)(torch.randn(2, 3, 4))
    assert "traced" in seen[0]


def test_backward_with_grad_mode_on_takes_the_reference():
    x = torch.randn(4, 3, 5)
    fast = dispatch.select(x)
    with torch.enable_grad():
        assert dispatch.select_backward(fast, torch.ones_like(x), x) is dispatch.REFERENCE
    with torch.no_grad():
        assert dispatch.select_backward(fast, torch.ones_like(x), x) is fast
        assert dispatch.select_backward(fast, torch.ones(4, 3, 6), x) is dispatch.REFERENCE  # other shape
        assert dispatch.select_backward(dispatch.REFERENCE, torch.ones_like(x), x) is dispatch.REFERENCE


def test_eval_that_records_a_graph_takes_the_fast_backend_too():
    """Grad mode does not change an eval call's backend (ops.evaluate makes the output differentiable),
    so the output has the same bits either way."""
    x, rm, rv = torch.randn(4, 3, 5), torch.zeros(3), torch.ones(3)
    w = torch.ones(3, requires_grad=True)
    assert dispatch.select_eval(x, rm, rv, w, None) is dispatch.FAST_BACKENDS["cpu"]
    with torch.no_grad():
        assert dispatch.select_eval(x, rm, rv, w, None) is dispatch.FAST_BACKENDS["cpu"]


def test_every_answer_is_a_backend_with_every_primitive():
    """One convention: the dispatch always answers with a backend, and every backend implements
    every primitive of the interface."""
    from bnlab.core.backends import Backend

    primitives = [n for n in vars(Backend) if not n.startswith("_") and callable(getattr(Backend, n))]
    assert set(primitives) == {
        "forward",
        "stats",
        "normalize",
        "backward",
        "backward_reduce",
        "backward_elemt",
        "eval",
        "update_running_stats",
    }
    for backend in (dispatch.REFERENCE, dispatch.TRACED, *dispatch.FAST_BACKENDS.values()):
        for name in primitives:
            assert getattr(type(backend), name) is not getattr(Backend, name), f"{backend} lacks {name}"
    odd = torch.randn(2, 3, 8)[..., ::2]
    for x in (odd, torch.randn(2, 3, 4), torch.randn(0, 3)):
        assert isinstance(dispatch.select(x), Backend) and isinstance(dispatch.select_eval(x), Backend)


def counting(monkeypatch, name):
    calls = []
    real = getattr(numba_cpu, name)

    def spy(*args):
        calls.append(name)
        return real(*args)

    monkeypatch.setattr(numba_cpu, name, spy)
    return calls


@pytest.mark.parametrize(
    "shape, channels_last, family",
    [
        ((4, 3, 9, 9), False, "planes"),  # planes of 81 values
        ((4, 3, 5, 5), False, "rows"),  # planes of 25: rows of C*S values
        ((4, 3, 9, 9), True, "rows"),
        ((16, 3), False, "rows"),
        ((1, 3, 60), False, "planes"),  # a batch of one: planes at any length (a grouped MLP's (1, k*W, N))
        ((1, 3, 1, 5), False, "planes"),
    ],
)
def test_layers_run_the_kernel_for_their_layout(monkeypatch, shape, channels_last, family):
    x = torch.randn(shape) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    fwd = counting(monkeypatch, f"forward_{family}")
    bwd = counting(monkeypatch, f"backward_{family}")
    m = bnn.BatchNorm2d(3) if len(shape) == 4 else bnn.BatchNorm1d(3)
    dy = torch.randn(shape)
    y = m(x)
    y.backward(dy)
    assert (len(fwd), len(bwd)) == (1, 1)
    # and the family computes what torch's batch norm does
    ref = torch.nn.BatchNorm2d(3) if len(shape) == 4 else torch.nn.BatchNorm1d(3)
    xr = x.detach().clone().requires_grad_()
    y_ref = ref(xr)
    y_ref.backward(dy)
    torch.testing.assert_close(y.detach(), y_ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-4, atol=1e-5)


def test_kernels_follow_torch_thread_count():
    fast = dispatch.FAST_BACKENDS["cpu"]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        fast.forward(torch.randn(4, 3, 5), None, None, 1e-5, "identity", 0.0, None)
        assert numba.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    fast.forward(torch.randn(4, 3, 5), None, None, 1e-5, "identity", 0.0, None)
    assert numba.get_num_threads() == min(before, numba.config.NUMBA_NUM_THREADS)


def test_large_inputs_run_in_parallel_small_ones_serially():
    small = torch.empty(numba_backend.PARALLEL_MIN_NUMEL - 1)
    large = torch.empty(numba_backend.PARALLEL_MIN_NUMEL)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert not numba_backend.parallel(small) and numba_backend.parallel(large)
        torch.set_num_threads(1)
        assert not numba_backend.parallel(large)
    finally:
        torch.set_num_threads(before)
