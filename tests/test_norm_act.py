"""BatchNormAct against torch's BatchNorm followed by torch's activation; saved-for-backward bytes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnlab.nn import BatchNormAct1d, BatchNormAct2d

TOL = dict(rtol=1e-10, atol=1e-10)  # float64: only summation order differs
TORCH_ACT = {
    "identity": nn.Identity(),
    "relu": nn.ReLU(),
    "leaky_relu": nn.LeakyReLU(0.2),
    "silu": nn.SiLU(),
}


def _pair(act, cls, c, **kw):
    """bnlab's fused layer and torch's BN + activation with the same parameters."""
    torch.manual_seed(0)
    fused = cls(c, act, negative_slope=0.2, dtype=torch.float64, **kw)
    with torch.no_grad():
        fused.weight.uniform_(0.5, 1.5)
        fused.bias.uniform_(-1, 1)
    bn = {BatchNormAct1d: nn.BatchNorm1d, BatchNormAct2d: nn.BatchNorm2d}[cls](c, dtype=torch.float64)
    bn.load_state_dict(fused.state_dict())
    return fused, nn.Sequential(bn, TORCH_ACT[act])


def _check_train_step(fused, ref, x, tol):
    g = torch.randn_like(x)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = fused(xa), ref(xb)
    torch.testing.assert_close(ya, yb, **tol)
    ya.backward(g), yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, **tol)
    torch.testing.assert_close(fused.weight.grad, ref[0].weight.grad, **tol)
    torch.testing.assert_close(fused.bias.grad, ref[0].bias.grad, **tol)
    torch.testing.assert_close(fused.running_var, ref[0].running_var, **tol)


@pytest.mark.parametrize("act", list(TORCH_ACT))
@pytest.mark.parametrize("cls, shape", [(BatchNormAct2d, (6, 3, 4, 5)), (BatchNormAct1d, (9, 4))])
def test_outputs_and_gradients_equal_bn_followed_by_the_activation(act, cls, shape):
    fused, ref = _pair(act, cls, shape[1])
    torch.manual_seed(1)
    for step in range(2):
        _check_train_step(fused, ref, torch.randn(shape, dtype=torch.float64) * 2 + step, TOL)
    fused.eval(), ref.eval()
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(fused(x), ref(x), **TOL)


def test_relu_gradient_at_exact_zero_pre_activation_matches_torch():
    fused, ref = _pair("relu", BatchNormAct1d, 2)
    with torch.no_grad():
        fused.bias.zero_(), ref[0].bias.zero_()
    x = torch.tensor([[-1.0, 2.0], [0.0, 3.0], [1.0, 4.0]], dtype=torch.float64)  # z = 0 in the middle row
    _check_train_step(fused, ref, x, TOL)


@pytest.mark.parametrize("act", ["leaky_relu", "identity"])
def test_in_place_abn_saving_only_the_output_gives_the_same_gradients(act):
    fused, ref = _pair(act, BatchNormAct2d, 3, save_output=True)
    torch.manual_seed(2)
    # x is rebuilt from y in backward, which costs a few ulps: 1e-9 in float64
    _check_train_step(fused, ref, torch.randn(5, 3, 4, 4, dtype=torch.float64), dict(rtol=1e-9, atol=1e-9))


def test_double_backward_of_the_recomputing_backward():
    torch.manual_seed(3)
    layer = BatchNormAct2d(2, "silu", dtype=torch.float64)
    x = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: layer(t), (x,))


def _saved_bytes(module, x) -> tuple[int, int]:
    """Bytes autograd keeps for backward, counted once per storage, as (tensors of x's size or
    larger, smaller ones). The module's parameters and buffers (which exist anyway) are left out,
    so this is the activation memory of the layer."""
    own = {t.untyped_storage().data_ptr() for t in list(module.parameters()) + list(module.buffers())}
    seen = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in own:
            seen[ptr] = (t.numel() >= x.numel(), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x.clone().requires_grad_())
    big = sum(n for is_big, n in seen.values() if is_big)
    return big, sum(n for _, n in seen.values()) - big


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "silu"])
def test_saved_bytes_are_half_of_torch_bn_plus_activation(act):
    fused, ref = _pair(act, BatchNormAct2d, 8)
    fused.float(), ref.float()
    x = torch.randn(16, 8, 16, 16)
    (ours, ours_stats), (theirs, theirs_stats) = _saved_bytes(fused, x), _saved_bytes(ref, x)
    assert theirs == 2 * x.numel() * 4  # torch keeps x and the activation's input or output
    assert ours == x.numel() * 4  # the fused layer keeps x only
    # plus the batch mean and variance, (C,) each, as torch keeps its mean and invstd
    assert ours_stats == theirs_stats == 2 * 8 * 4


def test_plain_bn_checkpoints_load_and_bad_configurations_are_refused():
    layer = BatchNormAct2d(4, "silu")
    layer.load_state_dict(nn.BatchNorm2d(4).state_dict())  # strict
    with pytest.raises(ValueError, match=r"expected act to be one of identity, relu, leaky_relu, silu \(got 'gelu'\)"):
        BatchNormAct2d(4, "gelu")
    with pytest.raises(ValueError, match="invertible activation"):
        BatchNormAct2d(4, "relu", save_output=True)
    with pytest.raises(ValueError, match="negative_slope > 0"):
        BatchNormAct2d(4, "leaky_relu", negative_slope=0.0, save_output=True)
    layer = BatchNormAct2d(4, "leaky_relu", save_output=True)
    with torch.no_grad():
        layer.weight[1] = 0
    with pytest.raises(ValueError, match="weight"):
        layer(torch.randn(2, 4, 3, 3))
