"""The activation registry: an activation given by name, class or partial becomes a module factory.

Names: ``relu``, ``sigmoid``, ``tanh``, ``gelu``, ``elu``, ``leaky_relu`` (slope 0.01), ``silu``,
``identity``. :func:`register_act` adds more. A class or partial is called with no arguments.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_ACTS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}


def register_act(name: str, factory: Callable[[], nn.Module]) -> None:
    """Register an activation under ``name`` for ``build(..., act=name)``: ``factory()`` returns a new module."""
    if not callable(factory):
        raise TypeError(
            f"expected a callable returning a module for activation {name!r} (got {type(factory).__name__})"
        )
    _ACTS[name] = factory


def available_acts() -> tuple[str, ...]:
    """The registered activation names, sorted."""
    return tuple(sorted(_ACTS))


def act_factory(act: str | Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """``make() -> nn.Module`` for ``act``."""
    if isinstance(act, str):
        if act not in _ACTS:
            raise ValueError(f"expected an activation in {available_acts()} or a class (got {act!r})")
        return _ACTS[act]
    if callable(act):
        return act
    raise TypeError(f"expected an activation name, class or partial (got {type(act).__name__})")
