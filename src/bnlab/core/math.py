r"""The batch-normalization math, written once in torch operations (the reference).

Every path of bnlab -- the reference backend, the fast kernels' tests, the layers' statistics of
parts, model surgery -- computes batch norm with these functions or is tested against them. The
conventions (PyTorch's) and the closed-form backward are stated in :mod:`bnlab.functional`'s
docstring and derived in docs/backward.md; in short:

* training normalizes with the *biased* batch variance ``sum((x-mean)^2) / m``, ``m = N * spatial
  size``; the running variance accumulates the *unbiased* one, ``var * m/(m-1)``;
* momentum is the weight of the *new* batch (``running = (1-momentum) * running + momentum *
  batch``), given as a float or a 0-dim tensor;
* statistics are accumulated in float32 for half types (:func:`acc_dtype`).

The functions a layer's forward uses are TorchScript-compatible (lists for shapes, ``float |
Tensor`` for momentum, no decorators), so ``torch.jit.script`` of a bnlab layer compiles this
very math (:meth:`bnlab.nn.batchnorm._BatchNorm._script_forward`).

The backward is split where a cross-process reduction goes: :func:`backward_reduce` gives the two
per-channel sums, :func:`backward_elemt` the input gradient from their (possibly global) means.
Everything is differentiable torch operations, so double backward differentiates the closed form.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "reduce_dims",
    "channel_shape",
    "acc_dtype",
    "output_layout",
    "count_per_channel",
    "batch_stats",
    "batch_moments",
    "normalize",
    "backward_reduce",
    "backward_elemt",
    "param_grads",
    "update_running_stats",
    "eval_affine",
    "eval_normalize",
    "scale_shift",
    "local_moments",
    "combine_moments",
]

# --- shapes and dtypes ------------------------------------------------------------------------


def reduce_dims(x: Tensor) -> list[int]:
    """The dimensions a channel's statistics are taken over: N and every spatial dim (not C)."""
    return [0] + list(range(2, x.dim()))


def channel_shape(x: Tensor) -> list[int]:
    """Shape that broadcasts a per-channel (C,) vector against ``x``: (1, C, 1, ..., 1)."""
    return [1, x.shape[1]] + [1] * (x.dim() - 2)


def output_layout(y: Tensor, x: Tensor) -> Tensor:
    """``y`` in the memory format torch gives batch norm's output for input ``x``: channels_last
    (channels_last_3d) where ``x`` is in it, else contiguous -- so code that views torch's output
    (``y.view(N, -1)``) works on bnlab's. ``y`` itself where it already is (no copy).

    Under a torch.func transform only the contiguous format may be asked about (vmap refuses any
    other query), and no layout is observable there: a non-contiguous ``x`` leaves ``y`` as it is."""
    if x.is_contiguous():
        return y if y.is_contiguous() else y.contiguous()
    if not torch.jit.is_scripting():  # noqa: SIM102 -- TorchScript compiles only the outer test
        if torch._C._are_functorch_transforms_active():
            return y
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        fmt = torch.channels_last
    elif x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        fmt = torch.channels_last_3d
    else:
        fmt = torch.contiguous_format
    return y if y.is_contiguous(memory_format=fmt) else y.contiguous(memory_format=fmt)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype statistics are accumulated in: float32 for half types, as PyTorch does."""
    return torch.float32 if dtype == torch.float16 or dtype == torch.bfloat16 else dtype


def count_per_channel(x: Tensor) -> int:
    """m = N * spatial size: the number of values each channel's statistics are taken over."""
    return x.numel() // x.shape[1] if x.dim() >= 2 and x.shape[1] != 0 else 0


# --- training ---------------------------------------------------------------------------------


