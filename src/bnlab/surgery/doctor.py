r"""``bnlab.doctor(model, example_input=None)``: find the batch-norm hazards of a model.

Each finding says where, what and why (the reason) and how to fix it. Severity ``"hazard"``
marks what is likely to give wrong or fragile results; ``"note"`` is information (placement of BN
relative to activations is reported, not judged; fusable pairs; the measured train/eval gap). A
clean model reports no hazards.

==================== ======== ============================================================================
code                 severity checked
==================== ======== ============================================================================
frozen-bn-training   hazard   BN in training mode while its parameters are frozen (requires_grad False)
bias-before-bn       hazard   a conv/linear bias feeding BN: the mean subtraction cancels it
decay-like-momentum  hazard   momentum in [0.9, 0.999]: the Keras/Flax decay convention given to PyTorch
batch-size-1         hazard   on the example input a BN layer sees one sample (train mode) -- note in eval
float16-overflow     hazard   running statistics or the folded scale gamma/sqrt(var+eps) exceed 65504
dead-channels        hazard   |gamma| < 1e-5: the channel outputs the constant beta
syncbn-single-process hazard  SyncBatchNorm while torch.distributed is not initialized
train-eval-gap       hazard   relative gap ||y_train - y_eval|| / ||y_eval|| above 0.1 on the example
                              input (a note with the value otherwise)
bn-placement         note     how many BN layers come before / after an activation
fusable              note     conv/linear -> BN pairs that bnlab.fold can fold for inference
==================== ======== ============================================================================

The model is not changed: forwards on the example input run on deep copies under no_grad. Works
on TorchScript modules too (layers are recognized by their original class names), except that
neighbours are then found in ``nn.Sequential`` containers only.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from .. import functional as F
from .fold import _LeafTracer, _outputs, find_pairs
from .conventions import DECAY_LIKE_RANGE, looks_like_decay
from .convert import is_batchnorm

__all__ = ["doctor", "Finding", "DoctorReport"]

DEAD_GAMMA = 1e-5  # |gamma| below this: the channel is constant
GAP_THRESHOLD = 0.1  # relative train/eval output gap above this is a hazard
FLOAT16_MAX = torch.finfo(torch.float16).max

BN_NAMES = {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm"}
LAYER_NAMES = {"Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Linear"}
ACT_NAMES = {
    "relu", "relu6", "leakyrelu", "leaky_relu", "gelu", "silu", "sigmoid", "tanh", "elu", "selu", "celu",
    "hardswish", "hardsigmoid", "hardtanh", "mish", "softplus", "prelu", "rrelu", "logsigmoid",
}


@dataclasses.dataclass
class Finding:
    code: str
    severity: str  # "hazard" or "note"
    where: list[str]  # module names ("<model>" for the model itself)
    message: str  # what was found and why it matters
    fix: str


@dataclasses.dataclass
class DoctorReport:
    findings: list[Finding]
    num_bn_layers: int

    @property
    def hazards(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "hazard"]

    def to_json(self) -> dict[str, Any]:
        return {
            "num_bn_layers": self.num_bn_layers,
            "num_hazards": len(self.hazards),
            "findings": [dataclasses.asdict(f) for f in self.findings],
        }

    def to_text(self) -> str:
        lines = [f"bnlab doctor: {self.num_bn_layers} BN layer(s), {len(self.hazards)} hazard(s)"]
        for f in sorted(self.findings, key=lambda f: f.severity != "hazard"):
            where = ", ".join(f.where[:6]) + (f" (+{len(f.where) - 6} more)" if len(f.where) > 6 else "")
            lines += [f"[{f.severity}] {f.code}: {f.message}", f"    where: {where}", f"    fix:   {f.fix}"]
        if not self.hazards:
            lines.append("no hazards found")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


# --- recognizing layers (eager and TorchScript) -------------------------------------------------


def _class_name(m: nn.Module) -> str:
    return getattr(m, "original_name", None) if isinstance(m, torch.jit.ScriptModule) else type(m).__name__


def _is_bn(m: nn.Module) -> bool:
    if isinstance(m, torch.jit.ScriptModule):
        return _class_name(m) in BN_NAMES
    return is_batchnorm(m)


def _is_layer(m: nn.Module) -> bool:
    return _class_name(m) in LAYER_NAMES


def _is_act_name(name: str) -> bool:
    return name.lower().rstrip("_") in ACT_NAMES


@dataclasses.dataclass
class _Neighbours:
    prev: str | None = None  # module name, or "fn:<name>" for a function call
    prev_kind: str = "other"  # "layer", "act", "bn", "other"
    prev_single_use: bool = True  # prev's output feeds only this BN
    next_kinds: list[str] = dataclasses.field(default_factory=list)


def _kind_of_module(m: nn.Module) -> str:
    if _is_bn(m):
        return "bn"
    if _is_layer(m):
        return "layer"
    return "act" if _is_act_name(_class_name(m)) else "other"


class _Tracer(_LeafTracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_batchnorm(m) or super().is_leaf_module(m, qualname)


def _fx_neighbours(model: nn.Module) -> dict[str, _Neighbours] | None:
    if isinstance(model, torch.jit.ScriptModule):
        return None
    try:
        graph = _Tracer().trace(model)
    except Exception:  # untraceable forward: fall back to Sequential neighbours
        return None

    def kind(node: torch.fx.Node) -> tuple[str | None, str]:
        if node.op == "call_module":
            return node.target, _kind_of_module(model.get_submodule(node.target))
        if node.op in ("call_function", "call_method"):
            name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
            return f"fn:{name}", "act" if _is_act_name(name) else "other"
        return None, "other"

    out: dict[str, _Neighbours] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not _is_bn(model.get_submodule(node.target)):
            continue
        nb = _Neighbours()
        if node.args and isinstance(node.args[0], torch.fx.Node):
            nb.prev, nb.prev_kind = kind(node.args[0])
            nb.prev_single_use = len(node.args[0].users) == 1
        nb.next_kinds = [kind(u)[1] for u in node.users]
        out[node.target] = nb
    return out


def _sequential_neighbours(model: nn.Module) -> dict[str, _Neighbours]:
    out: dict[str, _Neighbours] = {}
    for name, seq in model.named_modules():
        if _class_name(seq) != "Sequential":
            continue
        children = list(seq.named_children())
        for i, (child_name, child) in enumerate(children):
            if not _is_bn(child):
                continue
            nb = _Neighbours()
            if i > 0:
                nb.prev = f"{name}.{children[i - 1][0]}" if name else children[i - 1][0]
                nb.prev_kind = _kind_of_module(children[i - 1][1])
            if i + 1 < len(children):
                nb.next_kinds = [_kind_of_module(children[i + 1][1])]
            out[f"{name}.{child_name}" if name else child_name] = nb
    return out


# --- the checks ---------------------------------------------------------------------------------


@torch.no_grad()
def _static_checks(model: nn.Module, bns: dict[str, nn.Module], nbs: dict[str, _Neighbours]) -> list[Finding]:
    found: list[Finding] = []

    frozen = [n for n, m in bns.items() if m.training and (ps := list(m.parameters())) and not any(p.requires_grad for p in ps)]
    if frozen:
        found.append(Finding(
            "frozen-bn-training", "hazard", frozen,
            "BN layers are in training mode although their parameters are frozen: they still normalize with "
            "batch statistics and keep overwriting the running statistics, so the 'frozen' part changes",
            "call .eval() on these layers after every model.train(), or set requires_grad back to True",
        ))

    modules = dict(model.named_modules())
    biased = [nb.prev for nb in nbs.values()
              if nb.prev_kind == "layer" and nb.prev_single_use and getattr(modules[nb.prev], "bias", None) is not None]
    if biased:
        found.append(Finding(
            "bias-before-bn", "hazard", biased,
            "a conv/linear layer with a bias feeds BN: BN subtracts the per-channel mean, which cancels the "
            "bias exactly (it receives zero gradient and only costs memory)",
            "construct these layers with bias=False (BN's beta is the bias)",
        ))

    decay_like = [n for n, m in bns.items() if looks_like_decay(getattr(m, "momentum", None))]
    if decay_like:
        momenta = sorted({bns[n].momentum for n in decay_like})
        found.append(Finding(
            "decay-like-momentum", "hazard", decay_like,
            f"momentum {', '.join(map(str, momenta))} is in [{DECAY_LIKE_RANGE[0]}, {DECAY_LIKE_RANGE[1]}]: in PyTorch "
            f"momentum is the weight of the NEW batch, so the running statistics follow the last batch almost "
            f"entirely; this is the Keras/Flax convention (decay of the old value)",
            f"use momentum = 1 - value (e.g. {round(1 - momenta[0], 6)}); "
            f"bnlab.surgery.conventions.decay_to_momentum converts",
        ))

    overflow, dead = [], []
    dead_counts: dict[str, int] = {}
    for n, m in bns.items():
        rm, rv = getattr(m, "running_mean", None), getattr(m, "running_var", None)
        w = getattr(m, "weight", None)
        if rm is not None and rv is not None:
            scale, _ = F.eval_affine(rm, rv, w, None, m.eps)
            if max(float(rv.abs().max()), float(rm.abs().max()), float(scale.abs().max())) > FLOAT16_MAX:
                overflow.append(n)
        if w is not None:
            k = int((w.detach().abs() < DEAD_GAMMA).sum())
            if k:
                dead.append(n)
                dead_counts[n] = k
    if overflow:
        found.append(Finding(
            "float16-overflow", "hazard", overflow,
            f"running statistics or the eval scale gamma/sqrt(running_var + eps) exceed the float16 range "
            f"({FLOAT16_MAX:.0f}): the layer overflows to inf under .half() or float16 autocast",
            "keep these layers in float32 (autocast does for BN) or bfloat16; check the data scale feeding them",
        ))
    if dead:
        counts = ", ".join(f"{n}: {dead_counts[n]}/{bns[n].num_features}" for n in dead)
        found.append(Finding(
            "dead-channels", "hazard", dead,
            f"channels with |gamma| < {DEAD_GAMMA} output the constant beta (dead channels: {counts})",
            "prune these channels, or check weight decay / initialization (zero-init gamma is meant for the "
            "last BN of a residual branch only)",
        ))

    sync = [n for n, m in bns.items() if _class_name(m) == "SyncBatchNorm"]
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if sync and not distributed:
        found.append(Finding(
            "syncbn-single-process", "hazard", sync,
            "SyncBatchNorm outside a distributed run (torch.distributed is not initialized): there is nothing "
            "to synchronize, and torch's SyncBatchNorm raises in training mode without a process group",
            "bnlab.convert(model, 'bnlab', dims=2) (or 'torch') for single-process use; initialize the "
            "process group before training otherwise",
        ))

    before = [n for n, nb in nbs.items() if "act" in nb.next_kinds]
    after = [n for n, nb in nbs.items() if nb.prev_kind == "act"]
    if before or after:
        found.append(Finding(
            "bn-placement", "note", sorted(set(before) | set(after)),
            f"{len(before)} BN layer(s) come before an activation (layer -> BN -> act, as in Ioffe & Szegedy), "
            f"{len(after)} after one (act -> BN); both are in use, the difference is usually small",
            "none needed (bnlab's claim C4, BN before or after the activation, measures the difference)",
        ))

    pairs = [] if isinstance(model, torch.jit.ScriptModule) else find_pairs(model)
    if pairs:
        found.append(Finding(
            "fusable", "note", [f"{a} -> {b}" for a, b in pairs],
            f"{len(pairs)} conv/linear -> BN pair(s) can be folded into the conv/linear layer for inference",
            "bnlab.fold(model.eval()) for deployment (it verifies the result with example_input=...)",
        ))
    return found


def _bn_train_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode except its BN layers (train mode): isolates BN's train/eval difference."""
    twin = copy.deepcopy(model).eval()
    for m in twin.modules():
        if _is_bn(m):
            m.train()
    return twin


