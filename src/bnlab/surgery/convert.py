r"""``bnlab.convert(model, to=...)``: swap every batch-norm layer of a model for another kind.

Conversions go through one table. A *source* is a BN class convert can read (its input
dimensionality, 1/2/3, or ``None`` for dimension-free classes such as SyncBatchNorm); a *target*
is a name (``"bnlab"``, ``"torch"``, ``"sync"``, ``"ghost"``, ``"frozen"``, ``"groupnorm"``) with a function that builds the new
layer from an old one. Adding a kind of layer is one :func:`register_source` or
:func:`register_target` call.

What a conversion keeps: the parameters and buffers themselves (the new layer holds the same
``Parameter`` and buffer tensors, so values, ``requires_grad``, device, dtype and an optimizer's
references carry over), eps, momentum, affine / bias, track_running_stats, the training flag and
the layer's forward/backward hooks. BN→BN conversions are round-trip safe: there and back gives
identical outputs and an identical state_dict.

What it refuses: a subclass of a BN class that is not in the table (``class MyBN(nn.BatchNorm2d)``)
raises TypeError rather than silently dropping what the subclass adds; so does a layer the target
cannot represent.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

import torch
from torch import nn

from ..nn import batchnorm as bnlab_bn

__all__ = ["convert", "register_source", "register_target", "SOURCES", "TARGETS", "is_batchnorm"]

# exact class -> input dimensionality (1, 2, 3) or None for layers that accept any
SOURCES: dict[type, int | None] = {
    nn.BatchNorm1d: 1,
    nn.BatchNorm2d: 2,
    nn.BatchNorm3d: 3,
    nn.SyncBatchNorm: None,
    bnlab_bn.BatchNorm1d: 1,
    bnlab_bn.BatchNorm2d: 2,
    bnlab_bn.BatchNorm3d: 3,
}

# Base classes whose subclasses are batch norm: an unknown subclass of one of them is refused.
BN_BASES: tuple[type, ...] = (nn.modules.batchnorm._BatchNorm, bnlab_bn._BatchNorm)

# The module attributes holding hooks; the new layer takes the same dicts, so handles stay valid.
_HOOK_DICTS = (
    "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks", "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called", "_backward_pre_hooks", "_backward_hooks",
)


@dataclasses.dataclass(frozen=True)
class Target:
    """A conversion target: ``build(layer, dims, options) -> new layer`` for every table source.

    ``produces`` are the classes this target makes; a layer already of one of them is left alone.
    ``round_trip`` says whether there-and-back restores the layer exactly (documented, tested).
    """

    name: str
    build: Callable[[nn.Module, int | None, dict[str, Any]], nn.Module]
    produces: tuple[type, ...]
    round_trip: bool
    doc: str


TARGETS: dict[str, Target] = {}


def register_source(cls: type, dims: int | None) -> None:
    """Let convert read layers of exactly ``cls`` (which must carry BN's attributes and state)."""
    if dims not in (1, 2, 3, None):
        raise ValueError(f"expected dims in (1, 2, 3, None) (got {dims!r})")
    SOURCES[cls] = dims


def register_target(target: Target) -> None:
    """Add (or replace) a target name."""
    TARGETS[target.name] = target


def is_batchnorm(module: nn.Module) -> bool:
    """A batch-norm layer: in the source table, or a subclass of a BN base class."""
    return type(module) in SOURCES or isinstance(module, BN_BASES)


def convert(model: nn.Module, to: str, *, inplace: bool = False, **options: Any) -> nn.Module:
    """Replace every batch-norm layer of ``model`` (recursively) with the ``to`` kind.

    Args:
        model: any module; a BN layer itself is converted and returned.
        to: a name in :data:`TARGETS` -- "bnlab", "torch", "sync", "ghost", "frozen", "groupnorm"
            (``bnlab.surgery.TARGETS[name].doc`` describes each).
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
    return _convert(model, target, options, "")


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
    if type(module) in target.produces:
        return module
    if type(module) in SOURCES:
        new = target.build(module, SOURCES[type(module)], options)
        new.train(module.training)
        for attr in _HOOK_DICTS:
            if hasattr(module, attr) and hasattr(new, attr):
                setattr(new, attr, getattr(module, attr))
        return new
    if isinstance(module, BN_BASES):
        known = ", ".join(sorted(c.__module__.split(".")[0] + "." + c.__name__ for c in SOURCES))
        raise TypeError(
            f"convert does not know {type(module).__qualname__} at '{path or '<model>'}' (a subclass of "
            f"{type(module).__mro__[1].__name__}); converting it would drop what the subclass adds. "
            f"Known: {known}; add it with bnlab.surgery.register_source"
        )
    return module


# --- shared helpers for targets -----------------------------------------------------------------


def bn_config(layer: nn.Module) -> dict[str, Any]:
    """The constructor arguments that describe a BN layer (torch's and bnlab's names)."""
    return {
        "num_features": layer.num_features,
        "eps": layer.eps,
        "momentum": layer.momentum,
        "affine": layer.affine,
        "track_running_stats": layer.track_running_stats,
        "bias": layer.affine and layer.bias is not None,
    }


def _resolve_dims(layer: nn.Module, dims: int | None, options: dict[str, Any], target: str) -> int:
    if dims is not None:
        return dims
    given = options.get("dims")
    if given not in (1, 2, 3):
        raise ValueError(
            f"{type(layer).__name__} accepts inputs of any dimensionality; converting it to '{target}' "
            f"needs dims=1, 2 or 3 (got dims={given!r})"
        )
    return given


def move_state(old: nn.Module, new: nn.Module) -> nn.Module:
    """Give ``new`` the very parameters and buffers of ``old`` (same tensors: values, requires_grad,
    device and dtype carry over). Names are BN's: weight, bias, running_mean, running_var,
    num_batches_tracked."""
    for name in ("weight", "bias"):
        if name in new._parameters:
            new._parameters[name] = old._parameters.get(name)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        if name in new._buffers:
            new._buffers[name] = old._buffers.get(name)
    return new


def bn_class_target(name: str, classes: dict[int, type], doc: str) -> Target:
    """A target that rebuilds each BN as ``classes[dims]`` with the same config and state."""

    def build(layer: nn.Module, dims: int | None, options: dict[str, Any]) -> nn.Module:
        cls = classes[_resolve_dims(layer, dims, options, name)]
        cfg = bn_config(layer)
        kwargs = {k: v for k, v in cfg.items() if k != "bias"}
        if not cfg["bias"] and cfg["affine"]:
            kwargs["bias"] = False  # only pass it when needed: older torch has no bias argument
        new = cls(**kwargs, device="meta")  # shapes only; the tensors come from the old layer
        return move_state(layer, new)

    return Target(name, build, tuple(classes.values()), True, doc)


# --- the targets ----------------------------------------------------------------------------------

register_target(bn_class_target(
    "bnlab", {1: bnlab_bn.BatchNorm1d, 2: bnlab_bn.BatchNorm2d, 3: bnlab_bn.BatchNorm3d},
    "bnlab.nn.BatchNorm1d/2d/3d (drop-in, same state_dict as torch's)",
))
register_target(bn_class_target(
    "torch", {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
    "torch.nn.BatchNorm1d/2d/3d",
))


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def _build_groupnorm(layer: nn.Module, dims: int | None, options: dict[str, Any]) -> nn.Module:
    if not hasattr(layer, "affine"):
        raise ValueError(f"groupnorm cannot take {type(layer).__name__} directly: convert it to 'bnlab' first")
    groups = options.get("num_groups", 32)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"expected num_groups to be a positive int (got {groups!r})")
    cfg = bn_config(layer)
    if cfg["affine"] and not cfg["bias"]:
        raise ValueError(
            f"groupnorm cannot represent {type(layer).__name__}(affine=True, bias=False): GroupNorm has "
            f"weight and bias or neither"
        )
    g = _largest_divisor_at_most(cfg["num_features"], groups)
    new = nn.GroupNorm(g, cfg["num_features"], eps=cfg["eps"], affine=cfg["affine"], device="meta")
    if cfg["affine"]:
        new.weight, new.bias = layer.weight, layer.bias
    return new


register_target(Target(
    "groupnorm", _build_groupnorm, (nn.GroupNorm,), False,
    "torch.nn.GroupNorm, one way (Wu & He 2018). Mapping: weight -> weight (gamma), bias -> bias "
    "(beta), eps -> eps, affine -> affine; num_groups = the largest divisor of C not above the "
    "num_groups option (default 32); running statistics, momentum and track_running_stats are "
    "dropped (GroupNorm normalizes each sample over C/G channels and the spatial dims, in training "
    "and eval alike). With num_groups >= C each channel of each sample is its own group, which "
    "equals training-mode BN on a batch of one sample.",
))


# --- the variants: sync, ghost, frozen -----------------------------------------------------------

from ..nn import frozen as bnlab_frozen  # noqa: E402 -- grouped with the targets that use them
from ..nn import ghost as bnlab_ghost  # noqa: E402
from ..nn import sync_batchnorm as bnlab_sync  # noqa: E402

_PLAIN = {1: bnlab_bn.BatchNorm1d, 2: bnlab_bn.BatchNorm2d, 3: bnlab_bn.BatchNorm3d}
_GHOST = {1: bnlab_ghost.GhostBatchNorm1d, 2: bnlab_ghost.GhostBatchNorm2d, 3: bnlab_ghost.GhostBatchNorm3d}
_FROZEN = {1: bnlab_frozen.FrozenBatchNorm1d, 2: bnlab_frozen.FrozenBatchNorm2d, 3: bnlab_frozen.FrozenBatchNorm3d}

for _dims, _cls in list(_GHOST.items()) + list(_FROZEN.items()):
    register_source(_cls, _dims)
register_source(bnlab_sync.SyncBatchNorm, None)


def _sync_dims(layer: nn.Module) -> int | None:
    """The dims a SyncBatchNorm was converted from (bnlab.nn.SyncBatchNorm remembers the class)."""
    origin = getattr(layer, "_converted_from", None)
    return SOURCES.get(origin) if origin is not None else None


def _build_sync(layer: nn.Module, dims: int | None, options: dict[str, Any]) -> nn.Module:
    cfg = _plain_config(layer)
    new = bnlab_sync.SyncBatchNorm(**cfg, process_group=options.get("process_group"), device="meta")
    _take_state(layer, new)
    if dims is not None:
        new._converted_from = _PLAIN[dims]  # so revert_sync_batchnorm and convert can go back
    return new


register_target(Target(
    "sync", _build_sync, (bnlab_sync.SyncBatchNorm,), True,
    "bnlab.nn.SyncBatchNorm (statistics over all processes; option process_group); remembers the "
    "dimensionality it came from, so converting back needs no dims",
))


def _build_ghost(layer: nn.Module, dims: int | None, options: dict[str, Any]) -> nn.Module:
    vbs = options.get("virtual_batch_size")
    if vbs is None and isinstance(layer, bnlab_ghost._GhostBatchNorm):
        return layer
    if isinstance(vbs, bool) or not isinstance(vbs, int) or vbs < 1:
        raise ValueError(f"converting to 'ghost' needs virtual_batch_size=<positive int> (got {vbs!r})")
    cls = _GHOST[_resolve_dims(layer, dims, options, "ghost")]
    return _take_state(layer, cls(virtual_batch_size=vbs, **_plain_config(layer), device="meta"))


register_target(Target(
    "ghost", _build_ghost, (), True,
    "bnlab.nn.GhostBatchNorm1d/2d/3d (Hoffer et al. 2017: statistics per virtual batch in training); "
    "needs the option virtual_batch_size",
))

# What a frozen layer cannot hold, kept on it so that converting back restores the layer exactly.
_UNFROZEN = "_bnlab_unfrozen"


def _build_frozen(layer: nn.Module, dims: int | None, options: dict[str, Any]) -> nn.Module:
    if not layer.track_running_stats or layer.running_mean is None:
        raise ValueError(f"frozen BN needs running statistics (got {type(layer).__name__} with track_running_stats=False)")
    cls = _FROZEN[_resolve_dims(layer, dims, options, "frozen")]
    new = cls.from_batchnorm(layer)
    new._buffers["running_mean"], new._buffers["running_var"] = layer.running_mean, layer.running_var
    object.__setattr__(new, _UNFROZEN, {
        **bn_config(layer),
        "num_batches_tracked": layer.num_batches_tracked,
        "requires_grad": {n: p.requires_grad for n, p in layer.named_parameters(recurse=False)},
    })
    return new


register_target(Target(
    "frozen", _build_frozen, tuple(_FROZEN.values()), True,
    "bnlab.nn.FrozenBatchNorm1d/2d/3d: the eval map with gamma, beta and the statistics as buffers "
    "(copies of gamma and beta; affine=False freezes with gamma=1, beta=0); momentum, "
    "num_batches_tracked and requires_grad are kept aside so converting back is exact",
))


def _plain_config(layer: nn.Module) -> dict[str, Any]:
    """Constructor arguments of a plain BN for ``layer`` (frozen layers: from what was kept aside)."""
    cfg = dict(getattr(layer, _UNFROZEN, None) or {}) if isinstance(layer, bnlab_frozen._FrozenBatchNorm) else None
    if cfg is None:
        cfg = bn_config(layer)
    elif not cfg:  # built directly as frozen: a plain affine layer with the default momentum
        cfg = {"num_features": layer.num_features, "eps": layer.eps, "momentum": 0.1, "affine": True,
               "track_running_stats": True, "bias": True}
    kwargs = {k: cfg[k] for k in ("num_features", "eps", "momentum", "affine", "track_running_stats")}
    if cfg["affine"] and not cfg["bias"]:
        kwargs["bias"] = False
    return kwargs


def _unfreeze(frozen: nn.Module, new: nn.Module) -> nn.Module:
    """Give a plain BN ``new`` the state of a frozen layer: its buffers become parameters again."""
    kept = getattr(frozen, _UNFROZEN, None) or {}
    grads = kept.get("requires_grad", {})
    for name in ("weight", "bias"):
        if name in new._parameters and new._parameters[name] is not None:
            value = frozen._buffers[name]
            new._parameters[name] = nn.Parameter(value, requires_grad=grads.get(name, True))
    new._buffers["running_mean"], new._buffers["running_var"] = frozen.running_mean, frozen.running_var
    nbt = kept.get("num_batches_tracked")
    new._buffers["num_batches_tracked"] = (
        nbt if nbt is not None else torch.tensor(0, dtype=torch.long, device=frozen.running_mean.device)
    )
    return new


def _take_state(layer: nn.Module, new: nn.Module) -> nn.Module:
    return _unfreeze(layer, new) if isinstance(layer, bnlab_frozen._FrozenBatchNorm) else move_state(layer, new)


def _plain_builder(classes: dict[int, type], name: str):
    """Builder of a plain BN target that also reads frozen and sync layers."""

    def build(layer: nn.Module, dims: int | None, options: dict[str, Any]) -> nn.Module:
        dims = dims if dims is not None else _sync_dims(layer)
        new = classes[_resolve_dims(layer, dims, options, name)](**_plain_config(layer), device="meta")
        return _take_state(layer, new)

    return build


for _name in ("bnlab", "torch"):
    _t = TARGETS[_name]
    register_target(dataclasses.replace(_t, build=_plain_builder({1: _t.produces[0], 2: _t.produces[1], 3: _t.produces[2]}, _name)))
