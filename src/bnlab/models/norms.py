"""The normalization registry: a norm given by name, class or partial becomes a layer factory.

A model asks for its norm layers through :func:`norm_factory`, which returns
``make(num_features) -> nn.Module`` for the model's kind of feature map:

* ``dim=1`` -- (N, C) or (N, C, L) features (MLPs, 1D convolutions);
* ``dim=2`` -- (N, C, H, W) feature maps.

Registered names:

=============  ==================================================================================
``none``       no normalization (:class:`torch.nn.Identity`)
``bn``         bnlab's :class:`~bnlab.nn.BatchNorm1d` / ``2d``
``torch_bn``   :class:`torch.nn.BatchNorm1d` / ``2d`` (the reference implementation)
``gn``         :class:`torch.nn.GroupNorm` with ``groups`` groups (Wu & He 2018); default 8, lowered
               to the largest divisor of C not above it (25 channels -> 5 groups)
``ln``         layer norm over ``(C, *spatial)`` per sample with a per-channel affine, i.e.
               ``GroupNorm(1, C)`` (Ba et al. 2016 as used in conv nets)
``noisy_bn``   bnlab BN plus Santurkar's injected noise in training (:mod:`bnlab.models.noisy_bn`)
``ghost_bn``   :class:`~bnlab.nn.GhostBatchNorm1d` / ``2d`` (``virtual_batch_size`` in norm_kw)
``brn``        :class:`~bnlab.nn.BatchRenorm1d` / ``2d`` (``r_max``, ``d_max`` in norm_kw)
``frozen_bn``  :class:`~bnlab.nn.FrozenBatchNorm1d` / ``2d`` (fixed statistics, no trainable parameters)
=============  ==================================================================================

More are added with :func:`register_norm`, e.g. for layers built elsewhere::

    register_norm("ghost_bn", {1: GhostBatchNorm1d, 2: GhostBatchNorm2d})   # classes per dim
    register_norm("my_norm", lambda num_features, dim, **kw: MyNorm(num_features, **kw))

Keyword options of a norm (``norm_kw``) are passed to the factory / class, e.g.
``norm_factory("ghost_bn", 1, virtual_batch_size=32)``. A class or ``functools.partial`` given
instead of a name is called as ``cls(num_features, **norm_kw)`` whatever the dim.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from .. import nn as bnn
from . import noisy_bn

NormFactory = Callable[..., nn.Module]  # (num_features, dim, **kw) -> module

_NORMS: dict[str, NormFactory] = {}

# The module types whose affine parameters count as "the norm's gamma and beta" (see freeze.py).
_NORM_TYPES: list[type] = [nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, bnn.batchnorm._BatchNorm]


def register_norm(name: str, factory: NormFactory | Mapping[int, type]) -> None:
    """Register ``factory(num_features, dim, **kw)`` -- or a {dim: class} mapping -- under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"expected a non-empty norm name (got {name!r})")
    if isinstance(factory, Mapping):
        classes = dict(factory)

        def factory(num_features: int, dim: int, **kw: Any) -> nn.Module:
            if dim not in classes:
                raise ValueError(f"norm {name!r} has no layer for {dim}D features (has {sorted(classes)})")
            return classes[dim](num_features, **kw)
    elif not callable(factory):
        raise TypeError(
            f"expected a callable or a {{dim: class}} mapping for norm {name!r} (got {type(factory).__name__})"
        )
    _NORMS[name] = factory


def register_norm_type(cls: type) -> None:
    """Count ``cls`` as a norm layer in :func:`is_norm_layer` (subclasses of bnlab's and torch's
    batch norm, GroupNorm and LayerNorm already count)."""
    if cls not in _NORM_TYPES:
        _NORM_TYPES.append(cls)


def is_norm_layer(module: nn.Module) -> bool:
    """Whether ``module`` is a normalization layer (its weight/bias are the norm's gamma/beta)."""
    return isinstance(module, tuple(_NORM_TYPES))


def available_norms() -> tuple[str, ...]:
    """The registered norm names, sorted."""
    return tuple(sorted(_NORMS))


def norm_factory(norm: str | type | Callable[..., nn.Module], dim: int, **norm_kw: Any) -> Callable[[int], nn.Module]:
    """``make(num_features)`` for ``norm`` on ``dim``-D features (1: (N, C[, L]), 2: (N, C, H, W))."""
    if dim not in (1, 2):
        raise ValueError(f"expected dim 1 or 2 (got {dim!r})")
    if isinstance(norm, str):
        if norm not in _NORMS:
            raise ValueError(f"expected a norm in {available_norms()} or a class (got {norm!r})")
        factory = _NORMS[norm]
        return lambda num_features: factory(num_features, dim, **norm_kw)
    if callable(norm):
        return lambda num_features: norm(num_features, **norm_kw)
    raise TypeError(f"expected a norm name, class or partial (got {type(norm).__name__})")


def _groups(num_features: int, groups: int) -> int:
    """The largest divisor of num_features that is at most ``groups``."""
    if groups < 1:
        raise ValueError(f"expected groups >= 1 (got {groups})")
    return max(g for g in range(1, min(groups, num_features) + 1) if num_features % g == 0)


def _none(num_features: int, dim: int) -> nn.Module:
    return nn.Identity()


def _gn(num_features: int, dim: int, groups: int = 8, **kw: Any) -> nn.Module:
    return nn.GroupNorm(_groups(num_features, groups), num_features, **kw)


def _ln(num_features: int, dim: int, **kw: Any) -> nn.Module:
    return nn.GroupNorm(1, num_features, **kw)


register_norm("none", _none)
register_norm("bn", {1: bnn.BatchNorm1d, 2: bnn.BatchNorm2d})
register_norm("torch_bn", {1: nn.BatchNorm1d, 2: nn.BatchNorm2d})
register_norm("gn", _gn)
register_norm("ln", _ln)
register_norm("noisy_bn", {1: noisy_bn.NoisyBatchNorm1d, 2: noisy_bn.NoisyBatchNorm2d})
register_norm("ghost_bn", {1: bnn.GhostBatchNorm1d, 2: bnn.GhostBatchNorm2d})  # norm_kw: virtual_batch_size
register_norm("brn", {1: bnn.BatchRenorm1d, 2: bnn.BatchRenorm2d})  # norm_kw: r_max, d_max
register_norm("frozen_bn", {1: bnn.FrozenBatchNorm1d, 2: bnn.FrozenBatchNorm2d})
