"""The layer before and the layers after each batch-norm layer of a model: the one graph helper.

:func:`bn_neighbours` answers it for fold (a conv/linear directly before BN), doctor (bias before
BN, placement relative to activations) and the BN + activation fusion (an activation directly
after BN). It reads the data flow from a ``torch.fx`` trace of the forward when the model traces
(every batch-norm layer, conv / linear layer and torch.nn layer kept as one node); otherwise -- a forward with
data-dependent
control flow, a TorchScript module -- from the order of the children of ``nn.Sequential``
containers, where the order of the children is the order of the calls. In a module with its own
forward the order of children says nothing about the data flow, so no neighbours are claimed there.

Each answer says how sure it is: how often each module is called, and whether the layer before
feeds this BN alone. A rewrite (folding, fusing) is safe only where both are called once and the
output flows from one into the other alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from .sources import is_batchnorm

__all__ = ["Neighbours", "bn_neighbours", "LAYERS", "TRANSPOSED"]

# The layers a BN can follow and fold into (subclasses too: each stays one node in a trace).
LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclasses.dataclass
class Neighbours:
    """Where one BN layer sits in the data flow."""

    prev: str | None = None  # module name, "fn:<name>" for a function or method call, None for an input
    prev_single_use: bool = True  # prev's output feeds only this BN
    next: list[str | None] = dataclasses.field(
        default_factory=list
    )  # the users of its output, as prev (None: the output)
    next_sole_input: list[bool] = dataclasses.field(default_factory=list)  # each user takes only the BN's output
    calls: dict[str, int] = dataclasses.field(default_factory=dict)  # module name -> calls in the forward
    traced: bool = True  # from an fx trace (False: from nn.Sequential order)

    def called_once(self, *names: str | None) -> bool:
        return all(name is not None and self.calls.get(name, 0) == 1 for name in names)


def _is_sequential(m: nn.Module) -> bool:
    return isinstance(m, nn.Sequential) or getattr(m, "original_name", None) == "Sequential"


class _Tracer(torch.fx.Tracer):
    def __init__(self, is_bn: Callable[[nn.Module], bool]) -> None:
        super().__init__()
        self._is_bn = is_bn

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return self._is_bn(m) or is_batchnorm(m) or isinstance(m, LAYERS) or super().is_leaf_module(m, qualname)


def _node_name(node: torch.fx.Node) -> str | None:
    if node.op == "call_module":
        return str(node.target)  # a call_module target is the module's name
    if node.op in ("call_function", "call_method"):
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        return f"fn:{name}"
    return None


def _from_fx(model: nn.Module, is_bn) -> dict[str, Neighbours] | None:
    if isinstance(model, torch.jit.ScriptModule):
        return None
    try:
        graph = _Tracer(is_bn).trace(model)
    except Exception:  # noqa: BLE001 -- untraceable forward (data-dependent control flow, ...): fall back
        return None
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    out: dict[str, Neighbours] = {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target in out or not is_bn(model.get_submodule(node.target)):
            continue
        nb = Neighbours(calls=calls)
        source = node.args[0] if node.args else node.kwargs.get("input")  # bn(x) or bn(input=x)
        if isinstance(source, torch.fx.Node):
            nb.prev = _node_name(source)
            nb.prev_single_use = len(source.users) == 1
        for user in node.users:
            nb.next.append(_node_name(user))
            nb.next_sole_input.append(len(user.all_input_nodes) == 1)
        out[node.target] = nb
    return out


def _from_sequentials(model: nn.Module, is_bn) -> dict[str, Neighbours]:
    calls: dict[str, int] = {}
    uses: dict[int, int] = {}
    for m in model.modules(remove_duplicate=False):
        uses[id(m)] = uses.get(id(m), 0) + 1
    named = list(model.named_modules())
    for name, m in named:
        calls[name] = uses[id(m)]  # a module registered twice is called (at least) twice
    out: dict[str, Neighbours] = {}
    for name, seq in named:
        if not _is_sequential(seq):
            continue
        prefix = f"{name}." if name else ""
        children = [(prefix + n, c) for n, c in seq.named_children()]
        for i, (child_name, child) in enumerate(children):
            if not is_bn(child):
                continue
            nb = Neighbours(calls=calls, traced=False)
            if i > 0:
                nb.prev = children[i - 1][0]
            if i + 1 < len(children):
                nb.next, nb.next_sole_input = [children[i + 1][0]], [True]
            out[child_name] = nb
    return out


def bn_neighbours(model: nn.Module, is_bn: Callable[[nn.Module], bool]) -> dict[str, Neighbours]:
    """{BN module name: its :class:`Neighbours`} for every module ``is_bn`` accepts that the data
    flow reaches (module docstring)."""
    found = _from_fx(model, is_bn)
    return _from_sequentials(model, is_bn) if found is None else found
