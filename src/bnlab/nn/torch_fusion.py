"""bnlab's layers in torch's quantization fusion table (``torch.ao.quantization.fuse_modules``,
``fuse_modules_qat``).

torch looks fusion methods up by the exact types of the modules, ``(nn.Conv2d, nn.BatchNorm2d)``,
so a subclass is not found; and the fused modules it builds check the exact types of their parts
(``nni.ConvBnReLU2d``, ``nni.BNReLU2d``: "Incorrect types for input modules"). Each entry torch
has for a BatchNorm1d/2d/3d is registered once more with bnlab's class in its place, and calls
torch's own fusion method with a torch batch norm holding the very same parameter and buffer
tensors (:func:`bnlab.nn.swap.swap`). The result is torch's fused module, as for torch's model:
folded into the conv in eval (the eval map both classes share), torch's QAT module (conv + BN +
fake quantization, its batch norm torch's) in training.
"""

from __future__ import annotations

import functools

from torch import nn

from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .swap import plain_config, swap

__all__ = ["register"]

_OURS = {nn.BatchNorm1d: BatchNorm1d, nn.BatchNorm2d: BatchNorm2d, nn.BatchNorm3d: BatchNorm3d}
_THEIRS: dict[type[nn.Module], type[nn.Module]] = {ours: theirs for theirs, ours in _OURS.items()}


def _as_torch(module: nn.Module) -> nn.Module:
    """torch's batch norm with ``module``'s tensors, training flag and hooks (other modules as they are)."""
    theirs = _THEIRS.get(type(module))
    if theirs is None:
        return module
    return swap(module, theirs(**plain_config(module), device="meta"))


def _with_torch_bn(method):
    @functools.wraps(method)
    def fuse(is_qat, *modules):
        return method(is_qat, *(_as_torch(m) for m in modules))

    return fuse


def register() -> int:
    """Add the bnlab entries to torch's default fusion table; returns how many (0 without torch.ao)."""
    try:
        from torch.ao.quantization import fuser_method_mappings as mappings
    except ImportError:
        return 0
    table = mappings._DEFAULT_OP_LIST_TO_FUSER_METHOD
    added = {
        tuple(_OURS.get(t, t) for t in types): _with_torch_bn(method)
        for types, method in table.items()
        if any(t in _OURS for t in types)
    }
    table.update(added)
    return len(added)
