r"""Batch Renormalization: batch norm whose training output agrees with its eval output.

Ioffe, "Batch Renormalization: Towards Reducing Minibatch Dependence in Batch-Normalized Models",
NeurIPS 2017 (https://arxiv.org/abs/1702.03275), Algorithm 1.

With the batch mean and biased variance :math:`\mu_B, \sigma_B^2` and the running statistics
:math:`\mu, \sigma^2` (before this batch's update), :math:`\sigma_B = \sqrt{\sigma_B^2+\epsilon}`,
:math:`\sigma = \sqrt{\sigma^2+\epsilon}`:

.. math::
    r = \mathrm{clip}_{[1/r_{max},\, r_{max}]}\!\left(\frac{\sigma_B}{\sigma}\right), \quad
    d = \mathrm{clip}_{[-d_{max},\, d_{max}]}\!\left(\frac{\mu_B - \mu}{\sigma}\right), \quad
    y = \gamma \left(\frac{x - \mu_B}{\sigma_B} r + d\right) + \beta

r and d are treated as constants in backprop (``stop_gradient`` in the paper). Unclipped, the
training output equals :math:`\gamma (x - \mu)/\sigma + \beta`, the eval output. With
``r_max = 1, d_max = 0`` it is exactly batch norm, outputs and gradients.

Implementation: since r and d are constants, the layer *is* batch norm with the affine parameters
:math:`\gamma r` and :math:`\gamma d + \beta`; it runs the engine's training operation with a
function that turns the batch statistics into those parameters, so the statistics are computed
once (on the fast kernels where plain BN runs them), and the gradients of x, :math:`\gamma` and
:math:`\beta` follow from the one closed-form backward and autograd through the two products.

Running statistics: PyTorch's convention (momentum = weight of the new batch, running variance
= unbiased batch variance), not the paper's moving average of :math:`\sigma`; eval is plain BN
with them. The layer needs them in training, so ``track_running_stats`` must be ``True``.

Schedule: the paper starts with :math:`r_{max}=1, d_{max}=0` (plain BN) while the running
statistics settle, then relaxes the limits; :func:`renorm_warmup` gives its ImageNet schedule and
:func:`set_renorm_limits` applies limits to every layer of a model, e.g. once per step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core import checks, ops
from .batchnorm import _BatchNorm

__all__ = ["BatchRenorm1d", "BatchRenorm2d", "BatchRenorm3d", "compressed_warmup", "renorm_warmup", "set_renorm_limits"]


def _check_limits(r_max: float, d_max: float) -> None:
    for name, value in (("r_max", r_max), ("d_max", d_max)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise TypeError(f"expected a number for {name} (got {value!r})")
    if r_max < 1:
        raise ValueError(f"expected r_max >= 1 (got {r_max})")
    if d_max < 0:
        raise ValueError(f"expected d_max >= 0 (got {d_max})")


class _BatchRenorm(_BatchNorm):
    _not_scriptable = "Batch Renorm's r/d correction and its warm-up"

    def __init__(
        self,
        num_features: int,
        r_max: float = 3.0,
        d_max: float = 5.0,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
        warmup_steps: int = 0,
    ) -> None:
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"expected warmup_steps as an int >= 0 (got {warmup_steps!r})")
        if not track_running_stats:
            raise ValueError(
                "expected track_running_stats=True: Batch Renorm corrects the batch statistics towards "
                "the running ones (got track_running_stats=False)"
            )
        _check_limits(r_max, d_max)
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self._r_max, self._d_max = float(r_max), float(d_max)
        self.warmup_steps = warmup_steps

    @property
    def r_max(self) -> float:
        """Upper clip of r (>= 1); r is clipped to [1/r_max, r_max]. Settable between steps."""
        return self._r_max

    @r_max.setter
    def r_max(self, value: float) -> None:
        _check_limits(value, self._d_max)
        self._r_max = float(value)

    @property
    def d_max(self) -> float:
        """Clip of d (>= 0); d is clipped to [-d_max, d_max]. Settable between steps."""
        return self._d_max

    @d_max.setter
    def d_max(self, value: float) -> None:
        _check_limits(self._r_max, value)
        self._d_max = float(value)

    def limits(self) -> tuple[float, float]:
        """The ``(r_max, d_max)`` the next training forward uses: the final ones, or with
        ``warmup_steps`` the compressed warm-up at this layer's ``num_batches_tracked``."""
        if not self.warmup_steps:
            return self._r_max, self._d_max
        assert self.num_batches_tracked is not None  # Batch Renorm requires track_running_stats=True
        return compressed_warmup(int(self.num_batches_tracked), self.warmup_steps, self._r_max, self._d_max)

    def extra_repr(self) -> str:
        warm = f", warmup_steps={self.warmup_steps}" if self.warmup_steps else ""
        return f"{super().extra_repr()}, r_max={self.r_max}, d_max={self.d_max}{warm}"

    def _normalize(self, input, running_mean, running_var, use_batch_stats, momentum) -> Tensor:
        if not use_batch_stats:
            return super()._normalize(input, running_mean, running_var, use_batch_stats, momentum)
        checks.check_batch_size(input)
        r_max, d_max = self.limits()  # num_batches_tracked already counts this batch (1-based step)
        weight, bias, eps = self.weight, self.bias, self.eps

        def corrected_affine(mean_b: Tensor, var_b: Tensor):
            """gamma * r and gamma * d + beta from the batch and the running statistics (before
            this batch's update); r and d carry no gradient."""
            sigma = torch.sqrt(running_var.to(var_b.dtype) + eps)
            r = (torch.sqrt(var_b + eps) / sigma).clamp(1 / r_max, r_max)
            d = ((mean_b - running_mean.to(mean_b.dtype)) / sigma).clamp(-d_max, d_max)
            if weight is None:  # gamma = 1, beta = 0
                return r.to(input.dtype), d.to(input.dtype)
            eff_bias = weight * d.to(weight.dtype)
            return weight * r.to(weight.dtype), eff_bias if bias is None else eff_bias + bias

        return ops.train(
            input, weight, bias, running_mean, running_var, momentum, eps, affine_from_stats=corrected_affine
        )[0]


