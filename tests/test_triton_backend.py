"""The Triton backend under Triton's interpreter (CPU tensors, ``BNLAB_BACKEND=triton``): parity with
torch.nn, determinism, the custom operators under torch.compile / torch.export, the one-line error
without triton. Skipped without triton (``pip install 'bnlab[gpu]'``).

Reference: torch.nn's layers (or torch's BN followed by the activation) with autograd, compared
with tests/reference.py's rule (torch's tolerance, or no less accurate than torch against the
float64 answer). Shapes are small -- the interpreter runs each program in numpy -- but large enough
that every reduction is split into several chunks (checked), so the merge is exercised.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as tnf

# Triton reads TRITON_INTERPRET as it decorates kernels, its own library's included: set before
# triton is imported (by this module, first), it makes every kernel run on CPU tensors.
os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton", reason="needs triton (pip install 'bnlab[gpu]')")

import bnlab
from bnlab.core import dispatch
from bnlab.core.backends import triton_gpu
from reference import assert_matches
from test_parity import _exact

pytestmark = pytest.mark.skipif(
    not triton_gpu._interpreted(),
    reason="triton was imported before TRITON_INTERPRET=1 was set (run this file in its own process)",
)

LAYERS = {
    2: (bnlab.nn.BatchNorm1d, torch.nn.BatchNorm1d),
    3: (bnlab.nn.BatchNorm1d, torch.nn.BatchNorm1d),
    4: (bnlab.nn.BatchNorm2d, torch.nn.BatchNorm2d),
    5: (bnlab.nn.BatchNorm3d, torch.nn.BatchNorm3d),
}
# (N, C): rows; (N, C, L) planes of 40; 2d planes of 30 and 3d planes of 36 (or channels_last rows)
SHAPES = [(96, 5), (6, 3, 40), (5, 4, 5, 6), (3, 3, 3, 3, 4)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(autouse=True)
def triton_backend():
    dispatch.set_backend("triton")
    try:
        yield
    finally:
        dispatch.set_backend(None)


@pytest.fixture(params=["split", "single"])
def launches(request, monkeypatch):
    """Both geometries: the reduction split over programs (several launches), and small inputs'
    one launch per direction (every test shape is small enough for it by default)."""
    monkeypatch.setattr(triton_gpu, "SINGLE_MAX_NUMEL", 0 if request.param == "split" else 1 << 18)
    return request.param


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(1, -1).contiguous().movedim(-1, 1)


def test_blocks_split_the_reduction_of_every_test_shape(monkeypatch):
    monkeypatch.setattr(triton_gpu, "SINGLE_MAX_NUMEL", 0)
    for shape in SHAPES:
        for cl in (False, True):
            x = torch.empty(shape)
            x = channels_last(x) if cl and len(shape) > 2 else x
            assert triton_gpu._geometry(x)[-1].chunks > 1, (shape, cl)


# The layers' dtype: the input's, or float32 fed half types (torch's mixed precision, as under autocast);
# the latter on the 2d shape in the default suite, on every shape with -m slow.
PARAMS = {"own": None, "float32": torch.float32}
CASES = [pytest.param(shape, "own", id="x".join(map(str, shape))) for shape in SHAPES] + [
    pytest.param(
        shape, "float32", id="x".join(map(str, shape)) + "-float32", marks=() if len(shape) == 4 else pytest.mark.slow
    )
    for shape in SHAPES
]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, params", CASES)
def test_matches_torch_nn_over_training_then_eval(shape, dtype, layout, params, launches):
    if layout == "channels_last" and len(shape) < 4:
        pytest.skip("channels_last needs 4 or 5 dims")
    if params == "float32" and dtype == torch.float32:
        pytest.skip("a float32 input has float32 layers either way")
    pdtype = PARAMS[params] or dtype
    ours_cls, ref_cls = LAYERS[len(shape)]
    ours = ours_cls(shape[1], momentum=0.3, dtype=pdtype)
    ref = ref_cls(shape[1], momentum=0.3, dtype=pdtype)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name in ("weight", "bias"):
            v = torch.randn(shape[1], generator=gen, dtype=torch.float64).to(pdtype)
            getattr(ours, name).copy_(v)
            getattr(ref, name).copy_(v)
    for step in range(4):
        training = step < 3
        ours.train(training)
        ref.train(training)
        x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 3 + 2).to(dtype)
        if layout == "channels_last":
            x = channels_last(x)
        assert dispatch.select(x, ours.weight.detach(), ours.bias.detach()) is dispatch.TRITON
        xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
        yo, yr = ours(xo), ref(xr)
        assert yo.stride() == yr.stride()
        dy = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
        exact = _exact(ref, x, dy)
        assert_matches(yo, yr, "output", exact["output"])
        yo.backward(dy)
        yr.backward(dy)
        assert_matches(xo.grad, xr.grad, "input gradient", exact["input"])
        for name in ("weight", "bias"):
            assert getattr(ours, name).grad.dtype == pdtype
            assert_matches(getattr(ours, name).grad, getattr(ref, name).grad, f"{name} gradient", exact[name])
            getattr(ours, name).grad = getattr(ref, name).grad = None
        assert_matches(ours.running_mean, ref.running_mean, "running_mean")
        assert_matches(ours.running_var, ref.running_var, "running_var")
        assert ours.running_mean.dtype == ours.running_var.dtype == pdtype


def test_eval_without_grad_runs_on_triton_and_matches_torch():
    ours, ref = bnlab.nn.BatchNorm2d(4).eval(), torch.nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        for m in (ours, ref):
            m.running_mean.copy_(torch.arange(4.0))
            m.running_var.copy_(torch.arange(1.0, 5.0))
            m.weight.copy_(torch.tensor([0.5, 1.5, -1.0, 2.0]))
    x = torch.randn(3, 4, 5, 6)
    with torch.no_grad():
        assert dispatch.select_eval(x, ours.running_mean, ours.running_var, ours.weight, ours.bias) is dispatch.TRITON
        assert_matches(ours(x), ref(x), "eval output")


def test_momentum_none_reads_the_cumulative_average_from_a_tensor(launches):
    ours, ref = bnlab.nn.BatchNorm1d(5, momentum=None), torch.nn.BatchNorm1d(5, momentum=None)
    for seed in range(3):
        x = torch.randn(64, 5, generator=torch.Generator().manual_seed(seed)) * 2 + 1
        ours(x)
        ref(x)
    assert_matches(ours.running_mean, ref.running_mean, "running_mean")
    assert_matches(ours.running_var, ref.running_var, "running_var")


def test_float64_stays_on_the_reference():
    x = torch.randn(8, 3, dtype=torch.float64)
    assert dispatch.select(x) is dispatch.REFERENCE


def test_large_offset_loses_no_precision(launches):
    """1e4 + N(0, 1) in float32 keeps its variance (E[x^2] - E[x]^2 would lose it to cancellation)
    and its mean to within 2e-3 (2 float32 ulps at 1e4; torch's float32 var_mean: 0.0005): the
    moments are taken of x minus each channel's first value and merged in float64."""
    x = torch.randn(40, 3, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(7)) + 1e4
    mean, var = dispatch.TRITON.stats(x.float())
    torch.testing.assert_close(mean.double(), x.mean((0, 2)), rtol=0, atol=2e-3)
    torch.testing.assert_close(var.double(), x.var((0, 2), unbiased=False), rtol=2e-3, atol=0)


@pytest.mark.parametrize("shape", [(40, 3, 50), (8, 3, 20, 30), (3000, 5)], ids=str)
def test_statistics_at_a_large_offset_are_rounded_once(shape, launches):
    """1e4 + N(0, 1) in float32 (planes, channels_last rows, (N, C) rows): the mean is the float64
    mean of the float32 values rounded once (within half a float32 ulp at 1e4, 2**-11), the biased
    variance within 1e-5 relative of its float64 value."""
    x = (torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7)) + 1e4).float()
    if len(shape) == 4:
        x = channels_last(x)
    dims = [d for d in range(x.dim()) if d != 1]
    mean, var = dispatch.TRITON.stats(x)
    torch.testing.assert_close(mean.double(), x.double().mean(dims), rtol=0, atol=2**-11)
    torch.testing.assert_close(var.double(), x.double().var(dims, unbiased=False), rtol=1e-5, atol=0)


