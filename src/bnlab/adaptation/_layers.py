"""Which BN layers of a model can be adapted, and the errors when none can.

Shared by the three methods of :mod:`bnlab.adaptation`. A model's batch-norm layers are those
:func:`bnlab.surgery.convert.is_batchnorm` recognises (torch's and bnlab's BatchNorm1d/2d/3d,
SyncBatchNorm, and their subclasses: ghost, fused activation, masked, ...). Frozen layers
(bnlab's ``FrozenBatchNorm*``, torchvision's and Detectron2's ``FrozenBatchNorm2d``) hold their
statistics and γ/β as fixed buffers: there is nothing to adapt in them.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from ..nn.frozen import _FrozenBatchNorm
from ..nn.renorm import _BatchRenorm
from ..surgery.convert import is_batchnorm


def default_forward(model: nn.Module, batch: Any) -> Any:
    """``model(batch)``; for a tuple or list (a DataLoader's ``(inputs, targets)``), ``model(batch[0])``."""
    return model(batch[0] if isinstance(batch, (tuple, list)) else batch)


def is_frozen(module: nn.Module) -> bool:
    """A frozen BN layer: bnlab's, or another library's class of that name (torchvision, Detectron2)."""
    return isinstance(module, _FrozenBatchNorm) or type(module).__name__.startswith("FrozenBatchNorm")


def bn_layers(model: nn.Module, method: str) -> list[tuple[str, _NormBase]]:
    """The BN layers of ``model`` that ``method`` can adapt, with their names.

    Raises:
        TypeError: ``model`` is not a module, or (test_batch, tent) it holds a Batch Renorm layer,
            whose training-mode forward corrects the batch statistics towards the running ones.
        ValueError: no BN layer at all, only frozen ones, or none with what ``method`` changes
            (running statistics for "stats", γ/β for "tent").
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module (got {type(model).__name__})")
    # the batch-norm sources that are not frozen all carry torch's BN attributes and state (_NormBase's)
    layers = [
        (name or "<model>", cast(_NormBase, m))
        for name, m in model.named_modules()
        if is_batchnorm(m) and not is_frozen(m)
    ]
    frozen = [(name or "<model>", m) for name, m in model.named_modules() if is_frozen(m)]
    kind = type(model).__name__
    if not layers and not frozen:
        raise ValueError(f"expected a model with batch-norm layers (found none in {kind})")
    if not layers:
        where = ", ".join(f"{type(m).__name__} at {n!r}" for n, m in frozen[:3]) + (", ..." if len(frozen) > 3 else "")
        raise ValueError(
            f"nothing to adapt: every batch-norm layer of {kind} is frozen ({where}); "
            "its statistics and γ/β are fixed buffers. Unfreeze first: bnlab.convert(model, to='bnlab')"
        )
    if method in ("test_batch", "tent"):
        renorm = [n for n, m in layers if isinstance(m, _BatchRenorm)]
        if renorm:
            raise TypeError(
                f"expected BN layers that can normalize with the batch alone (got Batch Renorm at {renorm[0]!r}, "
                "whose training forward corrects towards its running statistics); convert it with "
                "bnlab.convert(model, to='bnlab') or use method='stats'"
            )
    if method == "stats":
        tracked = [(n, m) for n, m in layers if m.track_running_stats and m.running_mean is not None]
        if not tracked:
            raise ValueError(
                f"nothing to adapt: no batch-norm layer of {kind} keeps running statistics "
                "(track_running_stats=False: they normalize with each batch already)"
            )
        return tracked
    if method == "tent":
        affine = [(n, m) for n, m in layers if m.weight is not None or getattr(m, "bias", None) is not None]
        if not affine:
            raise ValueError(
                f"nothing to adapt: TENT updates BN's γ and β, and no batch-norm layer of {kind} has them "
                "(affine=False)"
            )
        return layers
    return layers


def bn_parameters(layers: list[tuple[str, _NormBase]]) -> dict[str, torch.nn.Parameter]:
    """γ and β of ``layers`` by their names in the model (``"<layer>.weight"``, ``"<layer>.bias"``)."""
    params = {}
    for name, m in layers:
        for attr in ("weight", "bias"):
            p = getattr(m, attr, None)
            if isinstance(p, nn.Parameter):
                params[f"{name}.{attr}" if name != "<model>" else attr] = p
    return params


def first_batch(batches: Any) -> tuple[Any, Any]:
    """``(first batch, iterator over all batches)``; ValueError for an empty iterable."""
    try:
        it = iter(batches)
    except TypeError:
        raise TypeError(f"expected an iterable of batches (got {type(batches).__name__})") from None
    sentinel = object()
    first = next(it, sentinel)
    if first is sentinel:
        raise ValueError("expected at least one batch of target data (got an empty iterable)")

    def chained():
        yield first
        yield from it

    return first, chained()


def save_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in model.modules()]


def restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    for m, training in modes:
        m.training = training
