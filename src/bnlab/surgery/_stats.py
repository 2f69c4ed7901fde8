"""Per-channel sufficient statistics ``(count, mean, M2)`` of BN inputs, the BN layers to watch, and
the one way to see what a layer's statistics are taken over.

Shared by :mod:`.precise_bn`, :mod:`.accumulate`, :mod:`.doctor` and :mod:`bnlab.adaptation`.
:func:`watch_statistics` hooks a layer so that every tool sees the same values the layer normalizes
with: the input however it was passed (``bn(x)`` or ``bn(input=x)``), reduced by the layer's own
``statistics_input`` where it has one (a masked layer's valid positions). The math is
:func:`bnlab.functional.local_moments` (one batch) and :func:`bnlab.functional.combine_moments`
(Chan et al.'s exact merge); accumulation is in float64 so thousands of merged batches lose nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase
from torch.utils.hooks import RemovableHandle

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


def layer_input(module: nn.Module, args: tuple, kwargs: dict) -> Tensor:
    """The input of one call of a BN layer, passed by position or as ``input=``."""
    if args:
        return args[0]
    if "input" in kwargs:
        return kwargs["input"]
    raise TypeError(
        f"expected {type(module).__name__} to be called with its input (got no positional argument and "
        f"keyword arguments {sorted(kwargs)})"
    )


def statistics_input(module: nn.Module, args: tuple, kwargs: dict) -> Tensor:
    """What ``module``'s batch statistics are taken over in the call ``module(*args, **kwargs)``:
    its ``statistics_input`` (bnlab's layers; a masked layer's valid positions), else the input."""
    own = getattr(module, "statistics_input", None)
    if callable(own):
        return own(*args, **kwargs)
    return layer_input(module, args, kwargs)


def watch_statistics(module: nn.Module, fn: Callable[[nn.Module, Tensor], None]) -> RemovableHandle:
    """A forward pre-hook on ``module`` calling ``fn(module, x)`` with :func:`statistics_input`."""

    def hook(m: nn.Module, args: tuple, kwargs: dict) -> None:
        fn(m, statistics_input(m, args, kwargs))

    return module.register_forward_pre_hook(hook, with_kwargs=True)


def watch_input(module: nn.Module, fn: Callable[[nn.Module, Tensor], None]) -> RemovableHandle:
    """A forward pre-hook on ``module`` calling ``fn(module, x)`` with its input (:func:`layer_input`)."""

    def hook(m: nn.Module, args: tuple, kwargs: dict) -> None:
        fn(m, layer_input(m, args, kwargs))

    return module.register_forward_pre_hook(hook, with_kwargs=True)
