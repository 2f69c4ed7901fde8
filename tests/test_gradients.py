"""The closed-form backward against finite differences, first and second order (float64)."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import bnlab

SHAPES = {"1d-2D": (6, 3), "1d-3D": (3, 3, 4), "2d": (2, 3, 3, 2), "3d": (2, 3, 2, 2, 2)}


def _inputs(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(shape[1], generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
    b = torch.randn(shape[1], generator=gen, dtype=torch.float64, requires_grad=True)
    return x, w, b


@pytest.mark.parametrize("kind", sorted(SHAPES))
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_and_gradgradcheck(kind, training):
    x, w, b = _inputs(SHAPES[kind])
    rm = torch.randn(x.shape[1], dtype=torch.float64)
    rv = torch.rand(x.shape[1], dtype=torch.float64) + 0.5

    def f(x, w, b):
        return bnlab.functional.batch_norm(x, rm.clone(), rv.clone(), w, b, training=training, eps=1e-3)

    assert gradcheck(f, (x, w, b))
    assert gradgradcheck(f, (x, w, b))


def test_gradcheck_without_affine_parameters():
    x, _, _ = _inputs((4, 3, 5))
    assert gradcheck(lambda x: bnlab.functional.batch_norm(x, None, None, training=True), (x,))
    assert gradgradcheck(lambda x: bnlab.functional.batch_norm(x, None, None, training=True), (x,))


def test_gradcheck_channels_last():
    x, w, b = _inputs((2, 3, 3, 2))
    x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    assert gradcheck(lambda x, w, b: bnlab.functional.batch_norm(x, None, None, w, b, training=True), (x, w, b))


def test_double_backward_matches_torch():
    """Second derivatives (Hessian-vector product) equal torch's, not just finite differences."""
    x, w, b = _inputs((4, 3, 5), seed=1)
    v = torch.randn_like(x)
    hvps = []
    for fn in (bnlab.functional.batch_norm, torch.nn.functional.batch_norm):
        y = fn(x, None, None, w, b, True)
        (gx,) = torch.autograd.grad((y * y.detach().sin()).sum(), x, create_graph=True)
        hvps.append(torch.autograd.grad((gx * v).sum(), [x, w, b], allow_unused=True, materialize_grads=True))
    for ours, ref in zip(*hvps):
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