@pytest.mark.parametrize("shape", [(40, 3, 50), (8, 3, 20, 30)], ids=str)
def test_training_output_at_a_large_offset_is_normalized_by_the_float64_mean(shape, launches):
    """1e4 + N(0, 1) in float32: y within 1e-5 of BN computed in float64 on the same float32 values
    (normalizing by the mean rounded to float32 is up to half an ulp at 1e4, 4.9e-4, off; torch's
    CPU kernel: 2.4e-4 on this input), for the layer and for batch_norm_add_act."""
    from bnlab.functional import batch_norm_add_act

    x = (torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7)) + 1e4).float()
    if len(shape) == 4:
        x = channels_last(x)
    dims = [d for d in range(x.dim()) if d != 1]
    x64 = x.double()
    view = [1, -1] + [1] * (x.dim() - 2)
    w, b = torch.tensor([0.5, 2.0, -1.0]), torch.tensor([0.25, 0.0, -0.5])
    exact = (x64 - x64.mean(dims, keepdim=True)) * torch.rsqrt(x64.var(dims, unbiased=False, keepdim=True) + 1e-5)
    exact = exact * w.double().view(view) + b.double().view(view)
    layer = (bnlab.nn.BatchNorm1d if len(shape) == 3 else bnlab.nn.BatchNorm2d)(3)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(b)
        y = layer(x)
        y_fused = batch_norm_add_act(x, torch.zeros_like(x), None, None, w, b, True, 0.1, 1e-5, "identity", 0.0)
    torch.testing.assert_close(y.double(), exact, rtol=0, atol=1e-5)
    torch.testing.assert_close(y_fused.double(), exact, rtol=0, atol=1e-5)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_same_bits_on_every_run(layout, launches):
    shape = (4, 6, 7, 9)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=gen) * 2 + 1
    dy = torch.randn(shape, generator=gen)
    if layout == "channels_last":
        x, dy = channels_last(x), channels_last(dy)
    results = []
    for _ in range(2):
        m = bnlab.nn.BatchNormAct2d(6, act="silu")
        xi = x.clone().requires_grad_()
        y = m(xi)
        y.backward(dy)
        results.append([y.detach(), xi.grad, m.weight.grad, m.bias.grad, m.running_mean, m.running_var])
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "silu"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_batchnorm_act_matches_torch_bn_then_activation(act, layout, launches):
    """Tolerance: float32, tests/reference.py's 64 ulps scaled by the largest value."""
    torch.manual_seed(0)
    ours = bnlab.nn.BatchNormAct2d(5, act=act, negative_slope=0.2)
    ref = torch.nn.BatchNorm2d(5)
    x = torch.randn(4, 5, 6, 7) * 2 + 0.3
    if layout == "channels_last":
        x = channels_last(x)
    dy = torch.randn(4, 5, 6, 7)
    xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    yo = ours(xo)
    z = ref(xr)
    yr = {"relu": tnf.relu, "silu": tnf.silu, "leaky_relu": lambda t: tnf.leaky_relu(t, 0.2)}[act](z)
    assert_matches(yo, yr, "output")
    yo.backward(dy)
    yr.backward(dy)
    assert_matches(xo.grad, xr.grad, "input gradient")
    assert_matches(ours.weight.grad, ref.weight.grad, "weight gradient")
    assert_matches(ours.bias.grad, ref.bias.grad, "bias gradient")


