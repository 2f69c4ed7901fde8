r"""Exact running statistics under gradient accumulation.

With gradient accumulation, one optimizer step sees ``k`` micro-batches; every BN layer updates
its running statistics ``k`` times, each from a micro-batch, so the running average weighs the
step's data as ``k`` small batches (momentum applied ``k`` times, variances of small batches).
:class:`ExactBNAccumulation` instead collects each micro-batch's per-channel ``(count, mean, M2)``
(:func:`bnlab.functional.combine_moments` combines them exactly) and commits **one** update per
optimizer step, with PyTorch's rule (:func:`bnlab.functional.update_running_stats`)::

    running_mean = (1 - momentum) * running_mean + momentum * mean
    running_var  = (1 - momentum) * running_var  + momentum * M2 / (n - 1)     # unbiased, n values

where ``mean`` and ``M2`` are those of all ``n`` values of the step's micro-batches together: the
running statistics and num_batches_tracked are exactly those of one forward over the concatenated
effective batch (for momentum=None, the cumulative average, num_batches_tracked counts steps).

Only the running statistics change: each micro-batch is still *normalized* with its own batch
statistics (that is BN's forward; GhostBatchNorm makes it explicit). For BN layers behind other
BN layers, the inputs are those of the micro-batch forwards, which differ from a full-batch
forward because the earlier layers normalized per micro-batch.

Example::

    with bnlab.ExactBNAccumulation(model) as acc:
        for i, (x, y) in enumerate(loader):
            loss = criterion(model(x), y) / accum_steps
            loss.backward()
            if (i + 1) % accum_steps == 0:
                optimizer.step()
                optimizer.zero_grad()
                acc.commit()          # one running-stat update for the accum_steps micro-batches
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .. import functional as F
from ._stats import ChannelStats, tracked_bn_layers, watch_statistics

__all__ = ["ExactBNAccumulation"]


class ExactBNAccumulation:
    """Context manager: BN running statistics updated once per :meth:`commit`, from all micro-batches.

    While active, each BN layer's own running update is switched off (momentum set to 0, restored
    on exit) and a forward pre-hook records the statistics of its input in training mode. Forwards
    in eval mode are not recorded. On exit the hooks are removed, momentum and the
    num_batches_tracked of the last commit are restored; micro-batches not committed are
    discarded with a warning.

    Args:
        model: the model whose BN layers (torch's or bnlab's, with running statistics) to manage.
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"expected an nn.Module (got {type(model).__name__})")
        self.layers = tracked_bn_layers(model)
        if not self.layers:
            raise ValueError("expected a model with BN layers that track running statistics (found none)")
        self._stats = [ChannelStats() for _ in self.layers]
        self._handles: list = []
        self._momenta: list = []
        self._committed: list = []
        self.pending = 0  # micro-batch forwards recorded since the last commit (counted at the first layer)

    def _record(self, index: int, module: nn.Module, x) -> None:
        if module.training:
            self._stats[index].add(x)
            if index == 0:
                self.pending += 1

    def __enter__(self) -> ExactBNAccumulation:
        if self._handles:
            raise RuntimeError("ExactBNAccumulation is already active")
        self._momenta = [m.momentum for _, m in self.layers]
        self._committed = [
            None if m.num_batches_tracked is None else m.num_batches_tracked.clone() for _, m in self.layers
        ]
        for i, (_, m) in enumerate(self.layers):
            m.momentum = 0.0
            self._handles.append(watch_statistics(m, lambda mod, x, i=i: self._record(i, mod, x)))  # type: ignore[misc]  # mypy infers no lambda with a default argument (the loop's value, bound here)
        return self

    @torch.no_grad()
    def commit(self) -> None:
        """Apply one running-stat update per BN layer from everything recorded since the last commit."""
        if not self._handles:
            raise RuntimeError("commit() must be called inside the `with ExactBNAccumulation(model)` block")
        for i, ((_, m), s) in enumerate(zip(self.layers, self._stats)):
            if s.count == 0:
                continue
            momentum = self._momenta[i]
            if self._committed[i] is not None:
                self._committed[i] += 1
                m.num_batches_tracked.copy_(self._committed[i])  # type: ignore[union-attr]  # counted: it exists
            if momentum is None:
                count = self._committed[i]
                assert count is not None, "momentum=None needs num_batches_tracked"
                momentum = 1.0 / float(count)
            assert s.mean is not None  # s.count > 0
            F.update_running_stats(m.running_mean, m.running_var, s.mean, s.variance(unbiased=False), s.count, momentum)
            self._stats[i] = ChannelStats()
        self.pending = 0

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        for (_, m), momentum, nbt in zip(self.layers, self._momenta, self._committed):
            m.momentum = momentum
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)  # type: ignore[union-attr]  # saved from it: it exists
        if self.pending and exc[0] is None:
            warnings.warn(
                f"{self.pending} micro-batch forward(s) after the last commit() were discarded: call "
                f"commit() after the last optimizer step",
                stacklevel=2,
            )
        self._stats = [ChannelStats() for _ in self.layers]
        self.pending = 0
