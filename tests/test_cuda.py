"""bnlab on a CUDA device, against torch.nn (cuDNN) on the same device: skipped without one.

On CUDA bnlab runs its Triton backend when triton is installed (bnlab.core.backends.triton_gpu;
float64 and calls it does not take run the reference backend, bnlab.core.math in torch operations),
so these check that the math, the running statistics, the half types, the channels_last layout,
autograd and torch.compile hold on a GPU as on the CPU, within tests/reference.py's rule (torch's
tolerance, or no less accurate than torch against float64). The Triton-specific tests at the end
skip without triton.
"""

import pytest
import torch

import bnlab
from reference import assert_matches
from test_parity import _exact

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

LAYERS = {
    2: (bnlab.nn.BatchNorm1d, torch.nn.BatchNorm1d),
    3: (bnlab.nn.BatchNorm1d, torch.nn.BatchNorm1d),
    4: (bnlab.nn.BatchNorm2d, torch.nn.BatchNorm2d),
    5: (bnlab.nn.BatchNorm3d, torch.nn.BatchNorm3d),
}
SHAPES = [(64, 32), (16, 24, 50), (8, 16, 14, 14), (4, 8, 4, 6, 6), (2, 3, 1, 1)]


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_torch_nn_on_cuda_over_training_then_eval(shape, dtype, channels_last):
    if channels_last and len(shape) < 4:
        pytest.skip("channels_last needs 4 or 5 dims")
    ours_cls, ref_cls = LAYERS[len(shape)]
    ours = ours_cls(shape[1], momentum=0.3, device="cuda", dtype=dtype)
    ref = ref_cls(shape[1], momentum=0.3, device="cuda", dtype=dtype)
    gen = torch.Generator(device="cuda").manual_seed(0)
    with torch.no_grad():
        for name in ("weight", "bias"):
            v = torch.randn(shape[1], generator=gen, device="cuda", dtype=torch.float64).to(dtype)
            getattr(ours, name).copy_(v)
            getattr(ref, name).copy_(v)
    fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    for step in range(5):
        training = step < 3
        ours.train(training)
        ref.train(training)
        x = (torch.randn(shape, generator=gen, device="cuda", dtype=torch.float64) * 3 + 2).to(dtype)
        if channels_last:
            x = x.to(memory_format=fmt)
        xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
        yo, yr = ours(xo), ref(xr)
        assert yo.device == yr.device and yo.is_contiguous(
            memory_format=fmt if channels_last else torch.contiguous_format
        )
        dy = torch.randn(shape, generator=gen, device="cuda", dtype=torch.float64).to(dtype)
        exact = _exact(ref, x, dy)
        assert_matches(yo, yr, "output", exact["output"])
        yo.backward(dy)
        yr.backward(dy)
        assert_matches(xo.grad, xr.grad, "input gradient", exact["input"])
        for name in ("weight", "bias"):
            assert_matches(getattr(ours, name).grad, getattr(ref, name).grad, f"{name} gradient", exact[name])
            getattr(ours, name).grad = getattr(ref, name).grad = None
        assert_matches(ours.running_mean, ref.running_mean, "running_mean")
        assert_matches(ours.running_var, ref.running_var, "running_var")
        assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked)


def test_converted_convnet_trains_as_torch_on_cuda():
    """A conv net with torch's BN, converted to bnlab's, gives torch's loss and gradients on CUDA."""
    torch.manual_seed(0)
    ref = (
        torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1),
            torch.nn.BatchNorm2d(16),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, stride=2, padding=1),
            torch.nn.BatchNorm2d(32),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(32, 10),
        )
        .cuda()
        .double()
    )
    ours = bnlab.convert(ref, "bnlab", inplace=False)
    assert sum(isinstance(m, bnlab.nn.BatchNorm2d) for m in ours.modules()) == 2
    x = torch.randn(32, 3, 16, 16, device="cuda", dtype=torch.float64)
    target = torch.randint(0, 10, (32,), device="cuda")
    losses = []
    for model in (ref, ours):
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-10, atol=0)
    for (name, p_ref), p_ours in zip(ref.named_parameters(), ours.parameters()):
        torch.testing.assert_close(p_ours.grad, p_ref.grad, rtol=1e-8, atol=1e-10, msg=name)


