"""The fast kernels against torch's native batch norm and against bnlab's pure-torch reference.

Reference: torch.nn.functional.batch_norm with autograd (an independent implementation), and the
float64 mean/variance of the input. Tolerances: float32 outputs and input gradients within
1e-4 relative / 1e-5 absolute of torch (values are O(1)); parameter gradients are sums over m
values, compared relative to their size; float64 within 1e-10.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as tnf

from bnlab import functional as F
from bnlab import nn as bnn
from bnlab.core import dispatch
from bnlab.core.backends import numba_cpu as numba_backend

TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}
# (N, C, *): 2D, 3D, 4D, 5D; N=1 with spatial > 1; a single channel; spatial size 1; planes long
# enough for the kernels' planes family (>= 64 values) and short ones, which run as rows; rows wider
# than ROW_BLOCK / ROW_MIN values, whose sums run in blocks of whole channels' columns (the last short).
SHAPES = [
    (3, 100, 49),
    (33, 2200),
    (7, 6),
    (5, 6, 9),
    (3, 6, 5, 4),
    (1, 6, 3, 5),
    (2, 6, 3, 4, 5),
    (4, 1, 5, 5),
    (9, 6, 1, 1),
    (3, 6, 70),
    (2, 6, 9, 9),
    (1, 6, 3, 5, 5),
]
FAST = dispatch.FAST_BACKENDS["cpu"]
ALL = (True, True, True)


def fast_forward(x, w, b, eps=1e-5, running=None):
    return FAST.forward(x, w, b, eps, "identity", 0.0, running)


def fast_backward(dy, x, w, b, mean, var, needs=ALL, eps=1e-5):
    with torch.no_grad():
        return FAST.backward(dy, x, w, b, mean, var, eps, "identity", 0.0, needs)


def to_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "contiguous" or x.dim() == 2:
        return x.contiguous()
    # channels last for any rank: C innermost in memory, same logical shape
    return x.movedim(1, -1).contiguous().movedim(-1, 1)


def make(shape, dtype=torch.float32, layout="contiguous", seed=0, offset=0.0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 0.5 + offset).to(dtype)
    C = shape[1]
    w = (torch.rand(C, generator=gen, dtype=torch.float64) + 0.5).to(dtype)
    b = torch.randn(C, generator=gen, dtype=torch.float64).to(dtype)
    dy = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    return to_layout(x, layout), w, b, to_layout(dy, layout)


def torch_train(x, w, b, dy, eps=1e-5):
    """y and the gradients from torch's own batch norm, via autograd."""
    xr = x.detach().clone().requires_grad_()
    params = [p.detach().clone().requires_grad_() if p is not None else None for p in (w, b)]
    y = tnf.batch_norm(xr, None, None, params[0], params[1], training=True, eps=eps)
    grads = torch.autograd.grad(y, [xr] + [p for p in params if p is not None], dy)
    return y, grads


def assert_close(actual, expected, dtype):
    torch.testing.assert_close(actual, expected, **TOL[dtype])


def assert_sums_close(actual, expected, dtype):
    # dweight/dbias are sums over m values: compare relative to their scale
    scale = expected.abs().max().clamp_min(1.0)
    assert_close(actual / scale, expected / scale, dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_fast_training_forward_and_backward_match_torch(shape, layout):
    x, w, b, dy = make(shape, layout=layout)
    assert dispatch.select(x, w, b) is FAST
    y, mean, var = fast_forward(x, w, b)
    y_ref, (dx_ref, dw_ref, db_ref) = torch_train(x, w, b, dy)
    assert_close(y, y_ref, torch.float32)
    assert y.stride() == x.stride()  # memory format preserved
    x64 = x.double()
    dims = F.reduce_dims(x)
    assert_close(mean.double(), x64.mean(dims), torch.float32)
    assert_close(var.double(), x64.var(dims, unbiased=False), torch.float32)
    dx, dw, db = fast_backward(dy, x, w, b, mean, var)
    assert_close(dx, dx_ref, torch.float32)
    assert_sums_close(dw, dw_ref, torch.float32)
    assert_sums_close(db, db_ref, torch.float32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_each_fast_primitive_matches_the_reference_primitive(shape, layout):
    """stats, normalize, backward_reduce, backward_elemt and eval: the numba backend against the
    reference backend, with the statistics of the first fed to both (float64: only summation order
    differs)."""
    x, w, b, dy = make(shape, dtype=torch.float64, layout=layout, seed=2)
    ref = dispatch.REFERENCE
    mean, var = FAST.stats(x)
    for a, r in zip((mean, var), ref.stats(x)):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        FAST.normalize(x, mean, var, w, b, 1e-5, "identity", 0.0),
        ref.normalize(x, mean, var, w, b, 1e-5, "identity", 0.0),
        rtol=1e-12,
        atol=1e-12,
    )
    sums = FAST.backward_reduce(dy, x, w, b, mean, var, 1e-5, "identity", 0.0)
    for a, r in zip(sums, ref.backward_reduce(dy, x, w, b, mean, var, 1e-5, "identity", 0.0)):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)
    m = F.count_per_channel(x)
    means = (sums[0] / m, sums[1] / m)
    torch.testing.assert_close(
        FAST.backward_elemt(dy, x, w, b, mean, var, 1e-5, "identity", 0.0, *means),
        ref.backward_elemt(dy, x, w, b, mean, var, 1e-5, "identity", 0.0, *means),
        rtol=1e-10,
        atol=1e-10,
    )
    rm, rv = mean + 0.5, var * 2
    y_eval = FAST.eval(x, rm, rv, w, b, 1e-5, "identity", 0.0)
    torch.testing.assert_close(y_eval, ref.eval(x, rm, rv, w, b, 1e-5, "identity", 0.0), rtol=1e-12, atol=1e-12)
    assert y_eval.stride() == x.stride()


