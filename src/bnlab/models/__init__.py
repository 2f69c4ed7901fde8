"""Models through one registry: ``bnlab.models.build(name, norm=..., placement=..., act=..., **kw)``.

==========  ===============================================  ===========  ============  =========
name        what                                             features     default act   input
==========  ===============================================  ===========  ============  =========
``cnn``     MNIST-1D's reference CNN (:mod:`.cnn1d`)          1D conv      relu          (L,)
``mlp``     Ioffe & Szegedy's 3x100 MLP (:mod:`.mlp`)         (N, C)       sigmoid       any
``cnn2d``   small 2D CNN (:mod:`.cnn2d`)                      2D conv      relu          (C, H, W)
``resnet``  small CIFAR ResNet (:mod:`.resnet`)               2D conv      relu          (C, H, W)
==========  ===============================================  ===========  ============  =========

``norm`` is a registered name (:mod:`.norms`: none, bn, torch_bn, gn, ln, noisy_bn, and whatever
:func:`register_norm` adds), a class or a partial; ``norm_kw`` its options. ``placement`` is
"before" or "after" the activation (:mod:`.block`); ``act`` a name (:mod:`.acts`), class or partial.
``input_shape`` and ``num_classes`` default to MNIST-1D's ((40,), 10); pass a data set's
``input_shape`` / ``num_classes`` for others. Other keywords go to the model (e.g. ``widths``).

Every model has ``blocks`` (an ``nn.ModuleList`` of :class:`~.block.Block` or residual blocks,
whose ``op``/``norm``/``act`` children are named) and a linear ``head``::

    model = build("mlp", norm="bn", act="sigmoid", input_shape=(40,))
    model.blocks[-1].act        # the last hidden sigmoid: hook it for its input's percentiles

:mod:`.freeze` trains subsets of the weights (only the norms' gamma/beta, or k random weights).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from .acts import act_factory, available_acts, register_act
from .block import PLACEMENTS, Block, check_placement
from .cnn1d import CNN1d
from .cnn2d import CNN2d
from .mlp import MLP
from .norms import available_norms, is_norm_layer, norm_factory, register_norm, register_norm_type
from .resnet import ResNet

__all__ = [
    "build",
    "default_act",
    "register_model",
    "available_models",
    "register_norm",
    "register_norm_type",
    "register_act",
    "available_norms",
    "available_acts",
    "is_norm_layer",
    "norm_factory",
    "act_factory",
    "Block",
    "PLACEMENTS",
]


@dataclasses.dataclass(frozen=True)
class _Entry:
    cls: Callable[..., nn.Module]  # cls(input_shape, num_classes, norm, act, placement, **kw)
    dim: int  # the norm layers' feature dim: 1 for (N, C[, L]), 2 for (N, C, H, W)
    act: str  # the model's default activation


_MODELS: dict[str, _Entry] = {}


def register_model(name: str, cls: Callable[..., nn.Module], dim: int, default_act: str = "relu") -> None:
    """Register ``cls(input_shape, num_classes, norm, act, placement, **kw)`` under ``name``.

    ``norm`` arrives as ``make(num_features)`` for ``dim``-D features and ``act`` as ``make()``.
    """
    if dim not in (1, 2):
        raise ValueError(f"expected dim 1 or 2 (got {dim!r})")
    _MODELS[name] = _Entry(cls, dim, default_act)


def available_models() -> tuple[str, ...]:
    """The registered model names, sorted."""
    return tuple(sorted(_MODELS))


def default_act(name: str) -> Any:
    """The activation model ``name`` builds when given none (None for a name not registered)."""
    entry = _MODELS.get(name)
    return entry.act if entry is not None else None


_BUILD_ARGS = ("input_shape", "num_classes", "norm", "act", "placement")


def model_options(name: str) -> tuple[str, ...] | None:
    """The keyword options model ``name`` takes (``widths``, ...); None if it takes any."""
    if name not in _MODELS:
        raise ValueError(f"expected a model in {available_models()} (got {name!r})")
    params = inspect.signature(_MODELS[name].cls).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in params if p.kind in kinds and p.name not in _BUILD_ARGS)


def check_options(
    name: str,
    norm: Any = "none",
    act: Any = None,
    *,
    norm_kw: Mapping[str, Any] | None = None,
    model_kw: Mapping[str, Any] | None = None,
) -> None:
    """A ValueError for what :func:`build` would refuse -- an unknown model, norm or activation, a
    model option the model does not take, a norm option its layer does not take -- without building
    the model (so a command can say so before loading data)."""
    options = model_options(name)
    unknown = sorted(set(model_kw or {}) - set(options)) if options is not None else []
    if unknown:
        raise ValueError(f"expected options of model {name!r} among {list(options or ())} (got {', '.join(unknown)})")
    make_norm = norm_factory(norm, _MODELS[name].dim, **dict(norm_kw or {}))
    try:
        make_norm(4)
    except TypeError as e:
        raise ValueError(f"expected options that norm {norm!r} takes (got {dict(norm_kw or {})}: {e})") from None
    act_factory(_MODELS[name].act if act is None else act)


def build(
    name: str,
    norm: Any = "none",
    placement: str = "before",
    act: Any = None,
    *,
    norm_kw: Mapping[str, Any] | None = None,
    input_shape: tuple[int, ...] = (40,),
    num_classes: int = 10,
    **kw: Any,
) -> nn.Module:
    """A fresh model ``name`` with the given norm, placement and activation (module docstring).

    The weights are initialised from torch's default generator: seed it for a reproducible model.
    """
    options = model_options(name)
    unknown = sorted(set(kw) - set(options)) if options is not None else []
    if unknown:
        raise ValueError(f"expected options of model {name!r} among {list(options or ())} (got {', '.join(unknown)})")
    entry = _MODELS[name]
    check_placement(placement)
    make_norm = norm_factory(norm, entry.dim, **dict(norm_kw or {}))
    make_act = act_factory(entry.act if act is None else act)
    return entry.cls(tuple(input_shape), int(num_classes), make_norm, make_act, placement, **kw)


register_model("cnn", CNN1d, dim=1, default_act="relu")
register_model("mlp", MLP, dim=1, default_act="sigmoid")
register_model("cnn2d", CNN2d, dim=2, default_act="relu")
register_model("resnet", ResNet, dim=2, default_act="relu")