def _run_with(backend: str, make, x, dy, *extra):
    dispatch.set_backend(backend)
    torch.manual_seed(0)
    m = make()
    xi = x.clone().requires_grad_()
    y = m(xi, *extra)
    y.backward(dy)
    grads = [xi.grad] + [p.grad for p in m.parameters()]
    return [y.detach(), *grads, *m.buffers()]


VARIANTS = {
    "ghost": (lambda: bnlab.nn.GhostBatchNorm2d(4, virtual_batch_size=2), (6, 4, 5, 5)),
    "renorm": (lambda: bnlab.nn.BatchRenorm2d(4, r_max=1.5, d_max=0.5), (6, 4, 5, 5)),
    "masked": (lambda: bnlab.nn.MaskedBatchNorm1d(4), (3, 4, 30)),
    "frozen": (lambda: bnlab.nn.FrozenBatchNorm2d(4), (6, 4, 5, 5)),
    "lazy": (lambda: bnlab.nn.LazyBatchNorm3d(), (2, 4, 3, 4, 5)),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_on_triton_match_the_reference_backend(variant):
    """The variants' own logic over the Triton primitives gives the reference backend's results
    (which the variants' tests compare with their torch formulations); float32 within 1e-5."""
    make, shape = VARIANTS[variant]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen) * 1.5 + 0.5
    dy = torch.randn(shape, generator=gen)
    extra = ()
    if variant == "masked":
        extra = (torch.arange(shape[2])[None, :] < torch.tensor([30, 17, 9])[:, None],)
    ours = _run_with("triton", make, x, dy, *extra)
    ref = _run_with("reference", make, x, dy, *extra)
    for a, b in zip(ours, ref):
        if a is None or b is None:
            assert a is None and b is None
            continue
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_functional_batch_norm_matches_torch():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(8, 3, 12, generator=gen)
    w, b = torch.rand(3, generator=gen) + 0.5, torch.randn(3, generator=gen)
    rm, rv = torch.zeros(3), torch.ones(3)
    rm2, rv2 = rm.clone(), rv.clone()
    y = bnlab.functional.batch_norm(x, rm, rv, w, b, training=True, momentum=0.2)
    yr = tnf.batch_norm(x, rm2, rv2, w, b, training=True, momentum=0.2)
    assert_matches(y, yr, "output")
    assert_matches(rm, rm2, "running_mean")
    assert_matches(rv, rv2, "running_var")


