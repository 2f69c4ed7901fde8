r"""``bnlab.precise_bn``: exact population statistics of every BN layer over a data set.

Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021 (https://arxiv.org/abs/2105.07576), §3:
running averages (EMA) of batch statistics lag behind the weights and weigh recent batches more;
PreciseBN replaces them, after training, with the statistics of many batches pooled, computed with
the weights frozen. fvcore's ``update_bn_stats`` averages per-batch means and per-batch unbiased
variances, which is exact only for equal batch sizes and leaves out the spread of the batch means.
This implementation merges per-batch ``(count, mean, M2)`` exactly (Chan et al.), so the result
is the mean and variance of every value a layer saw, whatever the batch sizes:

.. math::
    \mu = \frac{1}{n}\sum_i x_i, \qquad \sigma^2 = \frac{1}{n}\sum_i (x_i - \mu)^2
    \quad(\text{biased, the default}) \quad\text{or}\quad \frac{1}{n-1}\sum_i (x_i - \mu)^2,

with ``n`` the values per channel over all batches (samples times spatial size). Wu & Johnson's
population variance is the biased one; PyTorch's running_var of a single batch is the unbiased
one; for ``n`` in the thousands they differ by ``n/(n-1)``.

As in training, the BN layers normalize each batch with its own statistics while the statistics
are collected, so a deeper layer sees the features it saw in training. Other modules keep their
mode (put dropout in eval mode first if you want it off). Everything changed is restored:
momentum, training flags, num_batches_tracked, and the hooks are removed -- also on an error,
when the running statistics are restored as well.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ._stats import ChannelStats, tracked_bn_layers, watch_statistics

__all__ = ["precise_bn"]


def _default_forward(model: nn.Module, batch: Any) -> Any:
    """``model(batch)``; for a tuple or list (a DataLoader's ``(inputs, targets)``), ``model(batch[0])``."""
    return model(batch[0] if isinstance(batch, (tuple, list)) else batch)


def _leading_size(batch: Any) -> int | None:
    """The batch size: the first dim of the first tensor found (in tuples, lists, dict values)."""
    if isinstance(batch, Tensor):
        return batch.shape[0] if batch.dim() else None
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (tuple, list)) else ()
    for item in items:
        size = _leading_size(item)
        if size is not None:
            return size
    return None


def _take(batch: Any, n: int) -> Any:
    """The first ``n`` samples of every tensor in ``batch`` (other leaves unchanged)."""
    if isinstance(batch, Tensor):
        return batch[:n] if batch.dim() else batch
    if isinstance(batch, dict):
        return {k: _take(v, n) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_take(v, n) for v in batch)
    return batch


@torch.no_grad()
def precise_bn(
    model: nn.Module,
    batches: Iterable[Any],
    num_samples: int | None = None,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    *,
    unbiased: bool = False,
) -> int:
    """Set every BN layer's running_mean/running_var to the exact statistics over ``batches``.

    Args:
        model: the trained model; its weights are not changed (forwards run under no_grad).
        batches: an iterable of batches (a DataLoader, a list of tensors, ...).
        num_samples: use at most this many samples (the leading dim of the batch's first tensor),
            cutting the last batch if needed. Default: ``None`` (all batches).
        forward: ``forward(model, batch)`` runs the model on one batch, for any batch structure.
            Default: ``model(batch)``, or ``model(batch[0])`` for a tuple/list batch.
        unbiased: store ``M2/(n-1)`` instead of the population variance ``M2/n``. Default: ``False``

    Returns:
        The number of samples used.

    A BN layer the forward never reaches (an auxiliary head) keeps its running statistics, with a
    warning naming it (``torch.optim.swa_utils.update_bn`` also accepts such models).

    Raises:
        ValueError: no BN layer with running statistics, no data, or no BN layer that saw input.
    """
    return _precise_bn(model, batches, num_samples, forward, unbiased)[0]


def _precise_bn(
    model: nn.Module,
    batches: Iterable[Any],
    num_samples: int | None,
    forward: Callable[[nn.Module, Any], Any] | None,
    unbiased: bool,
) -> tuple[int, list[str]]:
    """:func:`precise_bn`, returning ``(samples used, names of the BN layers that saw no input)``."""
    layers = tracked_bn_layers(model)
    if not layers:
        raise ValueError("expected a model with BN layers that track running statistics (found none)")
    if num_samples is not None and (
        isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1
    ):
        raise ValueError(f"expected num_samples to be a positive int or None (got {num_samples!r})")
    forward = _default_forward if forward is None else forward
    stats = [ChannelStats() for _ in layers]
    saved = [(m.momentum, m.training, m.num_batches_tracked) for _, m in layers]
    saved_buffers = [(m.running_mean.clone(), m.running_var.clone()) for _, m in layers]  # type: ignore[union-attr]  # tracked layers: the buffers exist
    handles = [watch_statistics(m, lambda _m, x, s=s: s.add(x)) for (_, m), s in zip(layers, stats)]  # type: ignore[misc]  # mypy infers no lambda with a default argument (the loop's value, bound here)
    seen = 0
    ok = False
    try:
        for (_, m), (_, _, nbt) in zip(layers, saved):
            m.momentum = 0.0  # the layers' own running updates become no-ops
            m.num_batches_tracked = None if nbt is None else nbt.clone()
            m.train()
        for batch in batches:
            if num_samples is not None:
                if seen >= num_samples:
                    break
                size = _leading_size(batch)
                if size is None:
                    raise ValueError("num_samples needs batches holding tensors (found no tensor in a batch)")
                if size > num_samples - seen:
                    batch, size = _take(batch, num_samples - seen), num_samples - seen
                forward(model, batch)
                seen += size
            else:
                forward(model, batch)
                seen += _leading_size(batch) or 0
        empty = [name for (name, _), s in zip(layers, stats) if s.count == 0]
        if len(empty) == len(layers):
            raise ValueError(f"expected the BN layers to see data (got none for {', '.join(empty)})")
        if empty:
            warnings.warn(
                f"{len(empty)} BN layer(s) saw no input in the forward and keep their running statistics: "
                f"{', '.join(empty)}",
                stacklevel=4,  # the caller of precise_bn (past no_grad) or of adapt
            )
        for (_, m), s in zip(layers, stats):
            if s.count == 0:
                continue
            assert s.mean is not None  # the layer saw data
            assert m.running_mean is not None and m.running_var is not None  # tracked layers: the buffers exist
            m.running_mean.copy_(s.mean.to(m.running_mean.dtype))
            m.running_var.copy_(s.variance(unbiased).to(m.running_var.dtype))
        ok = True
    finally:
        for h in handles:
            h.remove()
        for (_, m), (momentum, training, nbt), (rm, rv) in zip(layers, saved, saved_buffers):
            m.momentum = momentum
            m.train(training)
            m.num_batches_tracked = nbt
            if not ok:
                m.running_mean.copy_(rm)  # type: ignore[union-attr]  # tracked layers: the buffers exist
                m.running_var.copy_(rv)  # type: ignore[union-attr]  # likewise
    return seen, empty
