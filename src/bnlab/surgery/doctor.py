r"""``bnlab.doctor(model, example_input=None)``: find the batch-norm hazards of a model.

Each finding says where, what and why (the reason) and how to fix it. Severity ``"hazard"``
marks what is likely to give wrong or fragile results; ``"note"`` is information (placement of BN
relative to activations is reported, not judged; fusable pairs; the measured train/eval gap). A
clean model reports no hazards.

===================== ======== ================================================================================
code                  severity checked
===================== ======== ================================================================================
frozen-bn-training    hazard   BN in training mode while its parameters are frozen (requires_grad False)
bias-before-bn        hazard   a conv/linear bias feeding BN: the mean subtraction cancels it
decay-like-momentum   hazard   momentum in [0.9, 0.999]: the Keras/Flax decay convention given to PyTorch
batch-size-1          hazard   on the example input a BN layer sees one sample (train mode) -- note in eval
float16-overflow      hazard   running statistics or the folded scale gamma/sqrt(var+eps) exceed 65504
dead-channels         hazard   ``|gamma| < 1e-5``: the channel outputs the constant beta (a layer whose gammas
                               are all exactly 0 is a zero-initialized residual branch: a note)
syncbn-single-process hazard   SyncBatchNorm while torch.distributed is not initialized
unused-act-children   hazard   a BN layer holding drop/activation modules its class never calls: what torch's
                               convert_sync_batchnorm (and Lightning's sync_batchnorm=True) make of a BN +
                               activation layer (timm's BatchNormAct2d, bnlab's BatchNormDropAct2d)
train-eval-gap        hazard   at some BN, the example input's statistics (eval mode) are far from the running
                               ones: mean shift > 1 running std or variance ratio > e, plus sampling noise (a note
                               with the output gap otherwise; layers with their initial statistics are not judged)
zero-init-bn          note     every gamma of a BN exactly 0 (zero-init residual branch)
bn-placement          note     how many BN layers come before / after an activation
fusable               note     conv/linear -> BN pairs that bnlab.fold can fold for inference
===================== ======== ================================================================================

Each check is a small function of the model, its BN layers and their neighbours
(:mod:`bnlab.surgery.graph`) returning one finding or none: :data:`STATIC_CHECKS`, then, with an
example input, :data:`INPUT_CHECKS`. The model is not changed: forwards on the example input run
on deep copies under no_grad. Works on TorchScript modules too (layers are recognized by their
original class names), except that neighbours are then found in ``nn.Sequential`` containers only
and that the train/eval gap is reported as a note only (no hooks to read each layer's input).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from ..core import math as M
from ._stats import watch_input, watch_statistics
from .conventions import DECAY_LIKE_RANGE, looks_like_decay
from .fold import _outputs, feeds_channels, find_pairs
from .graph import Neighbours, bn_neighbours
from .norm_act import is_norm_act
from .sources import is_batchnorm

__all__ = ["doctor", "Finding", "DoctorReport"]

DEAD_GAMMA = 1e-5  # |gamma| below this: the channel is constant
# train-eval-gap: a BN layer's running statistics do not describe the example input when, at that
# layer's input in eval mode, the batch mean is off by more than SHIFT_Z running standard deviations
# (rms over channels) or the batch variance by more than a factor e^LOG_VAR_RATIO (median over
# channels), each plus two standard errors of the example's own sampling noise at that layer. Measured on
# torchvision/timm resnet18 and mobilenet_v2 (tests/test_doctor_zoo.py) with
# statistics calibrated by precise_bn: at most 0.31 and 0.46 on a batch of 4 from the same data; the
# same models on that data scaled by 1.5: at least 1.22 and 1.14. The output gap itself is reported
# only: with calibrated statistics it was 0.19-0.58 on those models (batch noise compounds with depth).
SHIFT_Z = 1.0
LOG_VAR_RATIO = 1.0
FLOAT16_MAX = torch.finfo(torch.float16).max

BN_NAMES = {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm"}
LAYER_NAMES = {"Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Linear"}
ACT_NAMES = {
    "relu",
    "relu6",
    "leakyrelu",
    "leaky_relu",
    "gelu",
    "silu",
    "sigmoid",
    "tanh",
    "elu",
    "selu",
    "celu",
    "hardswish",
    "hardsigmoid",
    "hardtanh",
    "mish",
    "softplus",
    "prelu",
    "rrelu",
    "logsigmoid",
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
    # a ScriptModule always has original_name (a str)
    return getattr(m, "original_name", None) if isinstance(m, torch.jit.ScriptModule) else type(m).__name__  # type: ignore[return-value]


def _is_bn(m: nn.Module) -> bool:
    if isinstance(m, torch.jit.ScriptModule):
        return _class_name(m) in BN_NAMES
    return is_batchnorm(m)


def _is_act_name(name: str) -> bool:
    return name.lower().rstrip("_") in ACT_NAMES


@dataclasses.dataclass
class _Model:
    """What every check looks at: the model, its BN layers by name and where each sits."""

    model: nn.Module
    bns: dict[str, nn.Module]
    neighbours: dict[str, Neighbours]
    modules: dict[str, nn.Module]  # by name (ScriptModules have no get_submodule)
    input_shapes: dict[str, tuple[int, ...]] | None = None  # BN name -> its input's shape on the example

    @property
    def input_dims(self) -> dict[str, int]:
        return {n: len(shape) for n, shape in (self.input_shapes or {}).items()}

    def kind(self, name: str | None) -> str:
        """ "layer", "act", "bn" or "other" for a neighbour (module name or "fn:<name>")."""
        if name is None:
            return "other"
        if name.startswith("fn:"):
            return "act" if _is_act_name(name[3:]) else "other"
        m = self.modules[name]
        if _is_bn(m):
            return "bn"
        if _class_name(m) in LAYER_NAMES:
            return "layer"
        return "act" if _is_act_name(_class_name(m)) else "other"


# --- the checks: each looks at the model and returns a finding or None --------------------------


def _frozen_bn_training(ctx: _Model) -> Finding | None:
    frozen = [
        n
        for n, m in ctx.bns.items()
        if m.training and (ps := list(m.parameters())) and not any(p.requires_grad for p in ps)
    ]
    if not frozen:
        return None
    return Finding(
        "frozen-bn-training",
        "hazard",
        frozen,
        "BN layers are in training mode although their parameters are frozen: they still normalize with "
        "batch statistics and keep overwriting the running statistics, so the 'frozen' part changes",
        "call .eval() on these layers after every model.train(), or set requires_grad back to True",
    )


def _bias_before_bn(ctx: _Model) -> Finding | None:
    # fold's rule: BN cancels the bias only when the layer's output channels are what it normalizes
    # (a Linear before BN on (N, C, L) adds its bias along L, which BN does not subtract)
    biased = [
        nb.prev
        for bn_name, nb in ctx.neighbours.items()
        if nb.prev is not None
        and ctx.kind(nb.prev) == "layer"
        and nb.prev_single_use
        and getattr(ctx.modules[nb.prev], "bias", None) is not None
        and feeds_channels(ctx.modules[nb.prev], ctx.modules[bn_name], ctx.input_dims.get(bn_name)) is not False
    ]
    if not biased:
        return None
    return Finding(
        "bias-before-bn",
        "hazard",
        biased,
        "a conv/linear layer with a bias feeds BN: BN subtracts the per-channel mean, which cancels the "
        "bias exactly (it receives zero gradient and only costs memory)",
        "construct these layers with bias=False (BN's beta is the bias)",
    )


def _decay_like_momentum(ctx: _Model) -> Finding | None:
    decay_like = [n for n, m in ctx.bns.items() if looks_like_decay(getattr(m, "momentum", None))]
    if not decay_like:
        return None
    # the momenta are floats here (looks_like_decay); ctx.bns holds eager and TorchScript layers alike
    momenta = sorted({ctx.bns[n].momentum for n in decay_like})  # type: ignore[type-var]
    return Finding(
        "decay-like-momentum",
        "hazard",
        decay_like,
        f"momentum {', '.join(map(str, momenta))} is in [{DECAY_LIKE_RANGE[0]}, {DECAY_LIKE_RANGE[1]}]: in PyTorch "
        f"momentum is the weight of the NEW batch, so the running statistics follow the last batch almost "
        f"entirely; this is the Keras/Flax convention (decay of the old value)",
        f"use momentum = 1 - value (e.g. {round(1 - momenta[0], 6)}); "  # type: ignore[operator, arg-type]  # floats
        f"bnlab.surgery.conventions.decay_to_momentum converts",
    )


@torch.no_grad()
def _float16_overflow(ctx: _Model) -> Finding | None:
    overflow = []
    for n, m in ctx.bns.items():
        rm, rv = getattr(m, "running_mean", None), getattr(m, "running_var", None)
        if rm is None or rv is None:
            continue
        scale, _ = M.eval_affine(rm, rv, getattr(m, "weight", None), None, m.eps)  # type: ignore[arg-type]  # BN's float
        if max(float(rv.abs().max()), float(rm.abs().max()), float(scale.abs().max())) > FLOAT16_MAX:
            overflow.append(n)
    if not overflow:
        return None
    return Finding(
        "float16-overflow",
        "hazard",
        overflow,
        f"running statistics or the eval scale gamma/sqrt(running_var + eps) exceed the float16 range "
        f"({FLOAT16_MAX:.0f}): the layer overflows to inf under .half() or float16 autocast",
        "keep these layers in float32 (autocast does for BN) or bfloat16; check the data scale feeding them",
    )


def _zero_init(m: nn.Module) -> bool:
    """Every gamma exactly 0: an initialization (zero-init residual, Goyal et al. 2017), not a learned collapse."""
    w = getattr(m, "weight", None)
    return w is not None and w.numel() > 0 and not bool(w.detach().any())


def _dead_channels(ctx: _Model) -> Finding | None:
    counts = {}
    for n, m in ctx.bns.items():
        w = getattr(m, "weight", None)
        if w is not None and not _zero_init(m) and (k := int((w.detach().abs() < DEAD_GAMMA).sum())):
            counts[n] = k
    if not counts:
        return None
    listed = ", ".join(f"{n}: {k}/{ctx.bns[n].num_features}" for n, k in counts.items())
    return Finding(
        "dead-channels",
        "hazard",
        list(counts),
        f"channels with |gamma| < {DEAD_GAMMA} output the constant beta (dead channels: {listed})",
        "prune these channels, or check weight decay / initialization (zero-init gamma is meant for the "
        "last BN of a residual branch only)",
    )


def _zero_init_residual(ctx: _Model) -> Finding | None:
    zeroed = [n for n, m in ctx.bns.items() if _zero_init(m)]
    if not zeroed:
        return None
    return Finding(
        "zero-init-bn",
        "note",
        zeroed,
        "every gamma of these BN layers is exactly 0: the zero-initialized last BN of a residual branch "
        "(Goyal et al. 2017), so each block starts as the identity; training moves gamma away from 0",
        "none needed if these end residual branches; otherwise initialize gamma to 1",
    )


def _syncbn_single_process(ctx: _Model) -> Finding | None:
    sync = [n for n, m in ctx.bns.items() if _class_name(m) == "SyncBatchNorm"]
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not sync or distributed:
        return None
    return Finding(
        "syncbn-single-process",
        "hazard",
        sync,
        "SyncBatchNorm outside a distributed run (torch.distributed is not initialized): there is nothing "
        "to synchronize, and torch's SyncBatchNorm raises in training mode without a process group",
        "bnlab.convert(model, 'bnlab', dims=2) (or 'torch') for single-process use; initialize the "
        "process group before training otherwise",
    )


def _unused_act_children(ctx: _Model) -> Finding | None:
    # Only BN + drop/act classes call child modules; torch's converters keep a fused layer's
    # children on the plain SyncBatchNorm they build, whose forward never calls them.
    stranded = [
        n
        for n, m in ctx.bns.items()
        if not isinstance(m, torch.jit.ScriptModule) and not is_norm_act(m) and any(True for _ in m.children())
    ]
    if not stranded:
        return None
    return Finding(
        "unused-act-children",
        "hazard",
        stranded,
        "these BN layers hold drop/activation modules that their forward never calls: a BN + activation "
        "layer converted by torch's SyncBatchNorm.convert_sync_batchnorm (or Lightning's sync_batchnorm=True) "
        "keeps its activation as an unused child, so the activation is silently skipped",
        "convert the original model with bnlab.convert(model, 'sync') instead: it keeps the activation of "
        "bnlab's BatchNormAct layers and the drop and act modules of timm's BatchNormAct2d and bnlab's "
        "BatchNormDropAct2d (bnlab.nn.SyncBatchNormDropAct2d); with Lightning, leave sync_batchnorm off and "
        "convert first",
    )


def _bn_placement(ctx: _Model) -> Finding | None:
    before = [n for n, nb in ctx.neighbours.items() if any(ctx.kind(u) == "act" for u in nb.next)]
    after = [n for n, nb in ctx.neighbours.items() if ctx.kind(nb.prev) == "act"]
    if not (before or after):
        return None
    return Finding(
        "bn-placement",
        "note",
        sorted(set(before) | set(after)),
        f"{len(before)} BN layer(s) come before an activation (layer -> BN -> act, as in Ioffe & Szegedy), "
        f"{len(after)} after one (act -> BN); both are in use, the difference is usually small",
        "none needed (bnlab's claim C4, BN before or after the activation, measures the difference)",
    )


def _fusable(ctx: _Model) -> Finding | None:
    pairs = [] if isinstance(ctx.model, torch.jit.ScriptModule) else find_pairs(ctx.model, ctx.input_dims)
    if not pairs:
        return None
    return Finding(
        "fusable",
        "note",
        [f"{a} -> {b}" for a, b in pairs],
        f"{len(pairs)} conv/linear -> BN pair(s) can be folded into the conv/linear layer for inference",
        "bnlab.fold(model.eval()) for deployment (it verifies the result with example_input=...)",
    )


# The checks that need no input, in report order.
STATIC_CHECKS = (
    _frozen_bn_training,
    _bias_before_bn,
    _decay_like_momentum,
    _float16_overflow,
    _dead_channels,
    _zero_init_residual,
    _syncbn_single_process,
    _unused_act_children,
    _bn_placement,
    _fusable,
)


# --- the checks that run the model on the example input ------------------------------------------


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


def _bn_input_shapes(ctx: _Model, args: tuple) -> dict[str, tuple[int, ...]]:
    """The input shape of every BN, recorded on a copy in the model's own modes."""
    if isinstance(ctx.model, torch.jit.ScriptModule):  # no hooks: the model's input batch size, best effort
        return {n: tuple(args[0].shape) for n in ctx.bns} if args and isinstance(args[0], Tensor) else {}
    shapes: dict[str, tuple[int, ...]] = {}
    twin = copy.deepcopy(ctx.model)

    def record(name: str):
        def hook(_module, x) -> None:
            shapes.setdefault(name, tuple(x.shape))

        return hook

    handles = [watch_input(m, record(n or "<model>")) for n, m in twin.named_modules() if _is_bn(m)]
    # any error of the user's forward: a BN raising on a batch of one is reported from the shapes seen so far
    with contextlib.suppress(Exception):
        twin(*args)
    for h in handles:
        h.remove()
    return shapes


