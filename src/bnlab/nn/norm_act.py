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

The layer runs the same engine operations as plain batch norm (:mod:`bnlab.core.ops`) with the
activation named, so it takes the fused kernels wherever plain BN takes the fast ones; the
in-place ABN inversion is in :mod:`bnlab.core.autograd`.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..activations import INVERTIBLE, activate, check_activation
from ..core import checks, ops
from .batchnorm import _BatchNorm
from .export_graph import TORCH_ACTIVATIONS, recorded_as

__all__ = ["BatchNormAct1d", "BatchNormAct2d", "BatchNormAct3d"]


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
        act, slope = self.act, self.negative_slope
        if not use_batch_stats:
            return ops.evaluate(input, running_mean, running_var, self.weight, self.bias, self.eps, act, slope)
        checks.check_batch_size(input)
        if self.save_output and self.weight is not None and bool((self.weight == 0).any()):
            raise ValueError("save_output=True needs every weight (gamma) != 0 to invert BN (got a zero weight)")
        return ops.train(
            input,
            self.weight,
            self.bias,
            running_mean,
            running_var,
            momentum,
            self.eps,
            act,
            slope,
            save_output=self.save_output,
        )[0]

    def _script_activation(self, y: Tensor) -> Tensor:
        # scripted: autograd differentiates the activation (no saved-output inversion)
        return activate(y, self.act, self.negative_slope)

    def _exported_activation(self, y: Tensor) -> Tensor:
        # recorded as torch's activation module, as the same model with BN and an activation records it
        torch_act = TORCH_ACTIVATIONS.get(self.act)
        if torch_act is None:  # identity: nothing to record
            return self._script_activation(y)
        with recorded_as(self, torch_act):
            return self._script_activation(y)


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


class BatchNormAct1d(_BatchNormAct, nn.BatchNorm1d):
    _input_dims = (2, 3)


class BatchNormAct2d(_BatchNormAct, nn.BatchNorm2d):
    _input_dims = (4,)


class BatchNormAct3d(_BatchNormAct, nn.BatchNorm3d):
    _input_dims = (5,)


BatchNormAct1d.__doc__ = _CLASS_DOC.format(shape="(N, C) or (N, C, L)", name="BatchNormAct1d", bn="BatchNorm1d")
BatchNormAct2d.__doc__ = _CLASS_DOC.format(shape="(N, C, H, W)", name="BatchNormAct2d", bn="BatchNorm2d")
BatchNormAct3d.__doc__ = _CLASS_DOC.format(shape="(N, C, D, H, W)", name="BatchNormAct3d", bn="BatchNorm3d")