def test_backward_reduce_and_elemt_give_backward():
    """The split backward SyncBatchNorm uses: the sums, then dx from their means, equal the fused one."""
    gen = torch.Generator().manual_seed(4)
    x, dy = torch.randn(5, 3, 20, generator=gen), torch.randn(5, 3, 20, generator=gen)
    w, b = torch.rand(3, generator=gen) + 0.5, torch.randn(3, generator=gen)
    T = dispatch.TRITON
    mean, var = T.stats(x)
    dx, dw, db = T.backward(dy, x, w, b, mean, var, 1e-5, "silu", 0.0, (True, True, True))
    sg, sgx = T.backward_reduce(dy, x, w, b, mean, var, 1e-5, "silu", 0.0)
    dx2 = T.backward_elemt(dy, x, w, b, mean, var, 1e-5, "silu", 0.0, sg / 100, sgx / 100)
    torch.testing.assert_close(dx2, dx, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(db, sg)
    torch.testing.assert_close(dw, sgx * torch.rsqrt(var + 1e-5))


def test_update_running_stats_primitive_matches_torch_math():
    mean, var = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.25])
    rm, rv = torch.zeros(2), torch.ones(2)
    dispatch.TRITON.update_running_stats(rm, rv, mean, var, 10, torch.tensor(0.25))
    torch.testing.assert_close(rm, 0.25 * mean)
    torch.testing.assert_close(rv, 0.75 + 0.25 * var * 10 / 9)


# --- the custom operators ----------------------------------------------------------------------