def _first_tensor(out) -> Tensor | None:
    outs = _outputs(out)
    return outs[0] if outs else None


@torch.no_grad()
def _input_checks(model: nn.Module, bns: dict[str, nn.Module], example_input) -> list[Finding]:
    found: list[Finding] = []
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    # Input shapes of every BN, recorded on a copy in the model's own modes.
    shapes: dict[str, tuple[int, ...]] = {}
    if not isinstance(model, torch.jit.ScriptModule):
        twin = copy.deepcopy(model)
        def record(name: str):
            def hook(_module, inputs) -> None:
                shapes.setdefault(name, tuple(inputs[0].shape))
            return hook

        handles = [m.register_forward_pre_hook(record(n or "<model>")) for n, m in twin.named_modules() if _is_bn(m)]
        try:
            twin(*args)
        except Exception:  # noqa: BLE001 -- any error of the user's forward
            pass  # a BN raising on a batch of one is reported below from the shapes seen so far
        for h in handles:
            h.remove()
    elif args and isinstance(args[0], Tensor):
        shapes = {n: tuple(args[0].shape) for n in bns}  # best effort: the model's input batch size
    single = [n for n, s in shapes.items() if s and s[0] == 1]
    if single:
        train = [n for n in single if bns[n].training]
        found.append(Finding(
            "batch-size-1", "hazard" if train else "note", single,
            "these BN layers get a batch of one sample on the example input: in training mode their statistics "
            "come from that one sample (noisy; BatchNorm1d on (1, C) raises); in eval mode this is fine",
            "train with batches of >= 16 (DataLoader(drop_last=True)); for batch-1 training use GroupNorm "
            "(bnlab.convert(model, 'groupnorm')); keep the model in eval mode for single-sample inference",
        ))
    # Train/eval gap: the same input through batch statistics vs running statistics.
    evaluated = copy.deepcopy(model).eval()
    try:
        y_eval = _first_tensor(evaluated(*args))
        y_train = _first_tensor(_bn_train_copy(model)(*args))
    except Exception as err:  # noqa: BLE001 -- the user's forward failed; say so instead of crashing
        last_line = (str(err).strip().splitlines() or [type(err).__name__])[-1]
        found.append(Finding(
            "train-eval-gap", "note", ["<model>"], f"could not compare train and eval outputs: {last_line}",
            "give an example input with a batch of several samples",
        ))
        return found
    if y_eval is not None and y_train is not None and y_eval.is_floating_point():
        diff = (y_train.double() - y_eval.double()).norm()
        gap = float(diff / y_eval.double().norm().clamp_min(1e-12))
        hazard = not gap <= GAP_THRESHOLD  # NaN counts as a hazard
        found.append(Finding(
            "train-eval-gap", "hazard" if hazard else "note", ["<model>"],
            f"relative output gap ||y_train - y_eval|| / ||y_eval|| = {gap:.3g} on the example input "
            f"(BN layers in train vs eval mode, everything else in eval)"
            + (f", above {GAP_THRESHOLD}: the running statistics do not describe this data" if hazard else ""),
            "recompute the running statistics on training data with bnlab.precise_bn(model, batches), and "
            "check that the example input is preprocessed like the training data" if hazard else "none needed",
        ))
    return found


def doctor(model: nn.Module, example_input=None) -> DoctorReport:
    """Check ``model`` for batch-norm hazards; see the module docstring for the list.

    Args:
        model: an ``nn.Module`` or a TorchScript module. Not modified.
        example_input: optional input (a tuple is unpacked as positional arguments) for the checks that
            need a forward: batch-size-1 and the train/eval gap.

    Returns:
        A :class:`DoctorReport`: ``.findings``, ``.hazards``, ``.to_text()``, ``.to_json()``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module or a TorchScript module (got {type(model).__name__})")
    bns = {n or "<model>": m for n, m in model.named_modules() if _is_bn(m)}
    nbs = _fx_neighbours(model)
    if nbs is None:
        nbs = _sequential_neighbours(model)
    findings = _static_checks(model, bns, nbs)
    if example_input is not None and bns:
        findings += _input_checks(model, bns, example_input)
    return DoctorReport(findings, len(bns))

