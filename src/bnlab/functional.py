r"""The batch-normalization math, written once.

Everything in bnlab that normalizes (the layers, the variants, the fast kernels' reference) is built
from the plain functions in this file:

* :func:`batch_stats` -- per-channel mean and *biased* variance, two-pass (no E[x^2]-E[x]^2),
  accumulated in float32 for half types;
* :func:`normalize` -- ``y = (x - mean) * invstd * weight + bias``;
* :func:`backward_reduce` / :func:`backward_elemt` -- the closed-form backward, split where a
  cross-process reduction would go (SyncBatchNorm all-reduces the two sums in between);
* :func:`update_running_stats` -- the running-average update with PyTorch's conventions;
* :func:`batch_norm` -- ``torch.nn.functional.batch_norm``'s semantics on top of them.

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

docs/backward.md derives it. It is written in differentiable torch operations on the saved input,
so double backward (gradgradcheck) differentiates the closed form itself.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "batch_norm",
    "batch_stats",
    "normalize",
    "backward_reduce",
    "backward_elemt",
    "update_running_stats",
    "reduce_dims",
    "channel_shape",
    "acc_dtype",
    "check_input",
    "check_batch_size",
    "check_hyperparameters",
    "eval_affine",
]

_HALF_TYPES = (torch.float16, torch.bfloat16)


# --- shapes and dtypes ------------------------------------------------------------------------


def reduce_dims(x: Tensor) -> tuple[int, ...]:
    """The dimensions a channel's statistics are taken over: N and every spatial dim (not C)."""
    return (0,) + tuple(range(2, x.dim()))


def channel_shape(x: Tensor) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel (C,) vector against ``x``: (1, C, 1, ..., 1)."""
    return (1, x.shape[1]) + (1,) * (x.dim() - 2)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype statistics are accumulated in: float32 for half types, as PyTorch does."""
    return torch.float32 if dtype in _HALF_TYPES else dtype


def count_per_channel(x: Tensor) -> int:
    """m = N * spatial size: the number of values each channel's statistics are taken over."""
    return x.numel() // x.shape[1] if x.dim() >= 2 and x.shape[1] else 0


# --- input checks -----------------------------------------------------------------------------


def check_input(x: Tensor, num_features: int | None) -> None:
    """Reject what batch norm cannot normalize, saying what was expected and what arrived."""
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor input (got {type(x).__name__})")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point input (got {x.dtype})")
    if x.dim() < 2:
        raise ValueError(f"expected an input of at least 2 dimensions (N, C, ...) (got {x.dim()}D input)")
    if num_features is not None and x.shape[1] != num_features:
        raise ValueError(
            f"expected input with {num_features} channels in dim 1 (got {x.shape[1]} channels, "
            f"input shape {tuple(x.shape)})"
        )


def check_batch_size(x: Tensor) -> None:
    """Batch statistics need more than one value per channel (PyTorch's condition and wording)."""
    size = list(x.shape)
    prod = size[0]
    for s in size[2:]:
        prod *= s
    if prod == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.shape}")


def check_hyperparameters(eps: float, momentum: float | Tensor | None) -> None:
    """eps must be positive; momentum a weight in [0, 1] (None: cumulative average)."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"expected eps > 0 (got {eps!r})")
    if momentum is None or isinstance(momentum, Tensor):
        return
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"expected momentum in [0, 1] or None (got {momentum!r})")


# --- the math ---------------------------------------------------------------------------------


def batch_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of ``x`` (N, C, *), both (C,) in :func:`acc_dtype`.

    Two passes -- the mean first, then the mean of squared deviations -- so a large common offset
    (1e4 + N(0, 1) in float32) loses no precision, unlike E[x^2] - E[x]^2. The mean's sum is
    accumulated in float64, so the mean is correctly rounded to the accumulation dtype.
    """
    dims = reduce_dims(x)
    acc = acc_dtype(x.dtype)
    xa = x.to(acc)
    m = max(count_per_channel(x), 1)  # an empty batch gets mean 0, var 0: finite, zero gradients
    mean = (x.sum(dims, dtype=torch.float64) / m).to(acc)
    xc = xa - mean.view(channel_shape(x))
    var = (xc * xc).sum(dims) / m
    return mean, var