def test_custom_operators_pass_opcheck():
    gen = torch.Generator().manual_seed(5)
    x, dy = torch.randn(4, 3, 10, generator=gen), torch.randn(4, 3, 10, generator=gen)
    w, b = torch.rand(3, generator=gen) + 0.5, torch.randn(3, generator=gen)
    mean, var = dispatch.TRITON.stats(x)
    ops = torch.ops.bnlab
    cases = [
        (ops.triton_forward, (x, w, b, torch.zeros(3), torch.ones(3), None, 0.1, 40, 1e-5, "relu", 0.0)),
        (ops.triton_stats, (x,)),
        (ops.triton_normalize, (x, mean, var, w, b, 1e-5, "silu", 0.0, False)),
        (ops.triton_backward, (dy, x, w, b, mean, var, 1e-5, "silu", 0.0, True, True, True)),
        (ops.triton_backward_reduce, (dy, x, w, b, mean, var, 1e-5, "identity", 0.0)),
        (ops.triton_backward_elemt, (dy, x, w, b, mean, var, 1e-5, "identity", 0.0, mean, var)),
        (ops.triton_update, (torch.zeros(3), torch.ones(3), mean, var, torch.tensor(0.5), 0.0, 40)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_compile_fullgraph_sees_the_custom_operators(dtype):
    """torch.compile(fullgraph=True) of a training step with momentum=None (a tensor momentum: no
    .item(), which would break the graph) records the Triton operators, and gives eager's results; also
    for bfloat16 input through the float32 layer (mixed precision)."""
    seen = []

    def record(gm, example_inputs):
        for sub in gm.modules():  # the autograd Function's forward and backward are subgraphs
            if isinstance(sub, torch.fx.GraphModule):
                seen.extend(str(n.target) for n in sub.graph.nodes if n.op == "call_function")
        return gm.forward

    torch.manual_seed(0)
    m = bnlab.nn.BatchNorm2d(3, momentum=None)
    eager = bnlab.nn.BatchNorm2d(3, momentum=None)
    x = torch.randn(4, 3, 5, 6).to(dtype)

    def step(module, inp):
        y = module(inp)
        return y.float().square().sum()

    compiled = torch.compile(step, backend=record, fullgraph=True)
    xc, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss = compiled(m, xc)
    loss.backward()
    ref = step(eager, xe)
    ref.backward()
    assert any("triton_forward" in t for t in seen), seen
    assert any("triton_backward" in t for t in seen), seen
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(xc.grad, xe.grad)
    torch.testing.assert_close(m.running_var, eager.running_var)


def test_export_records_the_custom_operator():
    """The functional form exports as bnlab's custom operator; a plain layer exports as torch's standard
    batch_norm (bnlab.nn.export_graph: the quantization passes recognize only that one)."""

    class Functional(torch.nn.Module):
        def forward(self, x):
            return bnlab.functional.batch_norm(x, None, None, training=True)

    x = torch.randn(4, 3, 5, 6)
    targets = [str(n.target) for n in torch.export.export(Functional(), (x,)).graph.nodes if n.op == "call_function"]
    assert any("triton_forward" in t for t in targets), targets
    layer = torch.export.export(bnlab.nn.BatchNorm2d(3).train(), (x,))
    assert any("batch_norm" in str(n.target) for n in layer.graph.nodes if n.op == "call_function")


# --- without triton ----------------------------------------------------------------------------


def test_asking_for_triton_without_triton_is_a_one_line_error():
    code = "import sys; sys.modules['triton'] = None; import bnlab"
    env = dict(os.environ, BNLAB_BACKEND="triton")
    run = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last == "ImportError: BNLAB_BACKEND=triton needs triton, which is not installed (pip install 'bnlab[gpu]')"


def test_unknown_backend_name_is_a_value_error():
    with pytest.raises(ValueError, match=r"one of numba, reference, triton \(got 'cuda'\)"):
        dispatch.set_backend("cuda")


# --- fused BN + residual add + activation -------------------------------------------------------


def saved_bytes(fn) -> int:
    """Bytes of the distinct tensors autograd saves while ``fn`` runs (parameters excluded)."""
    seen: dict[int, int] = {}

    def pack(t):
        if not isinstance(t, torch.nn.Parameter) and t.numel() > 16:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


ACTS = {"relu": tnf.relu, "silu": tnf.silu, "leaky_relu": lambda t: tnf.leaky_relu(t, 0.1), "identity": lambda t: t}


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_batch_norm_add_act_matches_torch_bn_add_act(act, layout):
    """Against torch's BN, the add and torch's activation, float32 (tests/reference.py's tolerance)."""
    from bnlab.functional import batch_norm_add_act

    gen = torch.Generator().manual_seed(6)
    shape = (4, 5, 6, 7)
    x, r, dy = (torch.randn(shape, generator=gen) * 2 + 0.3 for _ in range(3))
    if layout == "channels_last":
        x, r = channels_last(x), channels_last(r)
    w, b = torch.rand(5, generator=gen) + 0.5, torch.randn(5, generator=gen)
    rm, rv, rm2, rv2 = torch.zeros(5), torch.ones(5), torch.zeros(5), torch.ones(5)
    leaves = [t.clone().requires_grad_() for t in (x, r, w, b)]
    ref_leaves = [t.clone().requires_grad_() for t in (x, r, w, b)]
    y = batch_norm_add_act(leaves[0], leaves[1], rm, rv, leaves[2], leaves[3], True, 0.2, 1e-5, act, 0.1)
    z = tnf.batch_norm(ref_leaves[0], rm2, rv2, ref_leaves[2], ref_leaves[3], True, 0.2, 1e-5)
    yr = ACTS[act](z + ref_leaves[1])
    assert y.stride() == yr.stride()
    assert_matches(y, yr, "output")
    y.backward(dy)
    yr.backward(dy)
    for ours, ref, name in zip(leaves, ref_leaves, ("input", "residual", "weight", "bias")):
        assert_matches(ours.grad, ref.grad, f"{name} gradient")
    assert_matches(rm, rm2, "running_mean")
    assert_matches(rv, rv2, "running_var")
    with torch.no_grad():  # eval: the running statistics
        assert_matches(
            batch_norm_add_act(x, r, rm, rv, w, b, False, 0.2, 1e-5, act, 0.1),
            ACTS[act](tnf.batch_norm(x, rm2, rv2, w, b, False, 0.2, 1e-5) + r),
            "eval output",
        )


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "silu"])
def test_fused_layers_save_less_than_torch_bn_then_activation(act):
    """Saved activations: BatchNormAct keeps x (half of torch's BN + act pair); with a residual, relu
    and leaky_relu keep x and a byte mask ((4 + 1) / 8 of torch's bytes in float32), silu x and the
    residual (torch's bytes)."""
    from bnlab.functional import batch_norm_add_act

    shape = (4, 8, 6, 6)
    x = torch.randn(shape, requires_grad=True)
    r = torch.randn(shape, requires_grad=True)
    ours = bnlab.nn.BatchNormAct2d(8, act=act, negative_slope=0.1)
    ref = torch.nn.BatchNorm2d(8)
    _, ours_bytes = saved_bytes(lambda: ours(x))
    _, torch_bytes = saved_bytes(lambda: ACTS[act](ref(x)))
    assert ours_bytes <= 0.5 * torch_bytes + 2 * 8 * 4, (ours_bytes, torch_bytes)  # + the (C,) statistics
    w, b = ref.weight, ref.bias
    _, fused_bytes = saved_bytes(lambda: batch_norm_add_act(x, r, None, None, w, b, True, 0.1, 1e-5, act, 0.1))
    _, chain_bytes = saved_bytes(lambda: ACTS[act](tnf.batch_norm(x, None, None, w, b, True) + r))
    limit = 0.625 if act in ("relu", "leaky_relu") else 1.0
    assert fused_bytes <= limit * chain_bytes + 2 * 8 * 4, (fused_bytes, chain_bytes)