_CLASS_DOC = """Batch Renorm over {shape} input; see :mod:`bnlab.nn.renorm` for the math and schedule.

    Args:
        num_features: channels C.
        r_max: r is clipped to [1/r_max, r_max]; >= 1. Default: 3.0 (the paper's final value)
        d_max: d is clipped to [-d_max, d_max]; >= 0. Default: 5.0 (the paper's final value)
        warmup_steps: 0 keeps r_max, d_max fixed; N > 0 makes the layer follow the paper's
            warm-up compressed to N training steps (:func:`compressed_warmup`, counted by
            num_batches_tracked), ending at r_max, d_max. Default: 0
        eps, momentum, affine, bias: as :class:`bnlab.nn.BatchNorm2d` (momentum is the weight of
            the new batch; default 0.1). ``track_running_stats`` must stay ``True``.

    Examples::

        >>> m = bnlab.nn.{name}(64, r_max=1.0, d_max=0.0)   # plain BN until relaxed
        >>> m.r_max, m.d_max = renorm_warmup(step)
    """


class BatchRenorm1d(_BatchRenorm, nn.BatchNorm1d):
    _input_dims = (2, 3)


class BatchRenorm2d(_BatchRenorm, nn.BatchNorm2d):
    _input_dims = (4,)


class BatchRenorm3d(_BatchRenorm, nn.BatchNorm3d):
    _input_dims = (5,)


BatchRenorm1d.__doc__ = _CLASS_DOC.format(shape="(N, C) or (N, C, L)", name="BatchRenorm1d")
BatchRenorm2d.__doc__ = _CLASS_DOC.format(shape="(N, C, H, W)", name="BatchRenorm2d")
BatchRenorm3d.__doc__ = _CLASS_DOC.format(shape="(N, C, D, H, W)", name="BatchRenorm3d")


def renorm_warmup(
    step: int,
    r_max: float = 3.0,
    d_max: float = 5.0,
    hold_steps: int = 5000,
    r_max_step: int = 40000,
    d_max_step: int = 25000,
) -> tuple[float, float]:
    """``(r_max, d_max)`` at ``step`` under the paper's warm-up (section 4.1, Inception/ImageNet).

    r_max = 1 and d_max = 0 (plain BN) for the first ``hold_steps`` steps, then each rises linearly
    to its final value, reached at ``r_max_step`` and ``d_max_step`` and kept after. The paper's
    numbers (5k, 40k, 25k steps of a 50-batch run) are the defaults; scale the steps to your run.
    """
    if not hold_steps <= min(r_max_step, d_max_step):
        raise ValueError(
            f"expected hold_steps <= r_max_step and d_max_step (got {hold_steps}, {r_max_step}, {d_max_step})"
        )
    _check_limits(r_max, d_max)

    def ramp(final: float, start: float, end_step: int) -> float:
        if step <= hold_steps:
            return start
        if step >= end_step:
            return final
        return start + (final - start) * (step - hold_steps) / (end_step - hold_steps)

    return ramp(r_max, 1.0, r_max_step), ramp(d_max, 0.0, d_max_step)


def set_renorm_limits(model: nn.Module, r_max: float, d_max: float) -> int:
    """Set r_max and d_max on every Batch Renorm layer in ``model``; returns how many were set."""
    _check_limits(r_max, d_max)
    layers = [m for m in model.modules() if isinstance(m, _BatchRenorm)]
    for m in layers:
        m.r_max, m.d_max = r_max, d_max
    return len(layers)


def compressed_warmup(step: int, warmup_steps: int, r_max: float = 3.0, d_max: float = 5.0) -> tuple[float, float]:
    """:func:`renorm_warmup` with the paper's proportions compressed to ``warmup_steps`` steps.

    The paper holds plain BN for 5k steps and reaches r_max at 40k, d_max at 25k; here plain BN
    lasts ``warmup_steps / 8`` steps, d_max is reached at ``5 * warmup_steps / 8`` and r_max at
    ``warmup_steps``.
    """
    if warmup_steps < 1:
        raise ValueError(f"expected warmup_steps >= 1 (got {warmup_steps})")
    return renorm_warmup(
        step,
        r_max,
        d_max,
        hold_steps=warmup_steps // 8,
        r_max_step=warmup_steps,
        d_max_step=max(warmup_steps // 8, 5 * warmup_steps // 8),
    )