def batch_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of ``x`` ``(N, C, *)``, both (C,) in :func:`acc_dtype`.

    Two passes -- the mean first, then the mean of squared deviations -- so a large common offset
    (1e4 + N(0, 1) in float32) loses no precision, unlike E[x^2] - E[x]^2. The mean's sum is
    accumulated in float64, so the mean is correctly rounded to the accumulation dtype. An empty
    batch gets mean 0 and variance 0 (finite, with zero gradients).
    """
    mean, var, _ = batch_moments(x)
    return mean, var


def batch_moments(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`batch_stats` and the mean's rounding residual ``mean64 - mean`` (C,), in
    :func:`acc_dtype` and detached (zero for float64). :func:`normalize` takes it so the output is
    normalized by the unrounded mean: with a small variance, ``invstd`` magnifies the rounding of a
    float32 mean (half an ulp) into the output's largest error."""
    dims = reduce_dims(x)
    acc = acc_dtype(x.dtype)
    m = max(count_per_channel(x), 1)
    mean64 = x.sum(dims, dtype=torch.float64) / m
    mean = mean64.to(acc)
    residual = (mean64.detach() - mean.detach()).to(acc)
    xc = x.to(acc) - mean.view(channel_shape(x))
    var = (xc * xc).sum(dims) / m
    return mean, var, residual


def normalize(
    x: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    mean_residual: Tensor | None = None,
) -> Tensor:
    """``(x - mean) * invstd * weight + bias`` per channel, computed in :func:`acc_dtype`.

    ``mean``/``invstd``/``weight``/``bias`` are (C,); the result has ``x``'s dtype and memory
    format (channels_last in, channels_last out). ``mean_residual`` (from :func:`batch_moments`)
    is subtracted through the shift: ``- mean_residual * scale``.
    """
    shape = channel_shape(x)
    acc = acc_dtype(x.dtype)
    scale = invstd if weight is None else invstd * weight.to(acc)
    y = (x.to(acc) - mean.view(shape)) * scale.view(shape)
    shift = None if bias is None else bias.to(acc)
    if mean_residual is not None:
        fold = mean_residual * scale.detach()
        shift = -fold if shift is None else shift - fold
    if shift is not None:
        y = y + shift.view(shape)
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
    """``running = (1 - momentum) * running + momentum * batch`` in place, the variance unbiased.

    ``var`` is the biased batch variance over ``count`` values per channel; the running variance
    stores ``var * count / (count - 1)``. An empty batch (count 0) leaves the buffers unchanged,
    as PyTorch does.
    """
    if count == 0:
        return
    unbiased = var * (count / (count - 1)) if count > 1 else var
    with torch.no_grad():
        for buf, stat in ((running_mean, mean), (running_var, unbiased)):
            if buf is not None:
                _lerp_into(buf, stat, momentum)


def _lerp_into(buf: Tensor, stat: Tensor, momentum: float | Tensor) -> None:
    """``buf = lerp(buf, stat, momentum)`` in place; where either side is infinite or NaN, torch
    BN's own ``momentum * stat + (1 - momentum) * buf`` instead, so an infinite running_var stays
    inf (lerp forms inf - inf) and an infinite batch mean gives an infinite running mean, as in torch."""
    acc = acc_dtype(buf.dtype)
    old = buf.to(acc)
    new = stat.to(acc)
    finite = torch.isfinite(old) & torch.isfinite(new)
    if isinstance(momentum, Tensor):  # (two calls: lerp has a float and a tensor overload)
        w = momentum.to(acc)
        buf.copy_(torch.where(finite, torch.lerp(old, new, w), new * w + old * (1 - w)))
    else:
        buf.copy_(torch.where(finite, torch.lerp(old, new, momentum), new * momentum + old * (1 - momentum)))


# --- eval -------------------------------------------------------------------------------------


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


def eval_normalize(
    x: Tensor, running_mean: Tensor, running_var: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> Tensor:
    """Eval-mode batch norm of ``x`` in torch operations: ``x * scale + shift`` (:func:`eval_affine`,
    the formula of torch's eval kernel) for float32/float64 with buffers of the same dtype; half
    types (and mixed dtypes) normalized in float32 and rounded once."""
    if (x.dtype == torch.float32 or x.dtype == torch.float64) and running_var.dtype == x.dtype:
        scale, shift = eval_affine(running_mean, running_var, weight, bias, eps)
        return scale_shift(x, scale, shift)
    invstd = torch.rsqrt(running_var.to(acc_dtype(x.dtype)) + eps)
    return normalize(x, running_mean.to(invstd.dtype), invstd, weight, bias)


def scale_shift(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
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
    """``(count, mean, M2)`` of ``x`` ``(N, C, *)`` per channel, with ``M2 = sum((x - mean)^2)``.

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
