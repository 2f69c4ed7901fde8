r"""``bnlab.fold(model)``: fold eval-mode batch norm into the layer before it, for inference.

In eval mode BN is a per-channel affine map (:func:`bnlab.core.math.eval_affine`)::

    scale = gamma / sqrt(running_var + eps)        shift = beta - running_mean * scale

so ``BN(conv(x)) = conv'(x)`` with each *output* channel ``o`` of the weight multiplied by
``scale[o]`` and the bias replaced by ``b' = b * scale + shift`` (``b = 0`` for a layer without
bias). This holds for Conv1d/2d/3d and Linear (weight ``(out, in/groups, *k)`` / ``(out, in)``) and
for ConvTranspose1d/2d/3d, whose weight is ``(in, out/groups, *k)``: output channel
``o = g * (out/groups) + j`` lives at ``weight[g*in/groups : (g+1)*in/groups, j]``, so the scale is
applied per group (torch.nn.utils.fusion's transpose path ignores groups).

Two levels, as in torch.nn.utils.fusion: :func:`fold_weights` works on tensors;
:func:`fold` checks its preconditions (eval mode), finds the pairs (:mod:`bnlab.surgery.graph`: a
torch.fx trace of the forward when the model traces, else neighbours in ``nn.Sequential``), and
replaces each layer's weight and bias and each folded BN with ``nn.Identity`` (a BN with drop/act
modules, timm's BatchNormAct2d or :class:`bnlab.nn.BatchNormDropAct2d`, with those modules). A pair is folded only
when the layer's
output feeds the BN alone and each module is called once, so the result computes the same function.
A Linear acts on the *last* dim of its input and BN normalizes dim 1: Linear -> BN is folded only
when the BN's input is 2D (N, C), seen on ``example_input``; on a (N, C, L) input (even with L == C)
the pair is left as it is, and without an example a Linear -> BatchNorm1d pair is left with a
warning saying so (:func:`feeds_channels`).
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import Protocol, cast

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils import parametrize

from ..core import math as M
from ..nn import batchnorm as bnlab_bn
from ._stats import watch_input
from .graph import LAYERS, TRANSPOSED, bn_neighbours
from .norm_act import after_fold, is_norm_act

__all__ = [
    "fold",
    "fold_weights",
    "find_pairs",
    "feeds_channels",
    "max_abs_diff",
    "FoldReport",
    "bench_models",
    "FOLDABLE_BN",
]

# BN classes whose eval forward is exactly the affine map above (subclasses may add behaviour).
FOLDABLE_BN: set[type] = {
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    bnlab_bn.BatchNorm1d,
    bnlab_bn.BatchNorm2d,
    bnlab_bn.BatchNorm3d,
}
FLOAT16_MAX = torch.finfo(torch.float16).max


def _foldable(module: nn.Module) -> bool:
    """A BN whose eval forward is the affine map (:data:`FOLDABLE_BN`), or that map followed by drop/act
    modules (:func:`bnlab.surgery.norm_act.is_norm_act`), which stay after the fold."""
    return type(module) in FOLDABLE_BN or is_norm_act(module)


@dataclasses.dataclass
class FoldReport:
    pairs: list[tuple[str, str]]  # (layer name, BN name) folded
    max_abs_diff: float | None  # max |folded(x) - model(x)| on the example input, if one was given
    float16_overflow: list[str]  # layers whose folded weight/bias or BN running_var exceed 65504
    left: list[str] = dataclasses.field(default_factory=list)  # "layer -> BN" pairs left unfolded, and why


def fold_weights(
    weight: Tensor,
    bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    bn_weight: Tensor | None,
    bn_bias: Tensor | None,
    *,
    transpose: bool = False,
    groups: int = 1,
) -> tuple[Tensor, Tensor]:
    """The weight and bias of ``layer`` followed by eval-mode BN, as one layer.

    Args:
        weight: ``(out, in/groups, *k)`` (conv, linear) or ``(in, out/groups, *k)`` (transpose=True).
        bias: ``(out,)`` or None.
        running_mean, running_var, eps, bn_weight, bn_bias: the BN layer's state, ``(out,)``.
        transpose: weight is a ConvTranspose weight. Default: ``False``
        groups: the transposed convolution's groups. Default: 1

    Returns:
        ``(weight', bias')`` in the dtypes of ``weight`` (bias' in weight's dtype when bias is None),
        computed in at least float32.
    """
    scale, shift = M.eval_affine(running_mean, running_var, bn_weight, bn_bias, eps)
    acc = torch.promote_types(torch.promote_types(weight.dtype, torch.float32), scale.dtype)
    scale, shift = scale.to(acc), shift.to(acc)
    out = scale.numel()
    w = weight.to(acc)
    k = (1,) * (weight.dim() - 2)
    if transpose:
        if weight.shape[0] % groups or weight.shape[1] * groups != out:
            raise ValueError(
                f"expected a transposed weight (in, out/groups, ...) with out={out}, groups={groups} "
                f"(got {tuple(weight.shape)})"
            )
        # (in, out/g, *k) -> (g, in/g, out/g, *k): scale output channel g*out/g + j
        wg = w.view(groups, weight.shape[0] // groups, weight.shape[1], *weight.shape[2:])
        w = (wg * scale.view(groups, 1, out // groups, *k)).view(weight.shape)
    else:
        if weight.shape[0] != out:
            raise ValueError(f"expected a weight with {out} output channels in dim 0 (got {tuple(weight.shape)})")
        w = w * scale.view(out, *((1,) * (weight.dim() - 1)))
    b = shift if bias is None else bias.to(acc) * scale + shift
    return w.to(weight.dtype), b.to(weight.dtype if bias is None else bias.dtype)


class _FoldedBN(Protocol):
    """What fold reads of a BN layer with running statistics (torch's, bnlab's, frozen)."""

    running_mean: Tensor
    running_var: Tensor
    eps: float
    weight: Tensor | None
    bias: Tensor | None


def _out_channels(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else cast(int, layer.out_channels)


def _can_fold(layer: nn.Module, bn: nn.Module) -> bool:
    return bool(
        isinstance(layer, LAYERS)
        and _foldable(bn)
        and bn.track_running_stats
        and bn.running_mean is not None
        and bn.num_features == _out_channels(layer)
    )


def feeds_channels(layer: nn.Module, bn: nn.Module, input_dim: int | None) -> bool | None:
    """Whether ``layer``'s output channels are the dimension ``bn`` normalizes (dim 1), given the
    number of dims of ``bn``'s input where known: a convolution's always are; a Linear acts on the
    *last* dim, which is dim 1 only for a 2D (N, C) input. None: a Linear before a BN that takes 2D
    or 3D input (BatchNorm1d) whose input was not seen. fold and doctor's bias check use this rule."""
    if not isinstance(layer, nn.Linear):
        return True
    if input_dim is not None:
        return input_dim == 2
    dims = getattr(bn, "_input_dims", None)  # bnlab's layers say which input dims they take
    if dims is None and isinstance(bn, (nn.BatchNorm2d, nn.BatchNorm3d)):
        dims = (4,) if isinstance(bn, nn.BatchNorm2d) else (5,)
    if dims is not None and 2 not in dims:
        return False
    return None


