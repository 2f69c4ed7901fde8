"""BN + activation on each backend: against torch's batch norm followed by torch's activation.

Reference: torch.nn.functional.batch_norm (training) then relu / leaky_relu / silu, gradients by
autograd. float32 tolerances: 1e-4 relative / 1e-5 absolute on outputs and input gradients,
parameter gradients (sums over m values) relative to their size.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as tnf

from bnlab.core import dispatch

FAST = dispatch.FAST_BACKENDS["cpu"]

ACTS = {
    "identity": lambda z, slope: z,
    "relu": lambda z, slope: tnf.relu(z),
    "leaky_relu": lambda z, slope: tnf.leaky_relu(z, slope),
    "silu": lambda z, slope: tnf.silu(z),
}


def reference(x, w, b, dy, act, slope, eps=1e-5):
    xr, wr, br = (t.detach().clone().requires_grad_() for t in (x, w, b))
    y = ACTS[act](tnf.batch_norm(xr, None, None, wr, br, training=True, eps=eps), slope)
    return (y,) + torch.autograd.grad(y, (xr, wr, br), dy)


def check(x, w, b, dy, act, slope, backend=FAST):
    y, mean, var = backend.forward(x, w, b, 1e-5, act, slope, None)
    with torch.no_grad():
        dx, dw, db = backend.backward(dy, x, w, b, mean, var, 1e-5, act, slope, (True, True, True))
    y_ref, dx_ref, dw_ref, db_ref = reference(x, w, b, dy, act, slope)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-4, atol=1e-5)
    for got, want in ((dw, dw_ref), (db, db_ref)):
        scale = want.abs().max().clamp_min(1.0)
        torch.testing.assert_close(got / scale, want / scale, rtol=1e-4, atol=1e-5)


def inputs(shape, seed=0, channels_last=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * 2 + 0.3
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    C = shape[1]
    return x, torch.rand(C, generator=gen) + 0.5, torch.randn(C, generator=gen), torch.randn(shape, generator=gen)


@pytest.mark.parametrize("act, slope", [("identity", 0.0), ("relu", 0.0), ("leaky_relu", 0.2), ("silu", 0.0)])
def test_fused_activation_matches_bn_then_torch_activation(act, slope):
    for shape in ((4, 5, 6, 7), (4, 5, 9, 9)):  # planes shorter and longer than PLANE_MIN
        x, w, b, dy = inputs(shape)
        assert dispatch.select(x, w, b) is FAST
        check(x, w, b, dy, act, slope)


@pytest.mark.parametrize("shape, channels_last", [((4, 5, 6, 7), True), ((16, 5), False)])
def test_fused_relu_in_rows_layout_matches(shape, channels_last):
    x, w, b, dy = inputs(shape, seed=1, channels_last=channels_last)
    assert dispatch.layout(x) == "rc"
    check(x, w, b, dy, "relu", 0.0)


@pytest.mark.parametrize("act, slope", [("relu", 0.0), ("leaky_relu", 0.1), ("silu", 0.0)])
def test_reference_path_matches_too(act, slope):
    x, w, b, dy = inputs((3, 4, 5, 5), seed=2)
    check(x, w, b, dy, act, slope, dispatch.REFERENCE)
    check(x.bfloat16().float(), w, b, dy, act, slope, dispatch.REFERENCE)


def test_reference_backward_under_grad_mode_is_differentiable():
    x, w, b, dy = inputs((3, 4, 5), seed=3)
    x = x.requires_grad_()
    _, mean, var = dispatch.REFERENCE.forward(x, w, b, 1e-5, "silu", 0.0, None)
    dx, _, _ = dispatch.REFERENCE.backward(dy, x, w, b, mean, var, 1e-5, "silu", 0.0, (True, True, True))
    assert dx.requires_grad  # differentiable torch ops: what double backward runs


@pytest.mark.parametrize("act, slope", [("relu", 0.0), ("leaky_relu", 0.1), ("silu", 0.0)])
def test_fused_eval_matches_eval_bn_then_torch_activation(act, slope):
    x, w, b, _ = inputs((4, 5, 6, 7), seed=4)
    rm, rv = torch.randn(5) * 0.2, torch.rand(5) + 0.5
    want = ACTS[act](tnf.batch_norm(x, rm, rv, w, b, training=False), slope)
    for backend in (FAST, dispatch.REFERENCE):
        torch.testing.assert_close(backend.eval(x, rm, rv, w, b, 1e-5, act, slope), want, rtol=1e-5, atol=1e-6)
