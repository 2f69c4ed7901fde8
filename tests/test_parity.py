"""bnlab.nn.BatchNorm{1,2,3}d against torch.nn over a generated space of layers, inputs and flags.

Each case runs several training steps and then eval steps in both libraries with the same inputs
and upstream gradients, and compares outputs, input/weight/bias gradients, running statistics and
num_batches_tracked within tests/reference.py's tolerances.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import bnlab
from reference import assert_matches

LAYERS = {
    "1d-2D": (bnlab.nn.BatchNorm1d, torch.nn.BatchNorm1d, 0),
    "1d-3D": (bnlab.nn.BatchNorm1d, torch.nn.BatchNorm1d, 1),
    "2d": (bnlab.nn.BatchNorm2d, torch.nn.BatchNorm2d, 2),
    "3d": (bnlab.nn.BatchNorm3d, torch.nn.BatchNorm3d, 3),
}
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


@st.composite
def cases(draw):
    kind = draw(st.sampled_from(sorted(LAYERS)))
    n_spatial = LAYERS[kind][2]
    shape = (draw(st.integers(0, 5)), draw(st.integers(1, 5))) + tuple(
        draw(st.integers(1, 4)) for _ in range(n_spatial)
    )
    return dict(
        kind=kind,
        shape=shape,
        dtype=draw(st.sampled_from(DTYPES)),
        momentum=draw(st.sampled_from([0.1, None, 0.0, 1.0, 0.37])),
        eps=draw(st.sampled_from([1e-5, 1e-3, 0.5])),
        affine=draw(st.booleans()),
        bias=draw(st.booleans()),
        track=draw(st.booleans()),
        tracking_off_later=draw(st.booleans()),  # buffers exist but track_running_stats set False
        channels_last=draw(st.booleans()) and n_spatial >= 2,
        train_steps=draw(st.integers(1, 3)),
        seed=draw(st.integers(0, 2**16)),
    )


def _step(ours, ref, shape, dtype, channels_last, gen):
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 3 + 2).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    try:
        yr = ref(xr)
    except ValueError as err:  # torch refuses (one value per channel in training): so must we
        with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
            ours(xo)
        assert "Expected more than 1 value per channel" in str(err)
        return
    yo = ours(xo)
    dy = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    exact = _exact(ref, x, dy)
    assert_matches(yo, yr, "output", exact["output"])
    fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
    if channels_last:
        assert yo.is_contiguous(memory_format=fmt) == yr.is_contiguous(memory_format=fmt)
    yo.backward(dy)
    yr.backward(dy)
    assert_matches(xo.grad, xr.grad, "input gradient", exact["input"])
    for name in ("weight", "bias"):
        po, pr = getattr(ours, name), getattr(ref, name)
        assert_matches(
            None if po is None else po.grad, None if pr is None else pr.grad, f"{name} gradient", exact.get(name)
        )


def _exact(ref, x, dy):
    """The float64 answer for the torch layer's current state: output and gradients."""
    use_batch = ref.training or ref.running_mean is None
    x64 = x.detach().double().requires_grad_()
    params = {n: p.detach().double().requires_grad_() for n, p in ref.named_parameters()}
    rm = None if use_batch else ref.running_mean.detach().double()
    rv = None if use_batch else ref.running_var.detach().double()
    y = torch.nn.functional.batch_norm(x64, rm, rv, params.get("weight"), params.get("bias"), use_batch, 0.0, ref.eps)
    grads = torch.autograd.grad(y, [x64, *params.values()], dy.double()) if y.numel() else [None] * (1 + len(params))
    out = {"output": y.detach(), "input": grads[0]}
    out.update({n: g for n, g in zip(params, grads[1:])})
    return out


@given(cases())
def test_matches_torch_nn_over_training_then_eval(case):
    ours_cls, ref_cls, _ = LAYERS[case["kind"]]
    kw = dict(
        eps=case["eps"],
        momentum=case["momentum"],
        affine=case["affine"],
        track_running_stats=case["track"],
        dtype=case["dtype"],
        bias=case["bias"],
    )
    ours, ref = ours_cls(case["shape"][1], **kw), ref_cls(case["shape"][1], **kw)
    if case["affine"]:  # non-trivial affine parameters
        with torch.no_grad():
            gen = torch.Generator().manual_seed(case["seed"] + 1)
            for name in ("weight", "bias"):
                if getattr(ref, name) is not None:
                    v = torch.randn(case["shape"][1], generator=gen, dtype=torch.float64).to(case["dtype"])
                    getattr(ref, name).copy_(v)
                    getattr(ours, name).copy_(v)
    if case["tracking_off_later"]:
        ours.track_running_stats = ref.track_running_stats = False
    gen = torch.Generator().manual_seed(case["seed"])
    for step in range(case["train_steps"] + 2):
        training = step < case["train_steps"]
        ours.train(training)
        ref.train(training)
        _step(ours, ref, case["shape"], case["dtype"], case["channels_last"], gen)
        for name in ("running_mean", "running_var"):
            assert_matches(getattr(ours, name), getattr(ref, name), name)
        if ref.num_batches_tracked is not None:
            assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_matches_torch(dtype):
    ours, ref = bnlab.nn.BatchNorm2d(3, dtype=dtype), torch.nn.BatchNorm2d(3, dtype=dtype)
    x = torch.randn(0, 3, 4, 4, dtype=dtype)
    xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    yo, yr = ours(xo), ref(xr)
    assert yo.shape == yr.shape == (0, 3, 4, 4)
    yo.sum().backward()
    yr.sum().backward()
    assert_matches(ours.weight.grad, ref.weight.grad, "weight gradient")  # zeros, not NaN
    assert_matches(ours.bias.grad, ref.bias.grad, "bias gradient")
    assert_matches(ours.running_mean, ref.running_mean, "running_mean")  # unchanged
    assert_matches(ours.running_var, ref.running_var, "running_var")
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 1


def test_half_input_with_float32_layer_matches_torch():
    """Mixed precision: bfloat16 activations through a float32 layer, as under autocast."""
    ours, ref = bnlab.nn.BatchNorm2d(4), torch.nn.BatchNorm2d(4)
    x = torch.randn(4, 4, 5, 5).bfloat16()
    yo, yr = ours(x), ref(x)
    assert yo.dtype == yr.dtype == torch.bfloat16
    assert_matches(yo, yr, "output")
    assert_matches(ours.running_var, ref.running_var, "running_var")


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_functional_matches_torch_functional(kind):
    n_spatial = LAYERS[kind][2]
    shape = (6, 3) + (5,) * n_spatial
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    w, b = torch.randn(3, generator=gen, dtype=torch.float64), torch.randn(3, generator=gen, dtype=torch.float64)
    rm_o, rv_o = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    rm_r, rv_r = rm_o.clone(), rv_o.clone()
    for training in (True, True, False):
        yo = bnlab.functional.batch_norm(x, rm_o, rv_o, w, b, training, 0.2, 1e-4)
        yr = torch.nn.functional.batch_norm(x, rm_r, rv_r, w, b, training, 0.2, 1e-4)
        assert_matches(yo, yr, "output")
        assert_matches(rm_o, rm_r, "running_mean")
        assert_matches(rv_o, rv_r, "running_var")
