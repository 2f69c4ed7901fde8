r"""Fused batch norm + residual add + activation, ``y = act(BN(x) + residual)``, as torchvision's and
timm's residual blocks end (BN, add the shortcut, ReLU).

On the Triton backend it is one autograd Function over the Triton kernels: the forward is the
statistics (with the running-average update) and one elementwise pass that reads ``x`` and the
residual and writes ``y``; the backward recomputes what it needs instead of keeping torch's
intermediate tensors. What it saves, besides the float32 (C,) statistics:

==============  ======================================  ==========================================
activation      saved                                   torch's BN + add + act saves
==============  ======================================  ==========================================
relu            x and a one-byte mask of ``z + r > 0``  x and the activation's output
leaky_relu      x and the same mask                     x and the activation's input (or output)
silu            x and the residual (z + r recomputed)   x and the activation's input
identity        x                                       x
==============  ======================================  ==========================================

so relu / leaky_relu keep (s + 1) / 2s of torch's bytes for an element size of s (0.625 for
float32, 0.75 for half types); the mask is a byte per value, not packed into bits. Without a
residual, :class:`bnlab.nn.BatchNormAct2d` keeps x alone (half of torch's pair).

Other tensors (CPU without ``BNLAB_BACKEND=triton``, float64, tracers) run the same formula in
differentiable torch operations (:mod:`bnlab.core.math`), which saves what autograd saves.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.autograd.graph import increment_version

from ..activations import activate, check_activation
from . import checks, dispatch
from . import math as M
from .backends import triton_gpu as T

__all__ = ["batch_norm_add_act"]

_MASKED = ("relu", "leaky_relu")  # act'(u) depends on the sign of u alone


class _BatchNormAddAct(torch.autograd.Function):
    """``act(BN(x) + residual)`` in training on the Triton kernels (module docstring for what it saves)."""

    @staticmethod
    def forward(ctx, x, residual, weight, bias, running_mean, running_var, momentum, eps, act, slope):
        mean, var = T.stat_vectors(x)
        mom_t, mom = (momentum, 0.0) if isinstance(momentum, Tensor) else (None, float(momentum))
        lo = torch.empty_like(mean)  # the mean's rounding, taken back in the normalization
        T.stats_into(x, mean, var, running_mean, running_var, mom_t, mom, M.count_per_channel(x), lo)
        residual = T.same_layout(residual, x)
        y = torch.empty_like(x)
        mask = torch.empty_like(x, dtype=torch.uint8) if act in _MASKED else None
        T.normalize_into(y, x, mean, var, weight, bias, eps, act, slope, residual=residual, mask=mask, lo=lo)
        gate = mask if mask is not None else residual if act != "identity" else None
        ctx.save_for_backward(x, gate, weight, bias, mean, var)
        ctx.config = (eps, act, slope)
        return y

    @staticmethod
    @once_differentiable  # the kernels' backward is not itself differentiable: double backward raises
    def backward(ctx, dy):
        x, gate, weight, bias, mean, var = ctx.saved_tensors
        eps, act, slope = ctx.config
        dy = T.same_layout(dy, x)
        mask = gate if act in _MASKED else None
        residual = gate if act not in _MASKED else None
        needs = ctx.needs_input_grad
        dw = torch.empty_like(weight) if weight is not None and needs[2] else None
        db = torch.empty_like(bias) if bias is not None and needs[3] else None
        sg, sgx = T.backward_sums(dy, x, weight, bias, mean, var, eps, act, slope, dw, db, residual, mask)
        dr = torch.empty_like(x) if needs[1] else None
        m = M.count_per_channel(x)
        dx = T.backward_dx(dy, x, weight, bias, mean, var, eps, act, slope, sg, sgx, 1.0 / m, residual, mask, dr)
        return dx, dr, dw, db, None, None, None, None, None, None


def batch_norm_add_act(
    input: Tensor,
    residual: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float | Tensor = 0.1,
    eps: float = 1e-5,
    act: str = "relu",
    negative_slope: float = 0.01,
) -> Tensor:
    """``act(batch_norm(input, ...) + residual)``, the arguments as :func:`bnlab.functional.batch_norm`'s.

    Args:
        residual: a tensor of ``input``'s shape and dtype, added after the affine map.
        act: ``"identity"``, ``"relu"``, ``"leaky_relu"`` or ``"silu"``. Default: ``"relu"``.
        negative_slope: ``leaky_relu``'s slope. Default: ``0.01``.

    Returns:
        Tensor of ``input``'s shape, dtype and memory format.
    """
    check_activation(act, negative_slope)
    checks.check_batch_norm_call(input, running_mean, running_var, weight, bias, training, momentum, eps)
    if not isinstance(residual, Tensor) or residual.shape != input.shape:
        got = tuple(residual.shape) if isinstance(residual, Tensor) else type(residual).__name__
        raise ValueError(f"expected a residual of the input's shape {tuple(input.shape)} (got {got})")
    if residual.dtype != input.dtype:
        raise TypeError(f"expected a residual of the input's dtype {input.dtype} (got {residual.dtype})")
    if not training:
        assert running_mean is not None and running_var is not None  # check_batch_norm_call refused None in eval
        z = M.eval_normalize(input, running_mean, running_var, weight, bias, eps)
        return M.output_layout(activate(z + residual, act, negative_slope), input)
    backend = dispatch.select(input, weight, bias, running_mean, running_var)
    if backend is dispatch.TRITON and residual.device == input.device:
        y = _BatchNormAddAct.apply(
            input, residual, weight, bias, running_mean, running_var, momentum, eps, act, float(negative_slope)
        )
        buffers = [t for t in (running_mean, running_var) if t is not None]
        if buffers:  # updated in place by the statistics kernel
            increment_version(buffers)
        return M.output_layout(y, input)
    mean, var = M.batch_stats(input)
    count = M.count_per_channel(input)
    M.update_running_stats(running_mean, running_var, mean.detach(), var.detach(), count, momentum)
    z = M.normalize(input, mean, torch.rsqrt(var + eps), weight, bias)
    return M.output_layout(activate(z + residual, act, negative_slope), input)
