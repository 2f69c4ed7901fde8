"""The operations the layers call: training-mode and eval-mode batch norm (+ activation).

Each asks the dispatch once (:mod:`bnlab.core.dispatch`) and runs its primitives on the answer.
The input and the hyperparameters are the caller's to check (the layer, or
:func:`bnlab.functional.batch_norm`, with :mod:`bnlab.core.checks`); the per-channel tensors are
checked by the dispatch as it inspects them, before any backend sees them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.autograd import forward_ad

from . import dispatch
from . import math as M
from .autograd import BatchNormEval, apply_train
from .backends import Running

__all__ = ["train", "evaluate", "stats", "update_running_stats"]

# (mean, var) of the batch -> (weight, bias) to normalize with (Batch Renorm's corrected affine map)
AffineFromStats = Callable[[Tensor, Tensor], tuple[Tensor | None, Tensor | None]]


def train(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    momentum: float | Tensor,
    eps: float,
    act: str = "identity",
    slope: float = 0.0,
    *,
    save_output: bool = False,
    affine_from_stats: AffineFromStats | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``act(BN(x))`` with batch statistics: ``(y, mean, biased var)``; the running statistics,
    when given, are updated in place (unbiased variance, ``momentum`` the weight of the batch).

    ``affine_from_stats``: called with the batch statistics (computed once, without autograd)
    before normalizing; it returns the weight and bias to normalize with. Batch Renorm passes its
    r/d correction here.
    """
    backend = dispatch.select(x, weight, bias, running_mean, running_var)
    if backend.traced and torch.jit.is_tracing():
        # A jit trace records autograd Functions as Python calls, which cannot be saved: record the
        # reference's torch operations themselves (autograd differentiates them).
        return _train_without_function(
            x, weight, bias, running_mean, running_var, momentum, eps, act, slope, affine_from_stats, backend
        )
    count = M.count_per_channel(x)
    update = count > 0 and (running_mean is not None or running_var is not None)
    running = Running(running_mean, running_var, count, momentum) if update and backend.fuses_update else None
    mean = var = None
    if affine_from_stats is not None:
        with torch.no_grad():
            mean, var = backend.stats(x)
        weight, bias = affine_from_stats(mean, var)
    y, mean, var = apply_train(x, weight, bias, mean, var, eps, act, slope, backend, running, save_output)
    if update and running is None:
        backend.update_running_stats(running_mean, running_var, mean, var, count, momentum)
    return M.output_layout(y, x), mean, var


def _train_without_function(
    x, weight, bias, running_mean, running_var, momentum, eps, act, slope, affine_from_stats, backend
):
    mean, var = M.batch_stats(x)
    if affine_from_stats is not None:
        weight, bias = affine_from_stats(mean.detach(), var.detach())
    y = backend.normalize(x, mean, var, weight, bias, eps, act, slope)
    count = M.count_per_channel(x)
    if count > 0 and (running_mean is not None or running_var is not None):
        M.update_running_stats(running_mean, running_var, mean.detach(), var.detach(), count, momentum)
    return M.output_layout(y, x), mean.detach(), var.detach()


def evaluate(
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    act: str = "identity",
    slope: float = 0.0,
) -> Tensor:
    """``act(BN(x))`` with the running statistics (differentiable where autograd records a graph:
    the fast backend's output through :class:`~bnlab.core.autograd.BatchNormEval`, so the values do
    not depend on grad mode; the reference under forward-mode AD, whose tangents it carries)."""
    backend = dispatch.select_eval(x, running_mean, running_var, weight, bias)
    if (
        not backend.traced
        and backend is not dispatch.REFERENCE
        and _records(x, running_mean, running_var, weight, bias)
    ):
        if forward_ad._current_level >= 0:
            backend = dispatch.REFERENCE
        else:
            y = BatchNormEval.apply(x, running_mean, running_var, weight, bias, eps, act, slope, backend)
            return M.output_layout(y, x)
    return M.output_layout(backend.eval(x, running_mean, running_var, weight, bias, eps, act, slope), x)


def _records(*tensors: Tensor | None) -> bool:
    """Whether autograd records a graph for an operation on ``tensors``."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(mean, biased var)`` of the batch ``x`` ``(N, C, *)``, per channel, in the accumulation dtype."""
    return dispatch.select(x).stats(x)


def update_running_stats(
    running_mean: Tensor | None,
    running_var: Tensor | None,
    mean: Tensor,
    var: Tensor,
    count: int,
    momentum: float | Tensor,
) -> None:
    """The running-statistics update alone, for batch statistics a layer combined itself (ghosts)."""
    if count <= 0 or (running_mean is None and running_var is None):
        return
    backend = dispatch.select_update(mean, var, running_mean, running_var)
    backend.update_running_stats(running_mean, running_var, mean, var, count, momentum)