def _batch_size_1(ctx: _Model, args: tuple) -> Finding | None:
    shapes = _bn_input_shapes(ctx, args) if ctx.input_shapes is None else ctx.input_shapes
    single = [n for n, s in shapes.items() if s and s[0] == 1]
    if not single:
        return None
    train = [n for n in single if ctx.bns[n].training]
    return Finding(
        "batch-size-1",
        "hazard" if train else "note",
        single,
        "these BN layers get a batch of one sample on the example input: in training mode their statistics "
        "come from that one sample (noisy; BatchNorm1d on (1, C) raises); in eval mode this is fine",
        "train with batches of >= 16 (DataLoader(drop_last=True)); for batch-1 training use GroupNorm "
        "(bnlab.convert(model, 'groupnorm')); keep the model in eval mode for single-sample inference",
    )


def _train_eval_gap(ctx: _Model, args: tuple) -> Finding | None:
    """The same input through batch statistics vs running statistics, judged layer by layer."""
    try:
        y_eval, mismatch = _eval_with_statistics(ctx, args)
        y_train = _first_tensor(_bn_train_copy(ctx.model)(*args))
    except Exception as err:  # noqa: BLE001 -- the user's forward failed; say so instead of crashing
        last_line = (str(err).strip().splitlines() or [type(err).__name__])[-1]
        return Finding(
            "train-eval-gap",
            "note",
            ["<model>"],
            f"could not compare train and eval outputs: {last_line}",
            "give an example input with a batch of several samples",
        )
    if y_eval is None or y_train is None or not y_eval.is_floating_point():
        return None
    diff = (y_train.double() - y_eval.double()).norm()
    gap = float(diff / y_eval.double().norm().clamp_min(1e-12))
    fresh = [n for n, m in ctx.bns.items() if _initial_statistics(m)]
    off = {n: v for n, v in mismatch.items() if n not in fresh and not (v[0] <= v[2] and v[1] <= v[3])}
    msg = (
        f"relative output gap ||y_train - y_eval|| / ||y_eval|| = {gap:.3g} on the example input (BN layers in "
        f"train vs eval mode, everything else in eval; on deep networks batch noise alone makes this large)"
    )
    if off:
        worst = max(off, key=lambda n: off[n][0])
        msg += (
            f"; in {len(off)} BN layer(s) the example's statistics are far from the running ones (worst "
            f"{worst}: mean shift {off[worst][0]:.3g} running std, |log variance ratio| {off[worst][1]:.3g}; "
            f"thresholds there {off[worst][2]:.3g} and {off[worst][3]:.3g}): the running statistics do not "
            f"describe this data"
        )
        early = {n: k for n in off if (k := _batches_seen(ctx.bns[n])) is not None}
        if early:
            n, k = next(iter(early.items()))
            msg += (
                f"; {len(early)} of them have seen few training batches ({n}: {k}), so their running "
                # (_batches_seen returned a count: the momentum is a float)
                f"statistics still hold {(1 - ctx.bns[n].momentum) ** k:.0%} or more of their initial values"  # type: ignore[operator]
            )
    elif fresh:
        msg += (
            f"; {len(fresh)} BN layer(s) have their initial running statistics (mean 0, variance 1: no "
            f"training batch seen), so eval mode is not meaningful yet"
        )
    return Finding(
        "train-eval-gap",
        "hazard" if off else "note",
        sorted(off) or ["<model>"],
        msg,
        "recompute the running statistics on training data with bnlab.precise_bn(model, batches), and "
        "check that the example input is preprocessed like the training data; if it is new data from a "
        "shifted domain, bnlab.adapt(model, target_batches) re-estimates the statistics there (AdaBN, "
        "no labels needed; the report's claim C13)"
        if off
        else "none needed",
    )


