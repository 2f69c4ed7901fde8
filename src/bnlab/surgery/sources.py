"""The batch-norm layers model surgery reads: one table of classes and their input dimensionality.

A *source* is a class whose layers :func:`bnlab.convert` (and fold, doctor, precise_bn) treat as
batch norm: torch's and bnlab's BatchNorm1d/2d/3d and SyncBatchNorm, and bnlab's variants. Its
value is the input dimensionality (1, 2, 3), or None for a class that accepts any (SyncBatchNorm).
A subclass of a BN base class that is not in the table is *not* a source: converting it would drop
what the subclass adds, so convert refuses it. :func:`register_source` adds a class.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .. import nn as bnn
from ..nn import batchnorm as bnlab_bn

__all__ = ["SOURCES", "BN_BASES", "register_source", "is_batchnorm", "resolve_dims"]

SOURCES: dict[type, int | None] = {
    nn.BatchNorm1d: 1,
    nn.BatchNorm2d: 2,
    nn.BatchNorm3d: 3,
    nn.SyncBatchNorm: None,
    bnn.BatchNorm1d: 1,
    bnn.BatchNorm2d: 2,
    bnn.BatchNorm3d: 3,
    bnn.SyncBatchNorm: None,
    bnn.GhostBatchNorm1d: 1,
    bnn.GhostBatchNorm2d: 2,
    bnn.GhostBatchNorm3d: 3,
    bnn.FrozenBatchNorm1d: 1,
    bnn.FrozenBatchNorm2d: 2,
    bnn.FrozenBatchNorm3d: 3,
    bnn.BatchNormAct1d: 1,
    bnn.BatchNormAct2d: 2,
    bnn.BatchNormAct3d: 3,
}

# Base classes whose subclasses are batch norm: an unknown subclass of one of them is refused.
BN_BASES: tuple[type, ...] = (nn.modules.batchnorm._BatchNorm, bnlab_bn._BatchNorm)


def register_source(cls: type, dims: int | None) -> None:
    """Let convert read layers of exactly ``cls`` (which must carry BN's attributes and state)."""
    if dims not in (1, 2, 3, None):
        raise ValueError(f"expected dims in (1, 2, 3, None) (got {dims!r})")
    SOURCES[cls] = dims


def is_batchnorm(module: nn.Module) -> bool:
    """A batch-norm layer: in the source table, or a subclass of a BN base class."""
    return type(module) in SOURCES or isinstance(module, BN_BASES)


def resolve_dims(layer: nn.Module, options: dict[str, Any], target: str) -> int:
    """The input dimensionality of ``layer``: from the table, from the class a SyncBatchNorm was
    converted from, or from the ``dims`` option; a ValueError if none says."""
    dims = SOURCES.get(type(layer))
    if dims is None:
        origin = getattr(layer, "_converted_from", None)
        dims = SOURCES.get(origin) if origin is not None else None
    if dims is not None:
        return dims
    given = options.get("dims")
    if given not in (1, 2, 3):
        raise ValueError(
            f"{type(layer).__name__} accepts inputs of any dimensionality; converting it to '{target}' "
            f"needs dims=1, 2 or 3 (got dims={given!r})"
        )
    return given
