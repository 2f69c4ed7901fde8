r"""BatchNormAct1d/2d/3d: batch norm and an activation in one layer, with a memory-saving backward.

.. math::
    y = \mathrm{act}\!\left(\frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}}\gamma + \beta\right)

BN followed by an activation, as two torch layers, keeps two tensors of the input's size for
backward: BN keeps its input x, the activation its own input or output. The fused layer keeps only
x (plus four (C,) vectors) and recomputes, in backward, the pre-activation ``z`` and from it the
activation's derivative (:mod:`bnlab.activations`); the BN part of the backward is the closed
form of :mod:`bnlab.functional`. Gradients equal those of BN followed by the activation.

**In-place activated BN** (Rota Bulò, Porzi & Kontschieder, "In-Place Activated BatchNorm for
Memory-Optimized Training of DNNs", CVPR 2018): for an invertible activation (``leaky_relu`` with a
positive slope, ``identity``) ``save_output=True`` keeps the *output* y instead of x and recovers
:math:`z = \mathrm{act}^{-1}(y)` and :math:`x = (z - \beta)/(\gamma \cdot invstd) + \mu` in backward.
The saved bytes are the same, but y is usually also saved by the next layer (a conv keeps its
input), so the two share one tensor and x can be freed after the forward. It needs every
:math:`\gamma \ne 0` (checked, one host sync per training forward) and costs some precision
(x is reconstructed).

The conventions are BN's (:mod:`bnlab.functional`): biased variance to normalize, unbiased in
the running variance, momentum the weight of the new batch. The layers subclass bnlab's BN base,
so plain BatchNorm state_dicts load. Eval mode is BN with running statistics, then the activation.

:class:`_BatchNormActTrain` calls exactly one function in forward and one in backward,
:func:`bnlab.kernels.dispatch.bn_act_train_forward` / ``bn_act_train_backward``: the fused CPU
kernel where it applies, else the pure-torch reference.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import functional as F
from ..activations import INVERTIBLE, activate, check_activation, invert
from ..kernels import dispatch
from .batchnorm import _BatchNorm

__all__ = ["BatchNormAct1d", "BatchNormAct2d", "BatchNormAct3d"]


# The two functions the Function below calls: the dispatch picks the fused kernel or the torch
# reference (which recomputes the pre-activation from x in backward).
_FORWARD = dispatch.bn_act_train_forward
_BACKWARD = dispatch.bn_act_train_backward


def _input_from_output(y, weight, bias, mean, var, eps, act, negative_slope) -> Tensor:
    """In-place ABN: x = (act^-1(y) - beta) / (gamma * invstd) + mean."""
    shape = F.channel_shape(y)
    z = invert(y.to(mean.dtype), act, negative_slope)
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight.to(scale.dtype)
    if bias is not None:
        z = z - bias.to(z.dtype).view(shape)
    return (z / scale.view(shape) + mean.view(shape)).to(y.dtype)


class _BatchNormActTrain(torch.autograd.Function):
    """Returns (y, mean, var); saves x (or y with ``save_output``) and four (C,) vectors."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float, act: str, negative_slope: float, save_output: bool):
        y, mean, var = _FORWARD(x, weight, bias, eps, act, negative_slope)
        ctx.save_for_backward(y if save_output else x, weight, bias, mean, var)
        ctx.config = (eps, act, negative_slope, save_output)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        saved, weight, bias, mean, var = ctx.saved_tensors
        eps, act, negative_slope, save_output = ctx.config
        if save_output:
            if torch.is_grad_enabled():
                raise RuntimeError("double backward is not supported by BatchNormAct with save_output=True")
            x = _input_from_output(saved, weight, bias, mean, var, eps, act, negative_slope)
        else:
            x = saved
            if torch.is_grad_enabled():
                # Double backward: statistics as differentiable functions of x (as BatchNormTrain).
                mean, var = F.batch_stats(x)
        dx, dweight, dbias = _BACKWARD(
            dy, x, weight, bias, mean, var, eps, act, negative_slope, tuple(ctx.needs_input_grad[:3])
        )
        return (
            dx,
            dweight if ctx.needs_input_grad[1] else None,
            dbias if ctx.needs_input_grad[2] else None,
            None, None, None, None,
        )


class _BatchNormAct(_BatchNorm):
    def __init__(
        self,
        num_features: int,
        act: str = "relu",
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
        negative_slope: float = 0.01,
        save_output: bool = False,
    ) -> None:
        check_activation(act, negative_slope)
        if save_output and not (act in INVERTIBLE and (act != "leaky_relu" or negative_slope > 0)):
            raise ValueError(
                f"save_output=True needs an invertible activation ({', '.join(INVERTIBLE)} with "
                f"negative_slope > 0) (got act={act!r}, negative_slope={negative_slope})"
            )
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.act = act
        self.negative_slope = negative_slope
        self.save_output = save_output

    def extra_repr(self) -> str:
        extra = f", negative_slope={self.negative_slope}" if self.act == "leaky_relu" else ""
        extra += ", save_output=True" if self.save_output else ""
        return f"{super().extra_repr()}, act={self.act!r}{extra}"

    def _normalize(self, input, running_mean, running_var, use_batch_stats, momentum) -> Tensor:
        if not use_batch_stats:
            z = super()._normalize(input, running_mean, running_var, use_batch_stats, momentum)
            return activate(z, self.act, self.negative_slope)
        F.check_batch_size(input)
        if self.save_output and self.weight is not None and bool((self.weight == 0).any()):
            raise ValueError("save_output=True needs every weight (gamma) != 0 to invert BN (got a zero weight)")
        y, mean, var = _BatchNormActTrain.apply(
            input, self.weight, self.bias, self.eps, self.act, self.negative_slope, self.save_output
        )
        if running_mean is not None or running_var is not None:
            F.update_running_stats(running_mean, running_var, mean, var, F.count_per_channel(input), momentum)
        return y


_CLASS_DOC = """BN followed by an activation over {shape} input, in one layer (see :mod:`bnlab.nn.norm_act`).

    Args:
        num_features: channels C.
        act: one of "identity", "relu", "leaky_relu", "silu". Default: "relu"
        eps, momentum, affine, track_running_stats, bias: as :class:`bnlab.nn.BatchNorm2d`
            (momentum is the weight of the new batch; default 0.1; eps default 1e-5).
        negative_slope: the slope of leaky_relu for z < 0. Default: 0.01
        save_output: keep the output instead of the input for backward (in-place ABN; needs an
            invertible activation and nonzero weights). Default: ``False``

    Examples::

        >>> m = bnlab.nn.{name}(64, act="silu")
        >>> m.load_state_dict(torch.nn.{bn}(64).state_dict())   # plain BN checkpoints load
    """


class BatchNormAct1d(_BatchNormAct):
    _input_dims = (2, 3)


class BatchNormAct2d(_BatchNormAct):
    _input_dims = (4,)


class BatchNormAct3d(_BatchNormAct):
    _input_dims = (5,)


BatchNormAct1d.__doc__ = _CLASS_DOC.format(shape="(N, C) or (N, C, L)", name="BatchNormAct1d", bn="BatchNorm1d")
BatchNormAct2d.__doc__ = _CLASS_DOC.format(shape="(N, C, H, W)", name="BatchNormAct2d", bn="BatchNorm2d")
BatchNormAct3d.__doc__ = _CLASS_DOC.format(shape="(N, C, D, H, W)", name="BatchNormAct3d", bn="BatchNorm3d")
