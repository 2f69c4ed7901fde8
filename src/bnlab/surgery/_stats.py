"""Per-channel sufficient statistics ``(count, mean, M2)`` of BN inputs, and the BN layers to watch.

Shared by :mod:`.precise_bn` and :mod:`.accumulate`. The math is
:func:`bnlab.functional.local_moments` (one batch) and :func:`bnlab.functional.combine_moments`
(Chan et al.'s exact merge); accumulation is in float64 so thousands of merged batches lose nothing.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase

from .. import functional as F
from .sources import is_batchnorm


class ChannelStats:
    """Running ``(count, mean, M2)`` per channel over every batch passed to :meth:`add`."""

    def __init__(self) -> None:
        self.count = 0  # values per channel so far (an int for callers; _count is the tensor)
        self._count: Tensor | None = None
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    @torch.no_grad()
    def add(self, x: Tensor) -> None:
        """Merge the statistics of ``x`` (N, C, *): per channel over N and the spatial dims."""
        m = F.count_per_channel(x)  # from the shape: no device sync
        if m == 0:
            return
        count, mean, m2 = (t.to(torch.float64) for t in F.local_moments(x.detach()))
        if self.count:
            assert self._count is not None and self.mean is not None and self.m2 is not None
            count, mean, m2 = F.combine_moments(
                torch.stack([self._count, count]), torch.stack([self.mean, mean]), torch.stack([self.m2, m2])
            )
        self._count, self.mean, self.m2 = count, mean, m2
        self.count += m

    def variance(self, unbiased: bool) -> Tensor:
        """``M2 / count`` (biased) or ``M2 / (count - 1)`` (unbiased)."""
        assert self.m2 is not None and self.count > 0
        return self.m2 / (self.count - 1 if unbiased and self.count > 1 else self.count)


def tracked_bn_layers(model: nn.Module) -> list[tuple[str, _NormBase]]:
    """The BN layers of ``model`` that keep running statistics, with their names."""
    # the batch-norm sources that track statistics all carry torch's BN attributes and state (_NormBase's)
    return [
        (name or "<model>", cast(_NormBase, m))
        for name, m in model.named_modules()
        if is_batchnorm(m) and getattr(m, "track_running_stats", False) and m.running_mean is not None
    ]
