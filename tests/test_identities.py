"""Claim C2 (docs/claims.md): the identities of the method, checked by exact computation."""

import pytest
import torch

import bnlab

LAYERS = [
    (bnlab.nn.BatchNorm1d, (16, 5)),
    (bnlab.nn.BatchNorm1d, (8, 5, 7)),
    (bnlab.nn.BatchNorm2d, (8, 5, 4, 3)),
    (bnlab.nn.BatchNorm3d, (4, 5, 3, 2, 3)),
]


@pytest.mark.parametrize("cls,shape", LAYERS)
def test_gamma_beta_have_one_entry_per_channel(cls, shape):
    bn = cls(shape[1])
    assert bn.weight.shape == bn.bias.shape == (shape[1],)
    assert bn.running_mean.shape == bn.running_var.shape == (shape[1],)


@pytest.mark.parametrize("cls,shape", LAYERS)
def test_identity_recovered_by_gamma_sqrt_var_beta_mean(cls, shape):
    """gamma = sqrt(Var[x] + eps), beta = E[x] (biased variance over N and spatial dims) gives back x."""
    x = torch.randn(shape, dtype=torch.float64) * 3 + 7
    dims = (0,) + tuple(range(2, x.dim()))
    bn = cls(shape[1], dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_((x.var(dims, unbiased=False) + bn.eps).sqrt())
        bn.bias.copy_(x.mean(dims))
    torch.testing.assert_close(bn(x), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls,shape", LAYERS)
def test_training_uses_biased_variance_and_running_var_stores_unbiased(cls, shape):
    x = torch.randn(shape, dtype=torch.float64) * 2 + 1
    dims = (0,) + tuple(range(2, x.dim()))
    m = x.numel() // x.shape[1]
    bn = cls(shape[1], momentum=1.0, affine=False, dtype=torch.float64)
    y = bn(x)
    biased = x.var(dims, unbiased=False)
    expected = (x - x.mean(dims, keepdim=True)) / (biased.view((1, -1) + (1,) * (x.dim() - 2)) + bn.eps).sqrt()
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(bn.running_var, biased * m / (m - 1), rtol=1e-13, atol=0)
    torch.testing.assert_close(bn.running_var, x.var(dims, unbiased=True), rtol=1e-13, atol=0)


def test_eval_uses_running_statistics():
    bn = bnlab.nn.BatchNorm2d(3, dtype=torch.float64).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    expected = (x - bn.running_mean.view(1, 3, 1, 1)) / (bn.running_var.view(1, 3, 1, 1) + bn.eps).sqrt()
    torch.testing.assert_close(bn(x), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("a", [0.01, 3.0, 250.0])
def test_scale_invariance_of_outputs_and_gradients(a):
    """BN((aW)u) = BN(Wu) for a > 0, and the gradient w.r.t. aW is 1/a times that w.r.t. W."""
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(32, 10, generator=gen, dtype=torch.float64)
    W = torch.randn(6, 10, generator=gen, dtype=torch.float64)
    target = torch.randn(32, 6, generator=gen, dtype=torch.float64)
    outs, grads = [], []
    for weight in (W, a * W):
        weight = weight.clone().requires_grad_()
        bn = bnlab.nn.BatchNorm1d(6, eps=0.0 + 1e-300, dtype=torch.float64)  # eps -> 0 for exactness
        y = bn(u @ weight.T)
        ((y - target) ** 2).sum().backward()
        outs.append(y.detach())
        grads.append(weight.grad)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grads[1], grads[0] / a, rtol=1e-8, atol=1e-12)
