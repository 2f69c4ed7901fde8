"""Batched gradients and forward-mode AD through training-mode batch norm, on every path, against torch.

The paths: the fast kernels (forward on the numba backend, the backward's batched gradient on the
reference) and the reference (BNLAB_FAST=0 equivalent), plain BN and BN + SiLU. Tolerance 1e-5
(float32) on values of order 1.
"""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

import bnlab
from bnlab.core import dispatch


@pytest.fixture(params=["fast", "reference"])
def path(request):
    before = dispatch.fast_enabled()  # restored, so a BNLAB_FAST=0 run stays on the reference after this
    dispatch.set_fast(request.param == "fast")
    yield request.param
    dispatch.set_fast(before)


def _pair(shape, track=True):
    torch.manual_seed(0)
    cls = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d"}[len(shape)]
    ours, ref = (
        getattr(bnlab.nn, cls)(shape[1], track_running_stats=track),
        getattr(torch.nn, cls)(shape[1], track_running_stats=track),
    )
    with torch.no_grad():
        for m in (ours, ref):
            m.weight.copy_(torch.linspace(0.5, 1.5, shape[1]))
            m.bias.copy_(torch.linspace(-0.2, 0.3, shape[1]))
    return ours, ref, torch.randn(shape) * 2 + 1


@pytest.mark.parametrize("shape", [(4, 3), (5, 3, 7), (3, 2, 4, 5)])
def test_jacobian_vectorized_matches_torch(path, shape):
    ours, ref, x = _pair(shape)
    jac = torch.autograd.functional.jacobian(ours, x, vectorize=True)
    jac_ref = torch.autograd.functional.jacobian(ref, x, vectorize=True)
    torch.testing.assert_close(jac, jac_ref, rtol=1e-5, atol=1e-5)


def test_is_grads_batched_matches_torch(path):
    ours, ref, x = _pair((6, 4, 5))
    cotangents = torch.randn(3, 6, 4, 5)
    grads = []
    for layer in (ours, ref):
        xr = x.clone().requires_grad_()
        grads.append(torch.autograd.grad(layer(xr), (xr, layer.weight), cotangents, is_grads_batched=True))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(4, 3), (5, 3, 7), (3, 2, 4, 5)])
def test_forward_ad_matches_torch(path, shape):
    ours, ref, x = _pair(shape)
    tx, tw, tb = torch.randn_like(x), torch.randn(shape[1]), torch.randn(shape[1])
    tangents = []
    for layer in (ours, ref):
        with fwAD.dual_level():
            params = {
                "weight": fwAD.make_dual(layer.weight.detach(), tw),
                "bias": fwAD.make_dual(layer.bias.detach(), tb),
            }
            y = torch.func.functional_call(layer, params, (fwAD.make_dual(x, tx),))
            tangents.append(fwAD.unpack_dual(y).tangent)
    torch.testing.assert_close(tangents[0], tangents[1], rtol=1e-5, atol=1e-5)


def test_func_jvp_matches_torch(path):
    ours, ref, x = _pair((6, 3, 4), track=False)  # torch.func transforms take no buffer updates
    t = torch.randn_like(x)
    (_, jvp), (_, jvp_ref) = torch.func.jvp(ours, (x,), (t,)), torch.func.jvp(ref, (x,), (t,))
    torch.testing.assert_close(jvp, jvp_ref, rtol=1e-5, atol=1e-5)


def test_forward_ad_through_fused_silu_matches_bn_then_silu(path):
    torch.manual_seed(1)
    x, t = torch.randn(8, 4, 6), torch.randn(8, 4, 6)
    fused = bnlab.nn.BatchNormAct1d(4, act="silu")
    with fwAD.dual_level():
        got = fwAD.unpack_dual(fused(fwAD.make_dual(x, t))).tangent
        want = fwAD.unpack_dual(
            F.silu(
                F.batch_norm(
                    fwAD.make_dual(x, t), None, None, fused.weight.detach(), fused.bias.detach(), training=True
                )
            )
        ).tangent
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
