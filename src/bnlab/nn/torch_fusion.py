"""bnlab's layers in torch's quantization fusion table (``torch.ao.quantization.fuse_modules``).

torch looks fusion methods up by the exact types of the modules, ``(nn.Conv2d, nn.BatchNorm2d)``,
so a subclass is not found. Each entry torch has for a BatchNorm1d/2d/3d is registered once more
with bnlab's class in its place, with torch's own fusion method (which reads the running
statistics, eps, weight and bias only -- the eval map both classes share).
"""

from __future__ import annotations

from torch import nn

from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d

__all__ = ["register"]

_OURS = {nn.BatchNorm1d: BatchNorm1d, nn.BatchNorm2d: BatchNorm2d, nn.BatchNorm3d: BatchNorm3d}


def register() -> int:
    """Add the bnlab entries to torch's default fusion table; returns how many (0 without torch.ao)."""
    try:
        from torch.ao.quantization import fuser_method_mappings as mappings
    except ImportError:
        return 0
    table = mappings._DEFAULT_OP_LIST_TO_FUSER_METHOD
    added = {
        tuple(_OURS.get(t, t) for t in types): method
        for types, method in table.items()
        if any(t in _OURS for t in types)
    }
    table.update(added)
    return len(added)
