"""``convert(model, to="batchnorm_act")``: fuse BN + the activation right after it into one layer.

Where an ``nn.Sequential`` holds a batch-norm layer immediately followed by an activation bnlab can
fuse (``nn.ReLU``, ``nn.LeakyReLU``, ``nn.SiLU``), the BN becomes a
:class:`~bnlab.nn.BatchNormAct1d`/``2d``/``3d`` with that activation -- same parameters and buffers,
so the state_dict is unchanged -- and the activation's slot holds a :class:`FusedActivation`, an
identity that remembers the activation it replaced. Converting back (``to="bnlab"`` or
``"torch"``) turns the fused layer into plain BN and puts the original activation back, so the
round trip gives identical outputs and state_dicts.

Only ``nn.Sequential`` is searched: there the order of the children is the order of the calls. In
a module with its own ``forward`` the order of children says nothing about the data flow, so such
pairs are left alone (build those models with ``BatchNormAct`` directly).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..nn import norm_act
from . import convert as _convert

_FUSED = {1: norm_act.BatchNormAct1d, 2: norm_act.BatchNormAct2d, 3: norm_act.BatchNormAct3d}


class FusedActivation(nn.Identity):
    """Placeholder for an activation fused into the BN before it; keeps the original module."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "original", original)  # not a child: no state_dict entries

    def extra_repr(self) -> str:
        return f"fused into the preceding BatchNormAct: {self.original!r}"


def _activation_spec(module: nn.Module) -> tuple[str, float] | None:
    if type(module) is nn.ReLU:
        return "relu", 0.01
    if type(module) is nn.LeakyReLU:
        return "leaky_relu", float(module.negative_slope)
    if type(module) is nn.SiLU:
        return "silu", 0.01
    return None


def _fused_layer(bn: nn.Module, dims: int, act: str, slope: float) -> nn.Module:
    cfg = _convert._plain_config(bn)
    new = _FUSED[dims](**cfg, act=act, negative_slope=slope, device="meta")
    new = _convert._take_state(bn, new)
    new.train(bn.training)
    return new


def fuse_activations(model: nn.Module, options: dict[str, Any]) -> nn.Module:
    """Fuse every (BN, activation) pair of adjacent nn.Sequential children, in place."""
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for first, second in zip(names, names[1:]):
            bn, act_module = seq._modules[first], seq._modules[second]
            spec = _activation_spec(act_module)
            if spec is None or type(bn) not in _convert.SOURCES or type(bn) in _FUSED.values():
                continue
            dims = _convert.SOURCES[type(bn)]
            if dims is None:
                dims = _convert._sync_dims(bn) or _convert._resolve_dims(bn, None, options, "batchnorm_act")
            seq._modules[first] = _fused_layer(bn, dims, *spec)
            seq._modules[second] = FusedActivation(act_module)
    return model


def restore_activations(model: nn.Module) -> nn.Module:
    """Put back every FusedActivation's original where its BN is no longer fused, in place."""
    for parent in list(model.modules()):
        names = list(parent._modules)
        for i, name in enumerate(names):
            child = parent._modules[name]
            if isinstance(child, FusedActivation):
                before = parent._modules[names[i - 1]] if i else None
                if not isinstance(before, norm_act._BatchNormAct):
                    parent._modules[name] = child.original
    return model


for _dims, _cls in _FUSED.items():
    _convert.register_source(_cls, _dims)
