"""bnlab's layers under torch.compile(fullgraph=True) and torch.func transforms."""

import pytest
import torch
from torch.func import functional_call, grad, jacrev, vmap

import bnlab


def _compiled_matches_eager(layer_cls, shape, training, momentum=0.1):
    torch._dynamo.reset()
    eager, compiled = layer_cls(shape[1], momentum=momentum), layer_cls(shape[1], momentum=momentum)
    eager.train(training), compiled.train(training)
    fn = torch.compile(compiled, fullgraph=True)
    for _ in range(2):
        x = torch.randn(shape) * 2 + 1
        xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
        ye, yc = eager(xe), fn(xc)
        ye.square().sum().backward()
        yc.square().sum().backward()
        torch.testing.assert_close(yc, ye, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(xc.grad, xe.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(compiled.weight.grad, eager.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(compiled.running_var, eager.running_var)
    assert int(compiled.num_batches_tracked) == int(eager.num_batches_tracked)


def test_compile_fullgraph_training_forward_backward():
    _compiled_matches_eager(bnlab.nn.BatchNorm2d, (4, 3, 5, 5), training=True)


@pytest.mark.slow
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("cls,shape", [(bnlab.nn.BatchNorm1d, (8, 3)), (bnlab.nn.BatchNorm3d, (2, 3, 2, 3, 3))])
def test_compile_fullgraph_every_layer_and_mode(cls, shape, training, momentum):
    _compiled_matches_eager(cls, shape, training, momentum)


def test_func_grad_and_vmap_in_eval_mode():
    bn = bnlab.nn.BatchNorm2d(3).eval()
    ref = torch.nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        for m in (bn, ref):
            m.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
            m.running_var.copy_(torch.tensor([2.0, 0.5, 1.5]))
            m.weight.copy_(torch.tensor([1.5, -0.5, 2.0]))
    x = torch.randn(5, 3, 4, 4)

    def loss(module, params, x):
        return functional_call(module, params, (x,)).sin().sum()

    g_ours = grad(loss, argnums=1)(bn, dict(bn.named_parameters()), x)
    g_ref = grad(loss, argnums=1)(ref, dict(ref.named_parameters()), x)
    for k in g_ref:
        torch.testing.assert_close(g_ours[k], g_ref[k])
    per_sample = vmap(lambda xi: bn(xi.unsqueeze(0)).squeeze(0))(x)
    torch.testing.assert_close(per_sample, ref(x))
    jac = jacrev(lambda xi: bn(xi))(x[:1])
    jac_ref = jacrev(lambda xi: ref(xi))(x[:1])
    torch.testing.assert_close(jac, jac_ref)


def test_func_grad_and_vmap_of_functional_training_mode():
    """Training-mode batch norm without buffers (nothing mutated) works under grad and vmap."""
    x = torch.randn(4, 6, 3, 5, dtype=torch.float64)  # 4 independent batches of (6, 3, 5)
    w = torch.rand(3, dtype=torch.float64) + 0.5

    def loss(w, xb):
        return bnlab.functional.batch_norm(xb, None, None, w, None, training=True).pow(3).sum()

    def loss_ref(w, xb):
        return torch.nn.functional.batch_norm(xb, None, None, w, None, training=True).pow(3).sum()

    torch.testing.assert_close(grad(loss)(w, x[0]), grad(loss_ref)(w, x[0]))
    torch.testing.assert_close(
        vmap(grad(loss), in_dims=(None, 0))(w, x), torch.stack([grad(loss_ref)(w, xb) for xb in x])
    )