def normalize(
    x: Tensor, mean: Tensor, invstd: Tensor, weight: Tensor | None = None, bias: Tensor | None = None
) -> Tensor:
    """``(x - mean) * invstd * weight + bias`` per channel, computed in :func:`acc_dtype`.

    ``mean``/``invstd``/``weight``/``bias`` are (C,); the result has ``x``'s dtype and memory
    format (channels_last in, channels_last out).
    """
    shape = channel_shape(x)
    acc = acc_dtype(x.dtype)
    scale = invstd if weight is None else invstd * weight.to(acc)
    y = (x.to(acc) - mean.view(shape)) * scale.view(shape)
    if bias is not None:
        y = y + bias.to(acc).view(shape)
    return y.to(x.dtype)


def backward_reduce(dy: Tensor, x: Tensor, mean: Tensor) -> tuple[Tensor, Tensor]:
    """The two per-channel sums the backward needs: ``sum(dy)`` and ``sum(dy * (x - mean))``.

    These are what SyncBatchNorm all-reduces across processes before :func:`backward_elemt`.
    """
    dims = reduce_dims(x)
    acc = acc_dtype(x.dtype)
    dya = dy.to(acc)
    sum_dy = dya.sum(dims)
    sum_dy_xmu = (dya * (x.to(acc) - mean.view(channel_shape(x)))).sum(dims)
    return sum_dy, sum_dy_xmu


def backward_elemt(
    dy: Tensor,
    x: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None,
    mean_dy: Tensor,
    mean_dy_xmu: Tensor,
) -> Tensor:
    """``dx = weight * invstd * (dy - mean_dy - (x - mean) * invstd^2 * mean_dy_xmu)``.

    ``mean_dy = sum(dy)/m`` and ``mean_dy_xmu = sum(dy*(x-mean))/m`` over the (possibly global) m.
    """
    shape = channel_shape(x)
    acc = acc_dtype(x.dtype)
    scale = invstd if weight is None else invstd * weight.to(acc)
    proj = (x.to(acc) - mean.view(shape)) * (invstd * invstd * mean_dy_xmu).view(shape)
    dx = (dy.to(acc) - mean_dy.view(shape) - proj) * scale.view(shape)
    return dx.to(x.dtype)


def param_grads(
    sum_dy: Tensor, sum_dy_xmu: Tensor, invstd: Tensor, weight: Tensor | None, bias: Tensor | None
) -> tuple[Tensor | None, Tensor | None]:
    """dweight = sum(dy * xhat) = invstd * sum(dy * (x-mean)); dbias = sum(dy); in the params' dtypes."""
    dweight = None if weight is None else (sum_dy_xmu * invstd).to(weight.dtype)
    dbias = None if bias is None else sum_dy.to(bias.dtype)
    return dweight, dbias


def update_running_stats(
    running_mean: Tensor | None,
    running_var: Tensor | None,
    mean: Tensor,
    var: Tensor,
    count: int,
    momentum: float | Tensor,
) -> None:
    """``running = (1 - momentum) * running + momentum * batch`` with the *unbiased* variance.

    ``var`` is the biased batch variance over ``count`` values per channel; the running variance
    stores ``var * count / (count - 1)``. An empty batch (count 0) leaves the buffers unchanged,
    as PyTorch does.
    """
    if count == 0 or _dispatch().update_running_stats(running_mean, running_var, mean, var, count, momentum):
        return  # the fast kernel did it in one call (no autograd: plain buffers, no graph)
    _update_running_stats_reference(running_mean, running_var, mean, var, count, momentum)


@torch.no_grad()
def _update_running_stats_reference(running_mean, running_var, mean, var, count, momentum) -> None:
    unbiased = var * (count / (count - 1)) if count > 1 else var
    for buf, stat in ((running_mean, mean), (running_var, unbiased)):
        if buf is None:
            continue
        acc = acc_dtype(buf.dtype)
        w = momentum.to(acc) if isinstance(momentum, Tensor) else momentum
        if acc == buf.dtype:  # in place: this runs on every training step, so no temporaries
            buf.lerp_(stat.to(acc), w)
        else:  # half-type buffers: average in float32, round once
            buf.copy_(buf.to(acc).lerp(stat.to(acc), w))


