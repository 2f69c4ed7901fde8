"""Batch norm fused with drop and activation *modules*: timm's ``BatchNormAct2d`` and bnlab's twin.

timm (``timm.layers.norm_act.BatchNormAct2d``) builds many of its models -- efficientnet,
mobilenetv3, regnet, rexnet, ... -- from a ``BatchNorm2d`` subclass that applies a ``drop`` and an
``act`` module after the normalization. Converting it as plain batch norm would drop both, so
:func:`bnlab.convert` hands such layers here:

* to ``"bnlab"``: :class:`bnlab.nn.BatchNormDropAct2d` holding the old layer's tensors
  (:func:`bnlab.nn.swap.swap`) and its very ``drop`` and ``act`` modules; it remembers timm's class;
* to ``"sync"``: :class:`bnlab.nn.SyncBatchNormDropAct2d` (statistics over all processes, option
  ``process_group``), the same tensors and modules, remembering timm's class likewise;
* to ``"torch"``: a bnlab layer that came from timm goes back to timm's class (same tensors, same
  modules); timm's own layer is already torch's and stays;
* to any other target: a TypeError (ghost, frozen or groupnorm have no drop/act slots).

timm is never imported here: its class is recognised by module and name (:data:`TIMM_CLASSES`).
"""

from __future__ import annotations

from typing import Any, cast

from torch import nn

from ..nn.drop_act import BatchNormDropAct2d
from ..nn.swap import plain_config, swap
from ..nn.sync_batchnorm import SyncBatchNormDropAct2d

__all__ = ["TIMM_CLASSES", "is_norm_act", "convert_norm_act", "after_fold"]

TIMM_CLASSES = {("timm.layers.norm_act", "BatchNormAct2d")}  # (module, class name)


def _is_timm(module: nn.Module) -> bool:
    cls = type(module)
    return (cls.__module__, cls.__name__) in TIMM_CLASSES


def is_norm_act(module: nn.Module) -> bool:
    """Batch norm followed by drop/act modules: timm's BatchNormAct2d or bnlab's (Sync)BatchNormDropAct2d."""
    return type(module) in (BatchNormDropAct2d, SyncBatchNormDropAct2d) or _is_timm(module)


def convert_norm_act(layer: nn.Module, target: str, options: dict[str, Any]) -> nn.Module:
    """``layer`` (see :func:`is_norm_act`) converted to ``target`` ("bnlab" or "torch"; module docstring)."""
    if target == "bnlab":
        if type(layer) is BatchNormDropAct2d:
            return layer
        if type(layer) is SyncBatchNormDropAct2d:
            return layer.to_drop_act()
        new = swap(layer, BatchNormDropAct2d(**plain_config(layer), device="meta"))
        new.drop, new.act = cast(nn.Module, layer.drop), cast(nn.Module, layer.act)
        new._converted_from = type(layer)  # type: ignore[assignment]  # a plain attribute
        return new
    if target == "sync":
        if type(layer) is SyncBatchNormDropAct2d:
            return layer
        new = SyncBatchNormDropAct2d.from_drop_act(layer, options.get("process_group"))
        if _is_timm(layer):
            new._converted_from = type(layer)  # type: ignore[assignment]  # a plain attribute
        return new
    if target == "torch":
        if _is_timm(layer):
            return layer
        origin = getattr(layer, "_converted_from", None)
        if origin is None:
            raise TypeError(
                f"convert to 'torch': {type(layer).__name__} has drop/act modules and was not converted from a "
                f"torch-based class, so torch.nn has no layer for it (convert timm's BatchNormAct2d instead)"
            )
        cfg = plain_config(layer)
        if cfg.pop("bias", True) is False:
            raise TypeError(f"convert to 'torch': {origin.__name__} cannot represent affine=True, bias=False")
        new = swap(layer, origin(**cfg, device="meta"))
        new.drop, new.act = layer.drop, layer.act
        return new
    raise TypeError(
        f"convert to {target!r}: {type(layer).__name__} applies drop and activation modules after batch norm, "
        f"which a {target!r} layer has no place for; convert to 'bnlab', 'sync' or 'torch'"
    )


def after_fold(layer: nn.Module) -> nn.Module:
    """What replaces ``layer`` once its affine map is folded into the layer before it: its drop and act
    modules (one of them, when the other is the identity)."""
    drop, act = cast(nn.Module, layer.drop), cast(nn.Module, layer.act)  # is_norm_act: both are modules
    if isinstance(drop, nn.Identity):
        return act
    if isinstance(act, nn.Identity):
        return drop
    return nn.Sequential(drop, act)