def _batches_seen(m: nn.Module) -> int | None:
    """num_batches_tracked when the running average still holds over 5% of its initial value
    ((1 - momentum)^k > 0.05, i.e. fewer than 29 batches at momentum 0.1); else None."""
    nbt, momentum = getattr(m, "num_batches_tracked", None), getattr(m, "momentum", None)
    if nbt is None or momentum is None or not isinstance(momentum, float) or not 0 < momentum < 1:
        return None
    k = int(nbt)
    return k if k > 0 and (1.0 - momentum) ** k > 0.05 else None


def _initial_statistics(m: nn.Module) -> bool:
    rm, rv = getattr(m, "running_mean", None), getattr(m, "running_var", None)
    return rm is not None and rv is not None and not bool(rm.any()) and bool((rv == 1).all())


def _eval_with_statistics(ctx: _Model, args: tuple) -> tuple[Tensor | None, dict[str, tuple[float, ...]]]:
    """The eval-mode output on the example, and {BN name: (rms over channels of the mean shift in
    running std, median |log variance ratio|, and their thresholds)} of the example's statistics at
    each BN's input in that forward against its running statistics (none for TorchScript modules).
    Each threshold adds two standard errors of its statistic for the m values per channel the example
    gives that layer (2/sqrt(m) and 2*sqrt(2/(m-1))): a squeeze-excitation BN sees one value per
    sample, whose batch statistics are noisy by themselves."""
    twin = copy.deepcopy(ctx.model).eval()
    out: dict[str, tuple[float, ...]] = {}
    if isinstance(twin, torch.jit.ScriptModule):  # no hooks
        return _first_tensor(twin(*args)), out

    def record(name: str, m: nn.Module):
        def hook(_module, x) -> None:  # what the layer's statistics are taken over (a mask's valid values)
            rm, rv = getattr(m, "running_mean", None), getattr(m, "running_var", None)
            if rm is None or rv is None or name in out or x.dim() < 2 or x.numel() <= x.shape[1]:
                return
            x = x.detach().double()
            dims = [0] + list(range(2, x.dim()))
            mean, var = x.mean(dims), x.var(dims, unbiased=False)
            rv64 = rv.double() + m.eps
            z = ((mean - rm.double()) / rv64.sqrt()).pow(2).mean().sqrt()
            ratio = ((var + m.eps) / rv64).log().abs().median()
            count = x.numel() // x.shape[1]
            out[name] = (float(z), float(ratio), SHIFT_Z + 2 / count**0.5, LOG_VAR_RATIO + 2 * (2 / (count - 1)) ** 0.5)

        return hook

    handles = [watch_statistics(m, record(n or "<model>", m)) for n, m in twin.named_modules() if _is_bn(m)]
    try:
        y = _first_tensor(twin(*args))
    finally:
        for h in handles:
            h.remove()
    return y, out


INPUT_CHECKS = (_batch_size_1, _train_eval_gap)


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
    ctx = _Model(model, bns, bn_neighbours(model, _is_bn), dict(model.named_modules()))
    args = None
    if example_input is not None and bns:
        args = example_input if isinstance(example_input, tuple) else (example_input,)
        with torch.no_grad():  # each BN's input, for batch-size-1 and fold's rule in bias-before-bn
            ctx.input_shapes = _bn_input_shapes(ctx, args)
    findings = [f for check in STATIC_CHECKS if (f := check(ctx)) is not None]
    if args is not None:
        with torch.no_grad():
            findings += [f for check in INPUT_CHECKS if (f := check(ctx, args)) is not None]
    return DoctorReport(findings, len(bns))