# --- autograd ---------------------------------------------------------------------------------


class BatchNormTrain(torch.autograd.Function):
    """Batch norm with batch statistics and the closed-form backward (module docstring).

    Returns ``(y, mean, var)``; mean and the biased var are (C,) and not differentiable -- they are
    returned for the running-stat update. Written in the ``setup_context`` style with a generated
    vmap rule so torch.func transforms and torch.compile can trace it.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
        fast = _dispatch().train_forward(x, weight, bias, eps)
        if fast is not None:
            return fast
        mean, var = batch_stats(x)
        invstd = torch.rsqrt(var + eps)
        return normalize(x, mean, invstd, weight, bias), mean, var

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, eps = inputs
        _, mean, var = output
        ctx.mark_non_differentiable(mean, var)
        ctx.save_for_backward(x, weight, bias, mean, var)
        ctx.eps = eps

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        x, weight, bias, mean, var = ctx.saved_tensors
        fast = _dispatch().train_backward(dy, x, weight, bias, mean, var, ctx.eps, ctx.needs_input_grad[:3])
        if fast is not None:
            return fast + (None,)
        if torch.is_grad_enabled():
            # Double backward: the statistics must be differentiable functions of x, so recompute
            # them from the saved input instead of using the detached forward values.
            mean, var = batch_stats(x)
        invstd = torch.rsqrt(var + ctx.eps)
        m = max(count_per_channel(x), 1)
        sum_dy, sum_dy_xmu = backward_reduce(dy, x, mean)
        dx = None
        if ctx.needs_input_grad[0]:
            dx = backward_elemt(dy, x, mean, invstd, weight, sum_dy / m, sum_dy_xmu / m)
        dweight, dbias = param_grads(sum_dy, sum_dy_xmu, invstd, weight, bias)
        return (
            dx,
            dweight if ctx.needs_input_grad[1] else None,
            dbias if ctx.needs_input_grad[2] else None,
            None,
        )


# torch.autograd.Function.apply binds its arguments with inspect.signature on every call (about
# 30 us, more than a small batch's whole normalization). The C-level apply underneath does the
# same work without it; it is used when no tracing or torch.func transform is active, where the
# standard apply (which those need) runs instead.
_base_apply = super(torch.autograd.Function, BatchNormTrain).apply


def _train(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
    """``BatchNormTrain.apply(x, weight, bias, eps)``, minus the per-call signature binding."""
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    if (
        torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
        or wrapped(x)
        or (weight is not None and wrapped(weight))
        or (bias is not None and wrapped(bias))
    ):
        return BatchNormTrain.apply(x, weight, bias, eps)
    return _base_apply(x, weight, bias, eps)


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
        input: (N, C, *) floating-point tensor.
        running_mean, running_var: (C,) buffers. In training they are updated in place when given
            (running_var with the unbiased batch variance); in eval they are required and used.
        weight, bias: optional (C,) affine parameters :math:`\gamma`, :math:`\beta`.
        training: normalize with the batch statistics (biased variance). Default: ``False``.
        momentum: weight of the new batch in the running average. Default: ``0.1``.
        eps: added to the variance for stability. Default: ``1e-5``.

    Returns:
        Tensor of ``input``'s shape, dtype and memory format.
    """
    stats = running_mean if running_mean is not None else weight
    check_input(input, None if stats is None else stats.numel())
    check_hyperparameters(eps, momentum)
    if training:
        check_batch_size(input)
        y, mean, var = _train(input, weight, bias, eps)
        if running_mean is not None or running_var is not None:
            update_running_stats(running_mean, running_var, mean, var, count_per_channel(input), momentum)
        return y
    if running_mean is None or running_var is None:
        raise ValueError("running_mean and running_var must be defined in evaluation mode (got None)")
    # Eval is an affine map of x with constant statistics. Inference on contiguous input runs one
    # kernel pass; otherwise plain differentiable ops, so autograd, torch.func and torch.compile
    # handle it without a custom Function.
    fast = _dispatch().eval_forward(input, running_mean, running_var, weight, bias, eps)
    if fast is not None:
        return fast
    if input.dtype in (torch.float32, torch.float64) and running_var.dtype == input.dtype:
        consts = _dispatch().eval_constants(running_mean, running_var, weight, bias, eps)
        scale, shift = consts if consts is not None else eval_affine(running_mean, running_var, weight, bias, eps)
        return _scale_shift(input, scale, shift)
    # Half types (and mixed dtypes): computed in float32 and rounded once.
    invstd = torch.rsqrt(running_var.to(acc_dtype(input.dtype)) + eps)
    return normalize(input, running_mean.to(invstd.dtype), invstd, weight, bias)


