r"""``bnlab.convert(model, to=...)``: swap every batch-norm layer of a model for another kind.

Conversions go through two tables. The *sources* (:mod:`.sources`) are the BN classes convert
reads. The *targets* (:data:`TARGETS`, declared once below) are names (``"bnlab"``, ``"torch"``,
``"sync"``, ``"ghost"``, ``"frozen"``, ``"groupnorm"``, ``"batchnorm_act"``), each with a function
that builds the new layer from an old one (or, for "batchnorm_act", a pass over the model that
fuses BN with the activation after it: :mod:`.fuse_act`). Adding a kind of layer is one
:func:`~bnlab.surgery.sources.register_source` or :func:`register_target` call.

What a conversion keeps (:mod:`bnlab.nn.swap`, the one routine every conversion runs): the new
layer holds the old layer's parameters and buffers themselves (so values, ``requires_grad``,
device, dtype and an optimizer's references carry over), eps, momentum, affine / bias,
track_running_stats, the training flag and the layer's forward/backward hooks. BN -> BN
conversions are round-trip safe: there and back gives identical outputs and an identical
state_dict.

Layers that apply drop and activation *modules* after BN -- timm's ``BatchNormAct2d``, the base of
many timm models -- convert to ``"bnlab"`` (:class:`bnlab.nn.BatchNormDropAct2d`, keeping both
modules), to ``"sync"`` (:class:`bnlab.nn.SyncBatchNormDropAct2d`, likewise) and back to ``"torch"``
(timm's class), see :mod:`.norm_act`.

What it refuses: a subclass of a BN class that is not in the source table
(``class MyBN(nn.BatchNorm2d)``) raises TypeError rather than silently dropping what the subclass
adds; so does a layer the target cannot represent.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn
from torch.nn.utils import parametrize

from .. import nn as bnn
from ..nn.swap import plain_config, swap
from . import fuse_act
from .norm_act import convert_norm_act, is_norm_act
from .sources import BN_BASES, SOURCES, is_batchnorm, register_source, resolve_dims

__all__ = ["convert", "register_source", "register_target", "SOURCES", "TARGETS", "Target", "is_batchnorm"]


@dataclasses.dataclass(frozen=True)
class Target:
    """A conversion target: ``build(layer, options) -> new layer`` for every source layer.

    ``produces`` are the classes this target makes; a layer already of one of them is left alone.
    ``round_trip`` says whether there-and-back restores the layer exactly (documented, tested).
    """

    name: str
    build: Callable[[nn.Module, dict[str, Any]], nn.Module] | None
    produces: tuple[type, ...]
    round_trip: bool
    doc: str
    model_pass: Callable[[nn.Module, dict[str, Any]], nn.Module] | None = None  # instead of build


def convert(model: nn.Module, to: str, *, inplace: bool = False, **options: Any) -> nn.Module:
    """Replace every batch-norm layer of ``model`` (recursively) with the ``to`` kind.

    Args:
        model: any module; a BN layer itself is converted and returned.
        to: a name in :data:`TARGETS` -- "bnlab", "torch", "sync", "ghost", "frozen", "groupnorm",
            "batchnorm_act" (``bnlab.surgery.TARGETS[name].doc`` describes each).
        inplace: modify ``model`` itself. Default: ``False`` (a deep copy is converted, the
            original is untouched).
        options: target options, e.g. ``num_groups=32`` for "groupnorm", ``virtual_batch_size=32``
            for "ghost", ``process_group`` for "sync", ``dims=2`` to give the
            dimensionality of dimension-free sources (SyncBatchNorm) converted to 1d/2d/3d classes.

    Returns:
        The converted model.

    Raises:
        ValueError: unknown target or a layer the target cannot represent.
        TypeError: a BN subclass that is not in the conversion table.
    """
    if to not in TARGETS:
        raise ValueError(f"expected to= one of {sorted(TARGETS)} (got {to!r})")
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module (got {type(model).__name__})")
    target = TARGETS[to]
    if not inplace:
        model = copy.deepcopy(model)
    if target.model_pass is not None:  # a target that rewrites pairs of layers, not single layers
        return target.model_pass(model, options)
    model = _convert(model, target, options, "")
    return fuse_act.restore_activations(model)  # activations a fused layer had taken over come back


def _convert(module: nn.Module, target: Target, options: dict[str, Any], path: str) -> nn.Module:
    new = _convert_layer(module, target, options, path)
    if new is not module:
        return new
    for name, child in list(module.named_children()):
        new_child = _convert(child, target, options, f"{path}.{name}" if path else name)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def _convert_layer(module: nn.Module, target: Target, options: dict[str, Any], path: str) -> nn.Module:
    if is_norm_act(module):  # BN with drop/act modules (timm's BatchNormAct2d): kept, see .norm_act
        return convert_norm_act(module, target.name, options)
    if isinstance(module, BN_BASES) and parametrize.is_parametrized(module):
        names = ", ".join(module.parametrizations.keys())  # type: ignore[union-attr, operator]  # a ModuleDict once parametrized
        raise TypeError(
            f"convert: the batch norm at '{path or '<model>'}' has a parametrized {names} "
            f"(torch.nn.utils.parametrize), which the new layer would not keep; remove it first "
            f"(parametrize.remove_parametrizations(layer, name)), convert, then register it on the new layer"
        )
    if type(module) in target.produces:
        return module
    if type(module) in SOURCES:
        assert target.build is not None  # every target but 'frozen' builds from the table
        return target.build(module, options)
    if isinstance(module, BN_BASES):
        known = ", ".join(sorted(c.__module__.split(".")[0] + "." + c.__name__ for c in SOURCES))
        raise TypeError(
            f"convert does not know {type(module).__qualname__} at '{path or '<model>'}' (a subclass of "
            f"{type(module).__mro__[1].__name__}); converting it would drop what the subclass adds. "
            f"Known: {known}; add it with bnlab.surgery.register_source"
        )
    return module


# --- the builders -----------------------------------------------------------------------------------


def _per_dims(name: str, classes: Mapping[int, type]):
    """A builder of ``classes[dims](<old layer's plain configuration>)`` holding the old layer's state."""

    def build(layer: nn.Module, options: dict[str, Any]) -> nn.Module:
        cls = classes[resolve_dims(layer, options, name)]
        return swap(layer, cls(**plain_config(layer), device="meta"))

    return build


def _build_sync(layer: nn.Module, options: dict[str, Any]) -> nn.Module:
    new = swap(
        layer, bnn.SyncBatchNorm(**plain_config(layer), process_group=options.get("process_group"), device="meta")
    )
    dims = SOURCES.get(type(layer))
    if dims is not None:
        new._converted_from = _PLAIN[dims]  # type: ignore[assignment]  # a plain attribute; so revert_sync_batchnorm and convert can go back without dims
    return new


def _build_ghost(layer: nn.Module, options: dict[str, Any]) -> nn.Module:
    vbs = options.get("virtual_batch_size")
    if vbs is None and type(layer) in _GHOST.values():
        return layer  # already ghost, no new size asked for
    if isinstance(vbs, bool) or not isinstance(vbs, int) or vbs < 1:
        raise ValueError(f"converting to 'ghost' needs virtual_batch_size=<positive int> (got {vbs!r})")
    cls = _GHOST[resolve_dims(layer, options, "ghost")]
    return swap(layer, cls(virtual_batch_size=vbs, **plain_config(layer), device="meta"))


def _build_frozen(layer: nn.Module, options: dict[str, Any]) -> nn.Module:
    if getattr(layer, "running_mean", None) is None:
        raise ValueError(
            f"frozen BN needs running statistics (got {type(layer).__name__} with track_running_stats=False)"
        )
    cls = _FROZEN[resolve_dims(layer, options, "frozen")]
    return cls.from_batchnorm(layer)


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def _build_groupnorm(layer: nn.Module, options: dict[str, Any]) -> nn.Module:
    groups = options.get("num_groups", 32)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"expected num_groups to be a positive int (got {groups!r})")
    cfg = plain_config(layer)
    if cfg["affine"] and cfg.get("bias", True) is False:
        raise ValueError(
            f"groupnorm cannot represent {type(layer).__name__}(affine=True, bias=False): GroupNorm has "
            f"weight and bias or neither"
        )
    g = _largest_divisor_at_most(cfg["num_features"], groups)
    return swap(layer, nn.GroupNorm(g, cfg["num_features"], eps=cfg["eps"], affine=cfg["affine"], device="meta"))


_PLAIN = {1: bnn.BatchNorm1d, 2: bnn.BatchNorm2d, 3: bnn.BatchNorm3d}
_TORCH = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_GHOST = {1: bnn.GhostBatchNorm1d, 2: bnn.GhostBatchNorm2d, 3: bnn.GhostBatchNorm3d}
_FROZEN = {1: bnn.FrozenBatchNorm1d, 2: bnn.FrozenBatchNorm2d, 3: bnn.FrozenBatchNorm3d}

# --- the targets, declared once ------------------------------------------------------------------

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "bnlab",
            _per_dims("bnlab", _PLAIN),
            tuple(_PLAIN.values()),
            True,
            "bnlab.nn.BatchNorm1d/2d/3d (drop-in, same state_dict as torch's)",
        ),
        Target("torch", _per_dims("torch", _TORCH), tuple(_TORCH.values()), True, "torch.nn.BatchNorm1d/2d/3d"),
        Target(
            "sync",
            _build_sync,
            (bnn.SyncBatchNorm,),
            True,
            "bnlab.nn.SyncBatchNorm (statistics over all processes; option process_group); remembers the "
            "dimensionality it came from, so converting back needs no dims; a BN with drop/act modules (timm's "
            "BatchNormAct2d) becomes bnlab.nn.SyncBatchNormDropAct2d, keeping them",
        ),
        Target(
            "ghost",
            _build_ghost,
            (),
            True,
            "bnlab.nn.GhostBatchNorm1d/2d/3d (Hoffer et al. 2017: statistics per virtual batch in training); "
            "needs the option virtual_batch_size",
        ),
        Target(
            "frozen",
            _build_frozen,
            tuple(_FROZEN.values()),
            True,
            "bnlab.nn.FrozenBatchNorm1d/2d/3d: the eval map with gamma, beta and the statistics as buffers "
            "(affine=False freezes with gamma=1, beta=0); momentum, num_batches_tracked and requires_grad are "
            "kept aside so converting back is exact",
        ),
        Target(
            "groupnorm",
            _build_groupnorm,
            (nn.GroupNorm,),
            False,
            "torch.nn.GroupNorm, one way (Wu & He 2018). Mapping: weight -> weight (gamma), bias -> bias "
            "(beta), eps -> eps, affine -> affine; num_groups = the largest divisor of C not above the "
            "num_groups option (default 32); running statistics, momentum and track_running_stats are "
            "dropped (GroupNorm normalizes each sample over C/G channels and the spatial dims, in training "
            "and eval alike). With num_groups >= C each channel of each sample is its own group, which "
            "equals training-mode BN on a batch of one sample.",
        ),
        Target(
            "batchnorm_act",
            None,
            tuple(fuse_act.FUSED.values()),
            True,
            "bnlab.nn.BatchNormAct1d/2d/3d where a BN's output goes only to a ReLU, LeakyReLU or SiLU module "
            "(found by an fx trace, or between neighbours in an nn.Sequential); the activation's slot keeps it "
            "as a FusedActivation, so converting back to 'bnlab' or 'torch' restores the activation (see "
            "bnlab.surgery.fuse_act)",
            model_pass=fuse_act.fuse_activations,
        ),
    )
}


def register_target(target: Target) -> None:
    """Add (or replace) a target name."""
    TARGETS[target.name] = target