@pytest.mark.parametrize("shape", [(3, 6, 5, 4), (7, 6), (2, 6, 3, 4, 5), (2, 6, 9, 9)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_fast_path_agrees_with_reference_path(shape, layout):
    x, w, b, dy = make(shape, layout=layout, seed=1)
    outs = {}
    before = dispatch.fast_enabled()
    for fast in (True, False):
        dispatch.set_fast(fast)
        try:
            xr = x.clone().requires_grad_()
            m = (
                bnn.BatchNorm1d(shape[1])
                if len(shape) < 4
                else (bnn.BatchNorm2d(shape[1]) if len(shape) == 4 else bnn.BatchNorm3d(shape[1]))
            )
            with torch.no_grad():
                m.weight.copy_(w)
                m.bias.copy_(b)
            y = m(xr)
            y.backward(dy)
            m.eval()
            with torch.no_grad():
                y_eval = m(x)
            outs[fast] = (y, xr.grad, m.weight.grad, m.bias.grad, m.running_mean, m.running_var, y_eval)
        finally:
            dispatch.set_fast(before)  # the process's setting, not always True (BNLAB_FAST=0 runs)
    for a, r in zip(outs[True], outs[False]):
        assert_sums_close(a, r, torch.float32)


@pytest.mark.parametrize("shape", [(8, 4, 32, 32), (64, 4, 5, 5)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_fast_statistics_survive_a_large_offset(shape, layout):
    # 1e4 + N(0, 1) in float32: E[x^2] - E[x]^2 would lose every digit of the variance.
    x, w, b, _ = make(shape, layout=layout, offset=1e4)
    assert dispatch.select(x, w, b) is FAST
    y, mean, var = fast_forward(x, w, b)
    x64 = x.double()
    true_var = x64.var((0, 2, 3), unbiased=False)
    torch.testing.assert_close(var.double(), true_var, rtol=1e-4, atol=0)
    torch.testing.assert_close(mean.double(), x64.mean((0, 2, 3)), rtol=1e-7, atol=0)
    y64 = (x64 - x64.mean((0, 2, 3), keepdim=True)) / torch.sqrt(true_var.view(1, -1, 1, 1) + 1e-5)
    y64 = y64 * w.double().view(1, -1, 1, 1) + b.double().view(1, -1, 1, 1)
    torch.testing.assert_close(y.double(), y64, rtol=0, atol=2e-3)


@pytest.mark.parametrize(
    "shape, layout",
    [
        ((6, 5, 7, 9), "contiguous"),
        ((6, 5, 7, 9), "channels_last"),
        ((64, 5, 4, 4), "contiguous"),
        ((20, 100, 7, 7), "contiguous"),  # rows in blocks of columns
    ],
)
def test_parallel_kernels_match_torch(shape, layout, monkeypatch):
    # Force the multi-threaded drivers on a small input (normally only large inputs use them).
    monkeypatch.setattr(numba_backend, "PARALLEL_MIN_NUMEL", 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x, w, b, dy = make(shape, layout=layout, seed=3)
        assert numba_backend.parallel(x)
        y, mean, var = fast_forward(x, w, b)
        y_ref, (dx_ref, dw_ref, db_ref) = torch_train(x, w, b, dy)
        dx, dw, db = fast_backward(dy, x, w, b, mean, var)
        assert_close(y, y_ref, torch.float32)
        assert_close(dx, dx_ref, torch.float32)
        assert_sums_close(dw, dw_ref, torch.float32)
        assert_sums_close(db, db_ref, torch.float32)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("shape", [(4, 6, 5, 5), (4, 6, 9, 9)])
def test_layer_on_fast_path_matches_torch_layer(affine, momentum, shape):
    x, _, _, dy = make(shape, seed=4)
    ours = bnn.BatchNorm2d(6, affine=affine, momentum=momentum)
    ref = torch.nn.BatchNorm2d(6, affine=affine, momentum=momentum)
    for step in range(3):
        xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
        yo, yr = ours(xo), ref(xr)
        yo.backward(dy)
        yr.backward(dy)
        assert_close(yo, yr, torch.float32)
        assert_close(xo.grad, xr.grad, torch.float32)
        x = x * 1.5 + 0.25
    assert_close(ours.running_mean, ref.running_mean, torch.float32)
    assert_close(ours.running_var, ref.running_var, torch.float32)
    if affine:
        assert_sums_close(ours.weight.grad, ref.weight.grad, torch.float32)
        assert_sums_close(ours.bias.grad, ref.bias.grad, torch.float32)
    ours.eval()
    ref.eval()
    with torch.no_grad():
        assert_close(ours(x), ref(x), torch.float32)


def test_float64_fast_path_matches_torch():
    x, w, b, dy = make((3, 4, 5, 6), dtype=torch.float64, seed=5)
    assert dispatch.why_reference(x, w, b) is None
    y, mean, var = fast_forward(x, w, b)
    y_ref, (dx_ref, dw_ref, db_ref) = torch_train(x, w, b, dy)
    dx, dw, db = fast_backward(dy, x, w, b, mean, var)
    assert_close(y, y_ref, torch.float64)
    assert_close(dx, dx_ref, torch.float64)
    assert_close(dw, dw_ref, torch.float64)
    assert_close(db, db_ref, torch.float64)


def test_backward_accepts_expanded_and_other_layout_gradients():
    x, w, b, _ = make((4, 3, 5, 5), layout="channels_last", seed=6)
    xo = x.clone().requires_grad_()
    xr = x.clone().requires_grad_()
    # .sum() hands the backward an expanded (stride 0) gradient
    (bnn.BatchNorm2d(3)(xo) * 2).sum().backward()
    (torch.nn.BatchNorm2d(3)(xr) * 2).sum().backward()
    torch.testing.assert_close(xo.grad, xr.grad, rtol=1e-4, atol=1e-5)
    dy = torch.randn(4, 3, 5, 5)  # NCHW gradient for a channels_last input
    y, mean, var = fast_forward(x, w, b)
    _, (dx_ref, _, _) = torch_train(x, w, b, dy)
    dx, _, _ = fast_backward(dy, x, w, b, mean, var, (True, False, False))
    assert_close(dx, dx_ref, torch.float32)


def test_backward_computes_only_what_is_needed():
    x, w, b, dy = make((4, 3, 5, 5), seed=7)
    y, mean, var = fast_forward(x, w, b)
    dx, dw, db = fast_backward(dy, x, w, b, mean, var, (False, True, False))
    assert dx is None and db is None
    _, (_, dw_ref, _) = torch_train(x, w, b, dy)
    assert_sums_close(dw, dw_ref, torch.float32)


@pytest.mark.parametrize("make_odd", [lambda x: x[:, :, ::2], lambda x: x.transpose(2, 3)])
def test_odd_strides_take_the_reference_and_match_torch(make_odd):
    base, _, _, _ = make((4, 3, 6, 5), seed=8)
    x = make_odd(base)
    assert "strides" in dispatch.why_reference(x)
    xo = make_odd(base.clone()).requires_grad_()  # odd strides on a leaf
    xr = make_odd(base.clone()).requires_grad_()
    yo, yr = bnn.BatchNorm2d(3)(xo), torch.nn.BatchNorm2d(3)(xr)
    g = torch.randn_like(yr)
    yo.backward(g)
    yr.backward(g)
    assert_close(yo, yr, torch.float32)
    assert_close(xo.grad, xr.grad, torch.float32)


def test_empty_batch_falls_back_and_leaves_running_stats():
    x = torch.randn(0, 3, 4, 4)
    assert dispatch.why_reference(x) == "empty input"
    m = bnn.BatchNorm2d(3)
    y = m(x)
    assert y.shape == x.shape
    torch.testing.assert_close(m.running_mean, torch.zeros(3))
    torch.testing.assert_close(m.running_var, torch.ones(3))


def test_double_backward_through_the_fast_forward():
    x, w, b, _ = make((3, 2, 3, 2), dtype=torch.float64, seed=9)
    inputs = (x.requires_grad_(), w.requires_grad_(), b.requires_grad_())
    assert dispatch.why_reference(x, w, b) is None

    def f(x, w, b):
        return F.batch_norm(x, None, None, w, b, training=True)

    assert torch.autograd.gradgradcheck(f, inputs)


def test_torch_func_transforms_take_the_reference_and_match_torch():
    x, w, b, dy = make((4, 3, 5), seed=10)

    def ours(x):
        return (F.batch_norm(x, None, None, w, b, training=True) * dy).sum()

    def theirs(x):
        return (tnf.batch_norm(x, None, None, w, b, training=True) * dy).sum()

    assert_close(torch.func.grad(ours)(x), torch.func.grad(theirs)(x), torch.float32)
    rm, rv = torch.randn(3), torch.rand(3) + 0.5
    xs = torch.randn(2, 4, 3, 5)
    batched = torch.func.vmap(lambda x: F.batch_norm(x, rm, rv, w, b, training=False))(xs)
    assert_close(batched, tnf.batch_norm(xs.flatten(0, 1), rm, rv, w, b, training=False).view_as(xs), torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("training", [False, True])
def test_torch_compile_fullgraph_works(training):
    x, w, b, _ = make((4, 3, 5, 5), seed=11)
    m = bnn.BatchNorm2d(3).train(training)
    ref = torch.nn.BatchNorm2d(3).train(training)
    compiled = torch.compile(m, fullgraph=not training)
    with torch.no_grad():
        assert_close(compiled(x), ref(x), torch.float32)


@pytest.mark.parametrize("shape", [(5, 6, 9), (3, 6, 5, 4), (2, 6, 3, 4, 5), (2, 6, 70), (7, 6)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_fast_eval_matches_torch_and_reference(shape, layout):
    x, w, b, _ = make(shape, seed=5, layout=layout)
    rm = torch.randn(shape[1]) * 0.3
    rv = torch.rand(shape[1]) + 0.5
    with torch.no_grad():
        assert dispatch.select_eval(x, rm, rv, w, b) is FAST  # inference: the kernel runs
        fast = F.batch_norm(x, rm, rv, w, b, training=False, eps=1e-5)
        expected = tnf.batch_norm(x, rm, rv, w, b, training=False, eps=1e-5)
        with dispatch.reference_only():
            reference = F.batch_norm(x, rm, rv, w, b, training=False, eps=1e-5)
    assert_close(fast, expected, torch.float32)
    assert_close(reference, expected, torch.float32)
    assert fast.stride() == expected.stride()  # torch's output layout (a transposed (N, L, C) gives contiguous)


def test_eval_with_a_graph_to_record_runs_the_kernel_and_differentiates_the_reference():
    x, w, b, dy = make((4, 3, 5, 5), seed=6)
    rm, rv = torch.zeros(3), torch.ones(3)
    xr = x.clone().requires_grad_()
    assert dispatch.select_eval(xr, rm, rv, w, b) is FAST
    (gx,) = torch.autograd.grad(F.batch_norm(xr, rm, rv, w, b, training=False), xr, dy)
    xt = x.clone().requires_grad_()
    (gt,) = torch.autograd.grad(tnf.batch_norm(xt, rm, rv, w, b, training=False), xt, dy)
    assert_close(gx, gt, torch.float32)


@pytest.mark.parametrize("momentum", [0.1, 0.7, 1.0, torch.tensor(0.25)])
def test_fast_running_stat_update_matches_reference_and_bumps_versions(momentum):
    gen = torch.Generator().manual_seed(7)
    mean, var = torch.randn(6, generator=gen), torch.rand(6, generator=gen) + 0.1
    start = (torch.randn(6, generator=gen), torch.rand(6, generator=gen) + 0.5)
    fast = [t.clone() for t in start]
    versions = [t._version for t in fast]
    FAST.update_running_stats(*fast, mean, var, 40, momentum)
    assert all(t._version > v for t, v in zip(fast, versions))  # autograd sees the in-place write
    ref = [t.clone() for t in start]
    dispatch.REFERENCE.update_running_stats(*ref, mean, var, 40, momentum)
    w = float(momentum)
    expected_var = (1 - w) * start[1] + w * var * 40 / 39
    for a, r in zip(fast, ref):
        torch.testing.assert_close(a, r, rtol=2e-7, atol=1e-7)
    torch.testing.assert_close(fast[1], expected_var, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(6, 5, 4), (6, 5, 9, 9)])
def test_forward_updates_the_running_stats_in_its_own_kernel_call(shape, monkeypatch):
    from bnlab.core.backends import Running
    from bnlab.kernels import numba_cpu

    x, w, b, _ = make(shape, seed=12)
    calls = []
    real = numba_cpu.update_running_stats
    monkeypatch.setattr(numba_cpu, "update_running_stats", lambda *a: calls.append(1) or real(*a))
    rm, rv = torch.randn(5), torch.rand(5) + 0.5
    rm_ref, rv_ref = rm.clone(), rv.clone()
    count = F.count_per_channel(x)
    y, mean, var = fast_forward(x, w, b, running=Running(rm, rv, count, 0.3))
    F.update_running_stats(rm_ref, rv_ref, mean, var, count, 0.3)
    assert calls == []  # no separate update call
    torch.testing.assert_close(rm, rm_ref, rtol=2e-7, atol=1e-7)
    torch.testing.assert_close(rv, rv_ref, rtol=2e-7, atol=1e-7)


# Half-type cases: a short-plane shape (the rows family, serial), planes of 80 values (the planes family,
# serial) and 100K elements (parallel on two or more threads); plain BN and BN+SiLU; the layer's
# parameters in the input's dtype or in float32 (a float32 model fed bfloat16 activations, as under CPU
# autocast: torch's mixed precision). Each family, mode and activation compiles its own bfloat16 kernels
# (5-10 s each in a fresh process), so the default suite takes both families serial, plain BN.
_SLOW = pytest.mark.slow
HALF_CASES = [
    ((6, 5, 7, 4), "contiguous"),  # rows (short planes), serial
    ((6, 5, 7, 4), "channels_last"),  # rows, serial
    ((2, 3, 8, 10), "contiguous"),  # planes, serial
    pytest.param((4, 4, 80, 80), "contiguous", marks=_SLOW),  # planes, parallel
    pytest.param((4, 4, 80, 80), "channels_last", marks=_SLOW),  # rows, parallel
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape, layout", HALF_CASES)
@pytest.mark.parametrize("act", ["identity", pytest.param("silu", marks=_SLOW)])
@pytest.mark.parametrize("params", ["same", "float32"])
def test_half_types_on_the_fast_path_equal_the_reference(dtype, layout, shape, act, params):
    # Both compute in float32 from the same values (bfloat16 widened in the kernels, float16 copied)
    # and round once: the same values up to float32 rounding inside, so at most one half-type ulp apart.
    x, w, b, dy = make(shape, dtype=torch.float32, layout=layout, seed=9)
    pdtype = dtype if params == "same" else torch.float32
    x, w, b, dy = x.to(dtype), w.to(pdtype), b.to(pdtype), dy.to(dtype)
    C = shape[1]

    def run():
        m = bnn.BatchNorm2d(C, dtype=pdtype) if act == "identity" else bnn.BatchNormAct2d(C, act=act, dtype=pdtype)
        with torch.no_grad():
            m.weight.copy_(w)
            m.bias.copy_(b)
        xr = x.clone().requires_grad_()
        y = m(xr)
        grads = torch.autograd.grad(y, (xr, m.weight, m.bias), dy)
        m.eval()
        with torch.no_grad():
            return y, *grads, m.running_mean, m.running_var, m(x)

    fast = run()
    with dispatch.reference_only():
        ref = run()
    assert dispatch.why_reference(x, w, b) is None
    assert [t.dtype for t in fast] == [t.dtype for t in ref] == [dtype, dtype, pdtype, pdtype, pdtype, pdtype, dtype]
    assert fast[0].is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    for a, r in zip(fast, ref):
        # In the input's ulps also for a float32 layer's gradients: the reference rounds BN's output to
        # the half type before the activation, the fused kernel does not.
        scale = r.abs().max().float().clamp_min(1.0)
        assert ((a.float() - r.float()).abs() / scale).max() <= 2 * torch.finfo(dtype).eps
