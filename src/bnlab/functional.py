r"""Batch normalization as functions: ``torch.nn.functional.batch_norm``'s interface, and the math.

* :func:`batch_norm` -- ``torch.nn.functional.batch_norm``'s semantics, on bnlab's engine
  (:mod:`bnlab.core`): the arguments are checked once, then the dispatch picks the fast kernels or
  the torch reference;
* the math it is built from, plain functions in torch operations (:mod:`bnlab.core.math`):
  :func:`batch_stats` (per-channel mean and *biased* variance, two-pass, accumulated in float32
  for half types), :func:`normalize`, :func:`backward_reduce` / :func:`backward_elemt` (the
  closed-form backward, split where a cross-process reduction goes), :func:`update_running_stats`,
  :func:`eval_affine`, :func:`local_moments` / :func:`combine_moments` (statistics of parts).

Conventions (the same as PyTorch's):

* **Variance.** Training normalizes with the biased batch variance ``sum((x-mean)^2) / m`` where
  ``m = N * spatial size``; the running variance accumulates the unbiased one, ``var * m/(m-1)``.
* **Momentum.** ``running = (1 - momentum) * running + momentum * batch_stat``: momentum is the
  weight of the *new* batch (PyTorch's 0.1), not the decay of the old value (Keras' and Flax's
  0.99). A momentum given as a 0-dim tensor is accepted, which the layers use for the cumulative
  average (``momentum=None``) without a host sync.

The backward, with ``xhat = (x - mean) * invstd`` and sums over the ``m`` elements of a channel::

    dbias   = sum(dy)
    dweight = sum(dy * xhat)
    dx      = weight * invstd * (dy - sum(dy)/m - xhat * sum(dy * xhat)/m)

docs/backward.md derives it. The reference writes it in differentiable torch operations on the
saved input, so double backward (gradgradcheck) differentiates the closed form itself; the fast
kernels compute the same two sums and the same elementwise formula in two passes.
"""

from __future__ import annotations

from torch import Tensor

from .core import ops
from .core.checks import check_batch_norm_call, check_batch_size, check_hyperparameters, check_input
from .core.fused import batch_norm_add_act
from .core.math import (
    acc_dtype,
    backward_elemt,
    backward_reduce,
    batch_stats,
    channel_shape,
    combine_moments,
    count_per_channel,
    eval_affine,
    local_moments,
    normalize,
    param_grads,
    reduce_dims,
    update_running_stats,
)

__all__ = [
    "batch_norm",
    "batch_stats",
    "normalize",
    "backward_reduce",
    "backward_elemt",
    "param_grads",
    "update_running_stats",
    "eval_affine",
    "local_moments",
    "combine_moments",
    "reduce_dims",
    "channel_shape",
    "acc_dtype",
    "count_per_channel",
    "check_input",
    "check_batch_size",
    "check_hyperparameters",
    "batch_norm_add_act",
]


def _as_vector(t: Tensor | None) -> Tensor | None:
    return t if t is None or t.dim() == 1 else t.view(-1)  # a view: in-place updates reach the caller's tensor


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float | Tensor = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    r"""Batch normalization with ``torch.nn.functional.batch_norm``'s semantics.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

    Args:
        input: ``(N, C, *)`` floating-point tensor.
        running_mean, running_var: (C,) buffers. In training they are updated in place when given
            (running_var with the unbiased batch variance); in eval they are required and used.
        weight, bias: optional (C,) affine parameters :math:`\gamma`, :math:`\beta`.
        training: normalize with the batch statistics (biased variance). Default: ``False``.
        momentum: weight of the new batch in the running average. Default: ``0.1``.
        eps: added to the variance for stability. Default: ``1e-5``.

    Returns:
        Tensor of ``input``'s shape, dtype and memory format.
    """
    check_batch_norm_call(input, running_mean, running_var, weight, bias, training, momentum, eps)
    # torch takes any shape with C elements, e.g. (C, 1): the engine takes (C,) views of them
    running_mean, running_var, weight, bias = (_as_vector(t) for t in (running_mean, running_var, weight, bias))
    if training:
        return ops.train(input, weight, bias, running_mean, running_var, momentum, eps)[0]
    assert running_mean is not None and running_var is not None  # check_batch_norm_call: eval needs them
    return ops.evaluate(input, running_mean, running_var, weight, bias, eps)