def bn_input_dims(model: nn.Module, example_input) -> dict[str, int]:
    """{BN name: its input's number of dims} on a forward of ``example_input`` (a tuple is unpacked)."""
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    dims: dict[str, int] = {}
    handles = [
        watch_input(m, lambda _m, x, n=name: dims.setdefault(n, x.dim()))  # type: ignore[misc, arg-type]  # mypy infers no lambda with a default argument
        for name, m in model.named_modules()
        if _foldable(m) or isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for h in handles:
            h.remove()
    return dims


def find_pairs(model: nn.Module, input_dims: dict[str, int] | None = None) -> list[tuple[str, str]]:
    """(layer name, BN name) pairs that :func:`fold` would fold: a conv / linear layer whose output
    feeds the BN alone, each called once (:func:`bnlab.surgery.graph.bn_neighbours`), and whose output
    channels are what the BN normalizes (:func:`feeds_channels`, with the BN input dims where known:
    a pair it cannot decide is listed; :func:`fold` then asks for an example input)."""
    pairs = []
    for bn_name, nb in bn_neighbours(model, _foldable).items():
        if nb.prev is None or nb.prev.startswith("fn:") or not nb.prev_single_use:
            continue
        layer, bn = model.get_submodule(nb.prev), model.get_submodule(bn_name)
        if (
            nb.called_once(nb.prev, bn_name)
            and _can_fold(layer, bn)
            and feeds_channels(layer, bn, (input_dims or {}).get(bn_name)) is not False
        ):
            pairs.append((nb.prev, bn_name))
    return pairs


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _outputs(out) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _outputs(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _outputs(o)]
    return []


@torch.no_grad()
def max_abs_diff(model_a: nn.Module, model_b: nn.Module, example_input) -> float:
    """``max |model_a(x) - model_b(x)|`` over every tensor output (a tuple input is unpacked)."""
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    outs_a, outs_b = _outputs(model_a(*args)), _outputs(model_b(*args))
    if len(outs_a) != len(outs_b) or not outs_a:
        raise ValueError(f"expected the models to return the same tensors (got {len(outs_a)} and {len(outs_b)})")
    return max(float((a.double() - b.double()).abs().max()) if a.numel() else 0.0 for a, b in zip(outs_a, outs_b))


def fold(model: nn.Module, example_input=None, *, inplace: bool = False, report: bool = False):
    """Fold every eval-mode BN that directly follows a conv / transposed conv / linear layer into it.

    Args:
        model: a model in eval mode (every submodule); fold refuses training mode, where BN uses
            batch statistics and cannot be folded.
        example_input: if given, the folded model is checked against the original on it and the
            max abs difference is reported (a tuple is unpacked as positional arguments).
        inplace: modify ``model`` itself. Default: ``False`` (a deep copy is folded).
        report: also return a :class:`FoldReport`. Default: ``False``

    Returns:
        The folded model, or ``(model, FoldReport)`` with ``report=True``.

    Warns:
        UserWarning when a folded weight or bias, or a folded BN's running_var, exceeds the float16
        range (65504): the model would overflow after ``.half()``; and when a Linear -> BatchNorm1d
        pair is left unfolded because no example input showed a 2D BN input (module docstring).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module (got {type(model).__name__})")
    training = [name or "<model>" for name, m in model.named_modules() if m.training]
    if training:
        raise ValueError(
            f"fold is for inference: expected the model in eval mode, call model.eval() first "
            f"(got training mode in {', '.join(training[:3])}{' ...' if len(training) > 3 else ''})"
        )
    # A parametrized weight (torch.nn.utils.parametrize) is a function of other tensors: replacing
    # it needs remove_parametrizations, which edits the class a deep copy shares with the original.
    parametrized = [
        f"{layer_name}.{name}"
        for layer_name, _ in find_pairs(model)
        for name in ("weight", "bias")
        if parametrize.is_parametrized(model.get_submodule(layer_name), name)
    ]
    if parametrized:
        raise ValueError(
            f"fold: expected plain weights in the layers to fold into (got a parametrized {', '.join(parametrized)}); "
            f"bake them first: torch.nn.utils.parametrize.remove_parametrizations(layer, name)"
        )
    reference = copy.deepcopy(model) if example_input is not None and inplace else model
    if not inplace:
        model = copy.deepcopy(model)
    dims = {} if example_input is None else bn_input_dims(model, example_input)
    pairs, left = [], []
    for layer_name, bn_name in find_pairs(model, dims):
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        if feeds_channels(layer, bn, dims.get(bn_name)):
            pairs.append((layer_name, bn_name))
        else:
            left.append(f"{layer_name} -> {bn_name}")  # feeds_channels None: no example input
    if left:
        warnings.warn(
            f"left unfolded: {', '.join(left)}: a Linear acts on the last dim and BN normalizes dim 1, the "
            f"same dim only for a 2D (N, C) input; pass example_input=... so fold can see the BN's input",
            stacklevel=2,
        )
    overflow = []
    with torch.no_grad():
        for layer_name, bn_name in pairs:
            layer = cast("nn.Linear | _ConvNd", model.get_submodule(layer_name))
            bn_module = model.get_submodule(bn_name)
            bn = cast(_FoldedBN, bn_module)  # find_pairs checked it (_can_fold)
            groups = getattr(layer, "groups", 1)
            w, b = fold_weights(
                layer.weight,
                layer.bias,
                bn.running_mean,
                bn.running_var,
                bn.eps,
                bn.weight,
                bn.bias,
                transpose=isinstance(layer, TRANSPOSED),
                groups=groups,
            )
            if max(float(w.abs().max()), float(b.abs().max()), float(bn.running_var.abs().max())) > FLOAT16_MAX:
                overflow.append(layer_name)
            layer.weight = nn.Parameter(w, requires_grad=layer.weight.requires_grad)
            layer.bias = nn.Parameter(b, requires_grad=layer.weight.requires_grad)
            _set_submodule(model, bn_name, after_fold(bn_module) if is_norm_act(bn_module) else nn.Identity())
    if overflow:
        warnings.warn(
            f"folded weights, biases or running_var exceed the float16 range ({FLOAT16_MAX:.0f}) in "
            f"{', '.join(overflow)}: keep these layers in float32 or bfloat16",
            stacklevel=2,
        )
    diff = None if example_input is None else max_abs_diff(reference, model, example_input)
    return (model, FoldReport(pairs, diff, overflow, left)) if report else model


def bench_models(
    batch: int = 64,
    channels: int = 32,
    size: int = 32,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    bn: str = "torch",
) -> tuple[nn.Module, nn.Module, Tensor]:
    """A small eval-mode CNN, its folded copy and an input, for timing folded vs unfolded inference.

    Three conv3x3-BN-ReLU blocks (3 -> channels -> 2*channels -> 2*channels, max-pool after the
    first two) and a linear classifier, with randomized running statistics and affine parameters
    so the fold is not an identity. ``bn`` is "torch" (torch.nn.BatchNorm2d) or "bnlab"
    (bnlab.nn.BatchNorm2d, through :func:`bnlab.convert`). Returns ``(model, folded, x)`` with x of
    shape ``(batch, 3, size, size)``.
    """
    if bn not in ("torch", "bnlab"):
        raise ValueError(f"expected bn='torch' or 'bnlab' (got {bn!r})")
    gen = torch.Generator().manual_seed(seed)
    c1, c2 = channels, 2 * channels

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    torch.manual_seed(seed)
    model = nn.Sequential(
        *block(3, c1),
        nn.MaxPool2d(2),
        *block(c1, c2),
        nn.MaxPool2d(2),
        *block(c2, c2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c2, 10),
    ).to(dtype)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                assert m.running_mean is not None and m.running_var is not None  # built with the defaults
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    if bn == "bnlab":
        from .convert import convert

        model = convert(model, "bnlab", inplace=True)
    model.eval()
    x = torch.randn(batch, 3, size, size, generator=gen).to(dtype)
    return model, fold(model), x