def _scale_shift(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """``x * scale + shift`` per channel in one or two vectorized passes, x's memory format kept.

    The same formula as torch's eval kernel (so the same accuracy). On contiguous NCHW tensors a
    broadcast multiply and an in-place add run faster than one ``addcmul``; where the channel is
    the innermost dimension (channels-last, or (N, C) rows) ``addcmul`` is the faster.
    """
    shape = channel_shape(x)
    if x.is_contiguous() and x.numel() != x.shape[0] * x.shape[1]:  # NC* with a spatial extent
        return torch.mul(x, scale.view(shape)).add_(shift.view(shape))
    return torch.addcmul(shift.view(shape), x, scale.view(shape))  # (N, C) rows, channels-last


# --- statistics of parts: combining ranks, ghosts and micro-batches ---------------------------


def local_moments(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(count, mean, M2)`` of ``x`` (N, C, *) per channel, with ``M2 = sum((x - mean)^2)``.

    The sufficient statistics of a part of a batch, in :func:`acc_dtype`; ``count`` is a 0-dim
    tensor (the same for every channel). An empty part (N = 0) gives count 0 and zero mean and M2,
    so it can be combined with :func:`combine_moments` like any other part.
    """
    m = count_per_channel(x)
    acc = acc_dtype(x.dtype)
    count = torch.tensor(float(m), dtype=acc, device=x.device)
    if m == 0:
        zeros = torch.zeros(x.shape[1], dtype=acc, device=x.device)
        return count, zeros, zeros.clone()
    mean, var = batch_stats(x)
    return count, mean, var * m


def combine_moments(count: Tensor, mean: Tensor, m2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Chan et al.'s parallel formula: the ``(count, mean, M2)`` of the union of P parts.

    ``count`` is (P,) and ``mean``, ``m2`` are (P, C), one row per part (a process, a ghost batch,
    a micro-batch). With :math:`n = \sum_p n_p`:

    .. math::
        \mu = \frac{1}{n}\sum_p n_p \mu_p, \qquad
        M_2 = \sum_p M_{2,p} + \sum_p n_p (\mu_p - \mu)^2

    (Chan, Golub & LeVeque 1979, the pairwise update applied to all parts at once). The parts may
    have different sizes, including 0 (their rows must then be finite, e.g. zeros). Unlike pooling
    sums of squares this does not cancel catastrophically. Returns the total count (0-dim), mean
    (C,) and M2 (C,); the biased variance is ``M2 / count``. The total count must be positive.
    """
    total = count.sum()
    weights = (count / total).unsqueeze(1)  # (P, 1)
    mu = (weights * mean).sum(0)
    spread = (count.unsqueeze(1) * (mean - mu) ** 2).sum(0)
    return total, mu, m2.sum(0) + spread


# --- statistics and affine forms for model surgery -------------------------------------------


def eval_affine(
    running_mean: Tensor, running_var: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor]:
    """Eval-mode batch norm as a per-channel affine map ``y = x * scale + shift``, both (C,).

    ``scale = weight / sqrt(running_var + eps)`` and ``shift = bias - running_mean * scale``
    (weight 1 and bias 0 when absent), in :func:`acc_dtype` of the running statistics. Folding BN
    into a preceding convolution multiplies the convolution's output channels by ``scale``.
    """
    acc = acc_dtype(running_var.dtype)
    scale = torch.rsqrt(running_var.to(acc) + eps)
    if weight is not None:
        scale = scale * weight.to(acc)
    shift = -running_mean.to(acc) * scale
    if bias is not None:
        shift = shift + bias.to(acc)
    return scale, shift

def _dispatch():
    """bnlab.kernels.dispatch, which decides fast kernel vs the reference above (imported late: it
    builds on this module)."""
    from .kernels import dispatch

    return dispatch
