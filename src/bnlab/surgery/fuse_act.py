"""``convert(model, to="batchnorm_act")``: fuse BN + the activation right after it into one layer.

Where a batch-norm layer's output goes to an activation module bnlab can fuse (``nn.ReLU``,
``nn.LeakyReLU``, ``nn.SiLU``) and nowhere else, and each of the two is called once, the BN becomes
a :class:`~bnlab.nn.BatchNormAct1d`/``2d``/``3d`` with that activation -- holding the same
parameters and buffers (:mod:`bnlab.nn.swap`), so the state_dict is unchanged -- and the
activation's slot holds a :class:`FusedActivation`, an identity that remembers the activation it
replaced and the BN it was fused into. Converting back (``to="bnlab"`` or ``"torch"``) turns the
fused layer into plain BN and puts the original activation back, so the round trip gives identical
outputs and state_dicts.

The pairs are found by :func:`bnlab.surgery.graph.bn_neighbours`: from a torch.fx trace of the
forward when the model traces, else between neighbours in ``nn.Sequential`` (elsewhere the order
of children says nothing about the data flow, and such pairs are left alone).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..nn import norm_act
from ..nn.swap import plain_config, swap
from .graph import bn_neighbours
from .sources import SOURCES, resolve_dims

__all__ = ["FusedActivation", "fuse_activations", "restore_activations", "FUSED"]

FUSED = {1: norm_act.BatchNormAct1d, 2: norm_act.BatchNormAct2d, 3: norm_act.BatchNormAct3d}


class FusedActivation(nn.Identity):
    """Placeholder for an activation fused into a BatchNormAct; keeps the original module."""

    def __init__(self, original: nn.Module, bn_name: str) -> None:
        super().__init__()
        object.__setattr__(self, "original", original)  # not a child: no state_dict entries
        self.bn_name = bn_name

    def extra_repr(self) -> str:
        return f"fused into {self.bn_name!r}: {self.original!r}"


def _activation_spec(module: nn.Module) -> tuple[str, float] | None:
    if type(module) is nn.ReLU:
        return "relu", 0.01
    if type(module) is nn.LeakyReLU:
        return "leaky_relu", float(module.negative_slope)
    if type(module) is nn.SiLU:
        return "silu", 0.01
    return None


def fuse_activations(model: nn.Module, options: dict[str, Any]) -> nn.Module:
    """Fuse every (BN, activation) pair the data flow allows (module docstring), in place."""
    bn_types = tuple(c for c in SOURCES if c not in FUSED.values())
    for bn_name, nb in bn_neighbours(model, lambda m: type(m) in bn_types).items():
        if len(nb.next) != 1 or nb.next[0] is None or nb.next[0].startswith("fn:") or not nb.next_sole_input[0]:
            continue
        act_name = nb.next[0]
        act = model.get_submodule(act_name)
        spec = _activation_spec(act)
        if spec is None or not nb.called_once(bn_name, act_name):
            continue
        bn = model.get_submodule(bn_name)
        dims = resolve_dims(bn, options, "batchnorm_act")
        fused = swap(bn, FUSED[dims](**plain_config(bn), act=spec[0], negative_slope=spec[1], device="meta"))
        _set(model, bn_name, fused)
        _set(model, act_name, FusedActivation(act, bn_name))
    return model


def restore_activations(model: nn.Module) -> nn.Module:
    """Put back every FusedActivation's original where its BN is no longer fused, in place."""
    for name, module in list(model.named_modules()):
        if isinstance(module, FusedActivation):
            try:
                bn = model.get_submodule(module.bn_name)
            except AttributeError:
                bn = None
            if not isinstance(bn, norm_act._BatchNormAct):
                _set(model, name, module.original)  # type: ignore[arg-type]  # a module
    return model


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    (model.get_submodule(parent) if parent else model)._modules[leaf] = module