def test_compiled_layer_matches_eager_on_cuda():
    """torch.compile (inductor, Triton on the GPU) of a bnlab layer computes the eager layer's result."""
    layer = bnlab.nn.BatchNorm2d(8, device="cuda")
    compiled = torch.compile(bnlab.nn.BatchNorm2d(8, device="cuda"))
    x = torch.randn(16, 8, 10, 10, device="cuda")
    for training in (True, True, False):
        layer.train(training)
        compiled.train(training)
        torch.testing.assert_close(compiled(x), layer(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled.running_var, layer.running_var, rtol=1e-6, atol=1e-7)


def test_autocast_bfloat16_matches_torch_on_cuda():
    """Under autocast, bf16 activations through a float32 layer: output dtype and values as torch's."""
    ours, ref = bnlab.nn.BatchNorm2d(8, device="cuda"), torch.nn.BatchNorm2d(8, device="cuda")
    x = torch.randn(16, 8, 10, 10, device="cuda").bfloat16()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        yo, yr = ours(x), ref(x)
    assert yo.dtype == yr.dtype
    assert_matches(yo, yr, "output")
    assert_matches(ours.running_mean, ref.running_mean, "running_mean")


# --- the Triton backend on the GPU --------------------------------------------------------------

needs_triton = pytest.mark.skipif(
    not bnlab.core.backends.triton_gpu.available(), reason="needs triton (pip install 'bnlab[gpu]')"
)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_float32_layers_fed_half_types_train_on_triton_on_cuda(dtype):
    """Mixed precision (a float32 model under autocast): the Triton kernels, with torch's results and
    dtypes (half output and input gradient, float32 parameter gradients and running statistics)."""
    from bnlab.core import dispatch

    ours, ref = bnlab.nn.BatchNorm2d(8, device="cuda"), torch.nn.BatchNorm2d(8, device="cuda")
    x = (torch.randn(16, 8, 10, 10, device="cuda") * 2 + 1).to(dtype)
    assert dispatch.select(x, ours.weight, ours.bias, ours.running_mean, ours.running_var) is dispatch.TRITON
    xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    yo, yr = ours(xo), ref(xr)
    dy = torch.randn_like(yr)
    yo.backward(dy)
    yr.backward(dy)
    assert yo.dtype == yr.dtype == dtype and ours.weight.grad.dtype == torch.float32
    assert_matches(yo, yr, "output")
    assert_matches(xo.grad, xr.grad, "input gradient")
    assert_matches(ours.weight.grad, ref.weight.grad, "weight gradient")
    assert_matches(ours.running_var, ref.running_var, "running_var")


@needs_triton
def test_cuda_tensors_run_on_the_triton_backend():
    from bnlab.core import dispatch

    x = torch.randn(8, 4, 5, 5, device="cuda")
    assert dispatch.select(x) is dispatch.TRITON
    assert dispatch.select(x.double()) is dispatch.REFERENCE


@needs_triton
@pytest.mark.parametrize("shape", [(20, 6, 65536), (131072, 16), (4, 2048, 7, 7)], ids=lambda s: "x".join(map(str, s)))
def test_triton_hard_shapes_match_torch_nn_on_cuda(shape):
    ours_cls, ref_cls = LAYERS[len(shape)]
    ours, ref = ours_cls(shape[1], device="cuda"), ref_cls(shape[1], device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(shape, generator=gen, device="cuda") * 3 + 2
    dy = torch.randn(shape, generator=gen, device="cuda")
    xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    yo, yr = ours(xo), ref(xr)
    exact = _exact(ref, x, dy)
    assert_matches(yo, yr, "output", exact["output"])
    yo.backward(dy)
    yr.backward(dy)
    assert_matches(xo.grad, xr.grad, "input gradient", exact["input"])
    assert_matches(ours.weight.grad, ref.weight.grad, "weight gradient", exact["weight"])
    assert_matches(ours.running_var, ref.running_var, "running_var")


@needs_triton
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_triton_same_bits_on_every_run_on_cuda(channels_last):
    x = torch.randn(16, 64, 28, 28, device="cuda", dtype=torch.bfloat16)
    dy = torch.randn_like(x)
    if channels_last:
        x, dy = x.contiguous(memory_format=torch.channels_last), dy.contiguous(memory_format=torch.channels_last)
    results = []
    for _ in range(3):
        m = bnlab.nn.BatchNorm2d(64, device="cuda", dtype=torch.bfloat16)
        xi = x.clone().requires_grad_()
        y = m(xi)
        y.backward(dy)
        results.append([y, xi.grad, m.weight.grad, m.bias.grad, m.running_var])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@needs_triton
def test_triton_training_step_captures_in_a_cuda_graph():
    """No host synchronization in forward or backward, momentum=None included: a CUDA graph captures
    the step (a sync inside the capture raises), and replaying it gives eager's results."""
    torch.manual_seed(0)
    graphed = bnlab.nn.BatchNorm2d(8, momentum=None, device="cuda")
    eager = bnlab.nn.BatchNorm2d(8, momentum=None, device="cuda")
    x = torch.randn(4, 8, 6, 6, device="cuda", requires_grad=True)
    dy = torch.randn(4, 8, 6, 6, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (kernel compilation) outside the capture
        for _ in range(2):
            graphed(x).backward(dy)
    torch.cuda.current_stream().wait_stream(side)
    with torch.no_grad():
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            getattr(graphed, name).copy_(getattr(eager, name))
    graph = torch.cuda.CUDAGraph()
    x.grad = None
    graphed.weight.grad = graphed.bias.grad = None
    with torch.cuda.graph(graph):
        y = graphed(x)
        y.backward(dy)
    for _ in range(3):
        graph.replay()
        eager(x.detach().requires_grad_()).backward(dy)
    torch.cuda.synchronize()
    torch.testing.assert_close(graphed.running_var, eager.running_var)
    torch.testing.assert_close(graphed.running_mean, eager.running_mean)


@needs_triton
def test_compile_fullgraph_records_the_triton_operators_on_cuda():
    seen = []

    def record(gm, example_inputs):
        for sub in gm.modules():
            if isinstance(sub, torch.fx.GraphModule):
                seen.extend(str(n.target) for n in sub.graph.nodes if n.op == "call_function")
        return gm.forward

    m = bnlab.nn.BatchNorm2d(8, momentum=None, device="cuda")
    x = torch.randn(4, 8, 6, 6, device="cuda", requires_grad=True)
    torch.compile(lambda t: m(t).square().sum(), backend=record, fullgraph=True)(x).backward()
    assert any("triton_forward" in t for t in seen) and any("triton_backward" in t for t in seen), seen
    ref = torch.compile(bnlab.nn.BatchNorm2d(8, device="cuda"), fullgraph=True)  # inductor around the ops
    torch.testing.assert_close(ref(x), bnlab.nn.BatchNorm2d(8, device="cuda")(x), rtol=1e-5, atol=1e-5)


@needs_triton
@pytest.mark.parametrize("act", ["relu", "silu"])
def test_batch_norm_add_act_matches_torch_on_cuda(act):
    x, r, dy = (torch.randn(8, 32, 14, 14, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    w = torch.rand(32, device="cuda", dtype=torch.bfloat16) + 0.5
    b = torch.randn(32, device="cuda", dtype=torch.bfloat16)
    leaves = [t.clone().requires_grad_() for t in (x, r)]
    ref_leaves = [t.clone().requires_grad_() for t in (x, r)]
    y = bnlab.functional.batch_norm_add_act(leaves[0], leaves[1], None, None, w, b, True, act=act)
    torch_act = torch.nn.functional.relu if act == "relu" else torch.nn.functional.silu
    yr = torch_act(torch.nn.functional.batch_norm(ref_leaves[0], None, None, w, b, True) + ref_leaves[1])
    assert_matches(y, yr, "output")
    y.backward(dy)
    yr.backward(dy)
    assert_matches(leaves[0].grad, ref_leaves[0].grad, "input gradient")
    assert_matches(leaves[1].grad, ref_leaves[1].grad, "residual gradient")


@needs_triton
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_triton_runs_on_the_tensors_device_not_the_current_one():
    ours, ref = bnlab.nn.BatchNorm2d(4, device="cuda:1"), torch.nn.BatchNorm2d(4, device="cuda:1")
    x = torch.randn(8, 4, 5, 5, device="cuda:1")
    with torch.cuda.device(0):
        assert_matches(ours(x), ref(x), "output")


@needs_triton
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 1e26, -1e30, 3e38])
@pytest.mark.parametrize("shape", [(2, 3, 9000), (16, 3), (4, 3, 6, 5), (8, 3, 20000), (40000, 3)], ids=str)
def test_triton_non_finite_or_huge_values_match_torch_nn_on_cuda(shape, value):
    """tests/test_nonfinite_values.py's table on the GPU (the last two shapes split the reduction over
    programs), against torch.nn on the CPU: the kernels follow its float64-accumulated statistics
    (torch's CUDA kernels accumulate in float32 and can differ at inf)."""
    from test_nonfinite_values import _pair, _same

    torch.manual_seed(0)
    x = torch.randn(shape)
    if len(shape) == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    x[(1, 0) + (0,) * (x.dim() - 2)] = value
    ours, ref = _pair(shape)
    ours.cuda()
    for train in (True, False):
        ours.train(train), ref.train(train)
        with torch.no_grad():
            y, y_ref = ours(x.cuda()), ref(x)
        _same(y.cpu(), y_ref, torch.float32)
        _same(ours.running_mean.cpu(), ref.running_mean, torch.float32)
        _same(ours.running_var.cpu(), ref.running_var, torch.float32)


@needs_triton
@pytest.mark.parametrize("shape", [(40, 3, 50), (64, 3, 64, 64), (300000, 5)], ids=str)
def test_triton_statistics_at_a_large_offset_are_rounded_once_on_cuda(shape):
    """1e4 + N(0, 1) in float32: the mean within half a float32 ulp (2**-11) of the float64 mean of
    the float32 values, the biased variance within 1e-5 relative."""
    from bnlab.core import dispatch

    x = (torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7)) + 1e4).float().cuda()
    if len(shape) == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    dims = [d for d in range(x.dim()) if d != 1]
    mean, var = dispatch.TRITON.stats(x)
    torch.testing.assert_close(mean.double(), x.double().mean(dims), rtol=0, atol=2**-11)
    torch.testing.assert_close(var.double(), x.double().var(dims, unbiased=False), rtol=1e-5, atol=0)
