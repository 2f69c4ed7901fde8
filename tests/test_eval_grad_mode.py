"""Eval output is bit-identical whatever the grad mode, and its gradients are the reference's.

Before, a forward that autograd recorded took the reference's torch operations and a no_grad
forward the kernels; about half the outputs differed in the last bits (torch's own BN gives the
same bits either way). Now both run the kernel; :class:`bnlab.core.autograd.BatchNormEval`
differentiates the reference's ops. Gradients are compared with torch's BN (float64, 1e-10) and
double backward with the reference path.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bnlab
from bnlab.core import dispatch

CASES = [
    ((8, 16, 5, 5), torch.float32, False),
    ((8, 16, 5, 5), torch.float32, True),  # channels_last
    ((64, 32), torch.float32, False),
    ((8, 16, 100), torch.float64, False),
    ((8, 16, 5, 5), torch.float16, True),
    ((8, 16, 5, 5), torch.bfloat16, False),
]


def _layer(shape, dtype, cls=None, **kw):
    torch.manual_seed(0)
    cls = cls or (bnlab.nn.BatchNorm2d if len(shape) == 4 else bnlab.nn.BatchNorm1d)
    m = cls(shape[1], **kw)
    with torch.no_grad():
        m.running_mean.uniform_(-1, 1)
        m.running_var.uniform_(0.5, 2)
        m.weight.uniform_(-2, 2)
        m.bias.uniform_(-1, 1)
    return m.to(dtype).eval()


@pytest.mark.parametrize("shape,dtype,channels_last", CASES)
@pytest.mark.parametrize("act", [None, "silu", "leaky_relu"])
def test_eval_output_bits_do_not_depend_on_grad_mode(shape, dtype, channels_last, act):
    kw = {} if act is None else {"cls": getattr(bnlab.nn, f"BatchNormAct{len(shape) - 2 or 1}d"), "act": act}
    m = _layer(shape, dtype, **kw)
    x = torch.randn(shape).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y_no_grad = m(x)
    y_params = m(x)  # the parameters require grad: autograd records
    y_input = m(x.clone().requires_grad_())
    assert y_params.requires_grad and y_input.requires_grad
    assert torch.equal(y_no_grad, y_params) and torch.equal(y_no_grad, y_input)
    assert y_params.stride() == y_no_grad.stride()


def test_recorded_eval_gradients_match_torch():
    ours = _layer((6, 4, 7), torch.float64)
    ref = nn.BatchNorm1d(4, dtype=torch.float64).eval()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(6, 4, 7, dtype=torch.float64)
    dy = torch.randn(6, 4, 7, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours(xa).backward(dy)
    ref(xb).backward(dy)
    for a, b in ((xa.grad, xb.grad), (ours.weight.grad, ref.weight.grad), (ours.bias.grad, ref.bias.grad)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_recorded_eval_double_backward_matches_the_reference():
    def grads(fast: bool):
        dispatch.set_fast(fast)
        try:
            m = _layer((6, 4, 7), torch.float64, cls=bnlab.nn.BatchNormAct1d, act="silu")
            x = torch.randn(6, 4, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
            x.requires_grad_()
            (gx,) = torch.autograd.grad(m(x).pow(2).sum(), x, create_graph=True)
            return torch.autograd.grad(gx.pow(2).sum(), [x, m.weight, m.bias])
        finally:
            dispatch.set_fast(True)

    for a, b in zip(grads(True), grads(False)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)  # silu: the kernel's exp vs torch's


@pytest.mark.parametrize("act", ["identity", "silu"])
def test_recorded_eval_passes_gradcheck_in_every_input(act):
    """Numerical derivatives (float64) of x, weight, bias and both running statistics, and of the
    gradients themselves (double backward)."""
    from bnlab import functional as F

    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 5, dtype=torch.float64, generator=gen).requires_grad_()
    w = (torch.rand(3, dtype=torch.float64, generator=gen) + 0.5).requires_grad_()
    b = torch.randn(3, dtype=torch.float64, generator=gen).requires_grad_()
    rm = torch.randn(3, dtype=torch.float64, generator=gen).requires_grad_()
    rv = (torch.rand(3, dtype=torch.float64, generator=gen) + 0.5).requires_grad_()
    m = bnlab.nn.BatchNormAct1d(3, act=act).double().eval()

    def f(x, w, b, rm, rv):
        if act == "identity":
            return F.batch_norm(x, rm, rv, w, b, training=False)
        return torch.func.functional_call(m, {"weight": w, "bias": b, "running_mean": rm, "running_var": rv}, (x,))

    assert torch.autograd.gradcheck(f, (x, w, b, rm, rv))
    assert torch.autograd.gradgradcheck(f, (x, w, b, rm, rv))