def test_why_reference_names_float64_and_a_forced_backend():
    assert dispatch.why_reference(torch.randn(4, 3, dtype=torch.float64)) == "float64 on the Triton backend"
    assert dispatch.why_reference(torch.randn(4, 3)) is None
    dispatch.set_backend("reference")
    assert dispatch.why_reference(torch.randn(4, 3)) == "BNLAB_BACKEND=reference (no fast backend for cpu)"


class _CountLaunches:
    def __init__(self, kernel, log):
        self.kernel, self.log = kernel, log

    def __getitem__(self, grid):
        self.log.append(self.kernel.__name__)
        return self.kernel[grid]


@pytest.mark.parametrize(("numel_limit", "forward", "backward"), [(1 << 18, 1, 1), (0, 3, 3)])
def test_launches_per_direction(monkeypatch, numel_limit, forward, backward):
    """A small input trains with one launch per direction; above the limit, three (partials, merge,
    elementwise)."""
    monkeypatch.setattr(triton_gpu, "SINGLE_MAX_NUMEL", numel_limit)
    K = triton_gpu.kernels()
    log: list[str] = []
    for name in ("stats_partial", "stats_merge", "normalize", "backward_partial", "backward_merge", "backward_elemt"):
        monkeypatch.setattr(K, name, _CountLaunches(getattr(K, name), log))
    for name in ("forward_single", "backward_single"):
        monkeypatch.setattr(K, name, _CountLaunches(getattr(K, name), log))
    m = bnlab.nn.BatchNorm2d(4)
    x = torch.randn(8, 4, 6, 6, requires_grad=True)
    y = m(x)
    assert len(log) == forward, log
    y.backward(torch.randn_like(y))
    assert len(log) == forward + backward, log
