"""k copies of a lab model trained as one: grouped layers built from k independently initialised models.

:func:`group` takes k models of the same architecture (``cnn`` or ``mlp``, made of
:class:`~bnlab.models.block.Block`) and returns one module whose parameters are the k members'
stacked, so that one forward, one backward and one optimizer step train all of them. Nothing is
shared between members: a convolution is grouped (group i is member i's kernel), a linear layer is
a batched matrix product (``baddbmm``, matrix i is member i's), and batch norm runs over k*C
channels, so each member keeps exactly its own per-channel statistics (ghost BN: per ghost batch,
split along N as in a member; Batch Renorm: its r and d too) -- on bnlab's fast kernels,
which take the (N, k*C, 1, L) channels_last, (1, k*W, N) and (N, k*W) inputs it gets. Activations are elementwise.

Layouts, with k members and a batch of N examples per member::

    CNN   input (N, k, L) -> convs (N, k*C, 1, L') channels_last -> head: (k, classes, C*L') @ (k, C*L', N)
    MLP   input (k, N, F) -> linear (k, W, F) @ (k, F, N) -> norm and act on (1, k*W, N) -> next ...

The MLP's norm takes the product's output as it lies, viewed as (1, k*W, N): each channel's N values
are one row, over which a batch norm's statistics are those of the member's (N, W) column -- no
transposes between the products and the norms. A norm whose statistics are not one channel over the
whole batch (ghost BN, group norm), or whose noise is drawn for the member's shape (noisy BN), takes
(N, k*W) instead (:data:`_BY_CHANNEL`).

The output is always (k, N, classes); ``scores()`` gives the same as (k, classes, N), the layout in which
the members' loss is taken. :func:`ungroup` writes the trained state back into the k
members' modules (same classes, names and shapes as the models ``train()`` builds).

Only these models, with a norm of per-channel statistics (batch norm, ghost BN, Batch Renorm), group
or layer norm (per example and group: GroupNorm over k*G groups) or none, and elementwise activations, are
grouped
(:func:`why_not_groupable` says what else a model holds); the others train one seed at a time.
"""

from __future__ import annotations

import contextvars
import copy
from collections.abc import Iterable
from typing import Any, cast, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.block import Block
from ..models.cnn1d import CNN1d
from ..models.mlp import MLP
from ..models.noisy_bn import NoisyBatchNorm1d, draw_noise
from ..nn.batchnorm import BatchNorm1d, BatchNorm2d
from ..nn.ghost import GhostBatchNorm1d, GhostBatchNorm2d
from ..nn.norm_act import BatchNormAct1d, BatchNormAct2d
from ..nn.renorm import BatchRenorm1d, BatchRenorm2d

__all__ = [
    "GroupedCNN1d",
    "GroupedMLP",
    "group",
    "mask_gradients",
    "member_optimizer",
    "ungroup",
    "why_not_groupable",
]

# Elementwise activations without state or randomness: the same module serves all members.
_ELEMENTWISE = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.ELU, nn.LeakyReLU, nn.SiLU, nn.Identity)


class _NoisyGroup:
    """Mixin for a batch norm over k members' channels: Santurkar's noise on member i's channels drawn from
    ``generators[i]`` (its own), as :class:`~bnlab.models.noisy_bn.NoisyBatchNorm1d` draws it alone (the
    same draws for a tensor of the member's shape), then applied to all members in one ``y * s + m`` in
    the layout of ``y`` (so the gradient keeps it, and a member's bits do not depend on its slot)."""

    generators: list[torch.Generator]

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)  # type: ignore[misc]  # a mixin: the BN class after it in the MRO
        if not self.training:  # type: ignore[attr-defined]  # (the BN class's)
            return y
        c = y.shape[1] // len(self.generators)
        member = (y.shape[0], c, *y.shape[2:])
        s, m = zip(*(draw_noise(member, y.device, g) for g in self.generators))
        layout = torch.channels_last if y.dim() == 4 and not y.is_contiguous() else torch.contiguous_format
        s_all, m_all = (torch.cat(t, 1).to(y.dtype).contiguous(memory_format=layout) for t in (s, m))
        return y * s_all + m_all


class _NoisyGroup1d(_NoisyGroup, BatchNorm1d):
    pass


class _NoisyGroup2d(_NoisyGroup, BatchNorm2d):
    pass


# Norms grouped as one layer over k*C channels, whose statistics and state are per channel (or, like
# num_batches_tracked and Batch Renorm's limits, shared by members that step together): bnlab's
# BatchNorm1d, torch's (the reference), ghost BN (per channel within each ghost batch, split along N
# as in a member) and Batch Renorm; each with the class for the CNN's (N, k*C, 1, L) layout. Group
# norm (layer norm too: one group) is grouped apart, as GroupNorm(k*G, k*C): member i's G groups of its own
# channels are groups i*G..(i+1)*G. Noisy BN is grouped as bnlab's batch norm followed by each member's noise
# drawn from that member's own generator (bnlab.models.noisy_bn.own_generator), whose draws are then what the
# member alone draws, in the same order.
_NORMS_2D: dict[type[nn.Module], type[nn.modules.batchnorm._BatchNorm]] = {
    BatchNorm1d: BatchNorm2d,
    nn.BatchNorm1d: nn.BatchNorm2d,
    GhostBatchNorm1d: GhostBatchNorm2d,
    BatchRenorm1d: BatchRenorm2d,
    NoisyBatchNorm1d: _NoisyGroup2d,
}
# The same for the MLP's (N, k*W) layout, where a norm that is not listed groups as its own class.
_NORMS_1D: dict[type[nn.Module], type[nn.modules.batchnorm._BatchNorm]] = {NoisyBatchNorm1d: _NoisyGroup1d}


def why_not_groupable(model: nn.Module) -> str | None:
    """Why ``model`` cannot be trained in a group (None if it can)."""
    if type(model) not in (CNN1d, MLP):
        return f"model {type(model).__name__} (grouped: the 1D CNN and the MLP)"
    for i, block in enumerate(cast("CNN1d | MLP", model).blocks):
        if type(block) is not Block:
            return f"block {i} is a {type(block).__name__}"
        norm, act = block.norm, block.act
        if type(norm) not in (nn.Identity, nn.GroupNorm) and type(norm) not in _NORMS_2D:
            names = ", ".join(f"{t.__module__.partition('.')[0]}.{t.__name__}" for t in (*_NORMS_2D, nn.GroupNorm))
            return f"norm {type(norm).__name__} (grouped: {names} or none)"
        if isinstance(norm, NoisyBatchNorm1d) and norm.generator is None:
            return (
                "noisy BN drawing from torch's default generator, whose draws the members would share "
                "(bnlab.models.noisy_bn.own_generator gives each member its own)"
            )
        if type(act) not in _ELEMENTWISE:
            return f"activation {type(act).__name__}"
    return None


@overload
def _stack(tensors: list[Tensor], dim: int = 0, cat: bool = False) -> Tensor: ...
@overload
def _stack(tensors: list[Tensor | None], dim: int = 0, cat: bool = False) -> Tensor | None: ...
def _stack(tensors: list[Tensor] | list[Tensor | None], dim: int = 0, cat: bool = False) -> Tensor | None:
    if tensors[0] is None:
        return None
    # the members are of one architecture: all or none of them have the tensor
    present = cast("list[Tensor]", tensors)
    return torch.cat(present, dim) if cat else torch.stack(present, dim)


@overload
def _param(t: Tensor, like: Tensor) -> nn.Parameter: ...
@overload
def _param(t: Tensor | None, like: Tensor | None) -> nn.Parameter | None: ...
def _param(t: Tensor | None, like: Tensor | None) -> nn.Parameter | None:
    if t is None:
        return None
    assert like is not None  # t was built from members' tensors like this one
    return nn.Parameter(t.detach().clone(), requires_grad=like.requires_grad)


# Where :func:`_put` notes (member parameter, grouped parameter, part) while :func:`member_optimizer` writes a member.
_WRITTEN: contextvars.ContextVar[list[tuple[Tensor, Tensor, Any]] | None] = contextvars.ContextVar(
    "bnlab_grouped_written", default=None
)


def _put(member: Tensor, grouped: Tensor, part: Any, grads: bool) -> None:
    """Member's parameter ``member`` := ``grouped[part]``; with ``grads`` its ``.grad`` too (None where the
    grouped parameter has none)."""
    member.data.copy_(grouped.data[part])
    if grads:
        member.grad = None if grouped.grad is None else grouped.grad[part].clone()
    if (written := _WRITTEN.get()) is not None:
        written.append((member, grouped, part))


class _FirstConv(torch.autograd.Function):
    """k members' Conv1d of one input channel each, from the padded (N, k, Lp) input to the channels_last
    (N, L', k*C) output, on bnlab's loops (:mod:`bnlab.kernels.numba_conv`): each member's sums run in one
    fixed order over its own entries, so its bits do not depend on its slot. ``wt`` (K, k*C) holds tap j
    of every member's channels in row j, ``bias`` (k*C,) the stacked members' biases (zeros where they
    have none: its gradient is then unused); both contiguous, the layout the loops take."""

    @staticmethod
    def forward(xp: Tensor, wt: Tensor, bias: Tensor, stride: int, dilation: int) -> Tensor:
        from ..kernels.numba_conv import conv1_forward

        taps, kc = wt.shape
        y = torch.empty(xp.shape[0], (xp.shape[2] - dilation * (taps - 1) - 1) // stride + 1, kc, dtype=xp.dtype)
        e = torch.empty(xp.shape[2], kc, dtype=xp.dtype)
        conv1_forward(
            xp.detach().numpy(), wt.detach().numpy(), bias.detach().numpy(), stride, dilation, y.numpy(), e.numpy()
        )
        return y

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        xp, wt, _, stride, dilation = inputs
        ctx.save_for_backward(xp, wt)
        ctx.stride, ctx.dilation = stride, dilation

    @staticmethod
    def backward(ctx, grad: Tensor):
        from ..kernels.numba_conv import conv1_backward

        xp, wt = ctx.saved_tensors
        dwt = torch.zeros_like(wt)
        dbt = torch.zeros(wt.shape[1], dtype=wt.dtype)
        dxp = torch.zeros_like(xp) if ctx.needs_input_grad[0] else xp.new_empty(0, 0, 0)
        e = torch.empty(xp.shape[2], wt.shape[1], dtype=xp.dtype)
        x_np, w_np, dy_np = xp.detach().numpy(), wt.detach().numpy(), grad.contiguous().numpy()
        conv1_backward(x_np, dy_np, w_np, ctx.stride, ctx.dilation, dwt.numpy(), dbt.numpy(), dxp.numpy(), e.numpy())
        return (
            dxp if ctx.needs_input_grad[0] else None,
            dwt if ctx.needs_input_grad[1] else None,
            dbt if ctx.needs_input_grad[2] else None,
            None,
            None,
        )


class GroupedConv1d(nn.Module):
    """k Conv1d of the same shape as one grouped convolution, on (N, k*Cin, 1, L) -> (N, k*Cout, 1, L')
    in channels_last memory (or, for one input channel per member, from the (N, k, L) input, on bnlab's own
    loops on the CPU: :class:`_FirstConv`)."""

    def __init__(self, convs: list[nn.Conv1d]) -> None:
        super().__init__()
        c = convs[0]
        if c.groups != 1 or c.padding_mode != "zeros":
            raise ValueError(f"expected plain Conv1d layers (got groups={c.groups}, padding_mode={c.padding_mode!r})")
        self.k, self.stride, self.dilation = len(convs), c.stride[0], c.dilation[0]
        self.padding = cast(int, c.padding[0])  # a number: Conv1d keeps a string only where it was given one
        # Measured (docs/guide/seeds.md): oneDNN's grouped convolution runs about 3x faster
        # on channels_last memory than on contiguous (N, C, L), as a 2D convolution of height 1; with one
        # input channel per member (the first layer) it is depthwise and slower, and so were unfold + bmm
        # (their permutes and gradients were copies costing more than the products): that layer runs on
        # bnlab's loops instead (_FirstConv), on the CPU. Fixed by shape, so a member computes the same
        # way in every group.
        self.first = c.in_channels == 1
        self.weight = _param(_stack([m.weight for m in convs], cat=True), c.weight)  # (k*Cout, Cin, K)
        self.bias = _param(_stack([m.bias for m in convs], cat=True), c.bias)  # (k*Cout,)

    def forward(self, x: Tensor) -> Tensor:
        if self.first and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
            # x: (N, k, L), one input channel per member -> (N, L', k*Cout), viewed as (N, k*Cout, 1, L')
            xp = F.pad(x, (self.padding, self.padding)).contiguous()  # (a no-op but without padding)
            kc, taps = self.weight.shape[0], self.weight.shape[2]
            wt = self.weight.view(kc, taps).t().contiguous()  # (K, k*C): tap j of every member's channels
            bias = self.bias if self.bias is not None else x.new_zeros(kc)
            y = _FirstConv.apply(xp, wt, bias, self.stride, self.dilation)
            return y.transpose(1, 2).unsqueeze(2)  # (N, k*Cout, 1, L') in channels_last memory
        if self.first:
            x = x.unsqueeze(2)  # (N, k, 1, L)
        x = x.contiguous(memory_format=torch.channels_last)  # (N, k*Cin, 1, L), a no-op between layers
        weight = self.weight.unsqueeze(2)  # (k*Cout, Cin, 1, K)
        return F.conv2d(x, weight, self.bias, (1, self.stride), (0, self.padding), (1, self.dilation), self.k)

    def member(self, i: int, conv: nn.Conv1d, grads: bool = False) -> None:
        part = slice(i * conv.out_channels, (i + 1) * conv.out_channels)
        _put(conv.weight, self.weight, part, grads)
        if conv.bias is not None:
            assert self.bias is not None  # grouped from members with biases
            _put(conv.bias, self.bias, part, grads)


class GroupedLinear(nn.Module):
    """k Linear layers as one batched product, on transposed activations: (k, in, N) -> (k, out, N).

    ``W @ x^T`` rather than ``x @ W^T``: autograd then forms the weight's gradient as
    ``dy^T @ x``, whose result for one member does not depend on its slot in the batch; the
    product in the other orientation (``x^T @ dy``) gave last-bit differences between slots
    (measured on MKL's batched product, whose kernels depend on each matrix's alignment).
    """

    def __init__(self, linears: list[nn.Linear]) -> None:
        super().__init__()
        lin = linears[0]
        self.weight = _param(torch.stack([m.weight for m in linears]), lin.weight)  # (k, out, in)
        bias = torch.stack([m.bias.unsqueeze(1) for m in linears]) if lin.bias is not None else None
        self.bias = _param(bias, lin.bias)  # (k, out, 1)

    def forward(self, x_t: Tensor) -> Tensor:
        if self.bias is None:
            return torch.bmm(self.weight, x_t)
        return torch.baddbmm(self.bias, self.weight, x_t)

    def member(self, i: int, lin: nn.Linear, grads: bool = False) -> None:
        _put(lin.weight, self.weight, i, grads)
        if lin.bias is not None:
            assert self.bias is not None  # grouped from members with biases
            _put(lin.bias, self.bias, (i, slice(None), 0), grads)


def _norm_options(norm: nn.Module) -> dict[str, Any]:
    """The constructor arguments beyond batch norm's that a grouped copy of ``norm`` needs (the
    members' are equal: their configs differ only in the seed)."""
    if isinstance(norm, GhostBatchNorm1d):
        return {"virtual_batch_size": norm.virtual_batch_size}  # ghosts split along N, as in a member
    if isinstance(norm, BatchRenorm1d):
        return {"r_max": norm.r_max, "d_max": norm.d_max, "warmup_steps": norm.warmup_steps}
    return {}


def _cat_affine(out: nn.Module, norms: list[nn.Module]) -> None:
    """``out``'s weight and bias := the members' concatenated, trainable where the members' are."""
    with torch.no_grad():
        for name in ("weight", "bias"):
            p = getattr(norms[0], name)
            if p is not None:
                getattr(out, name).copy_(torch.cat([getattr(m, name) for m in norms]))
                getattr(out, name).requires_grad_(p.requires_grad)


def _group_norm(norms: list[nn.Module], as_2d: bool = False, relu: bool = False) -> nn.Module:
    """One norm over the k members' channels (their parameters and buffers concatenated); with
    ``as_2d`` the BatchNorm2d of the same library, for (N, k*C, 1, L) input (the same statistics:
    per channel over N and L); with ``relu`` (bnlab's BN only) the BatchNormAct layer that applies
    the ReLU after it."""
    n = norms[0]
    if type(n) is nn.Identity:
        return nn.Identity()
    if isinstance(n, nn.GroupNorm):  # member i's groups are groups i*G..(i+1)*G of its own channels
        gn = _GroupNorm(n.num_groups * len(norms), n.num_channels * len(norms), eps=n.eps, affine=n.affine)
        _cat_affine(gn, norms)
        return gn.to(n.weight.device) if n.affine else gn
    n = cast(nn.modules.batchnorm._BatchNorm, n)  # the other norms why_not_groupable lets through
    k = len(norms)
    cls = _NORMS_2D[type(n)] if as_2d else _NORMS_1D.get(type(n), type(n))
    options = _norm_options(n)
    if relu:
        cls, options["act"] = _WITH_RELU[cls], "relu"
    out = cls(
        n.num_features * k,
        eps=n.eps,
        momentum=n.momentum,
        affine=n.affine,
        track_running_stats=n.track_running_stats,
        **options,
    )
    _cat_affine(out, norms)
    if isinstance(out, _NoisyGroup):
        out.generators = [
            cast(torch.Generator, cast(NoisyBatchNorm1d, m).generator) for m in norms
        ]  # each set: why_not_groupable
    with torch.no_grad():
        if n.track_running_stats:  # the buffers exist (Tensor | None to mypy, Tensor | Module for a member)
            out.running_mean.copy_(torch.cat([m.running_mean for m in norms]))  # type: ignore[union-attr, misc]
            out.running_var.copy_(torch.cat([m.running_var for m in norms]))  # type: ignore[union-attr, misc]
            out.num_batches_tracked.copy_(n.num_batches_tracked)  # type: ignore[union-attr, arg-type]
    return out.to(n.weight.device if n.weight is not None else n.running_mean.device)


class _GroupNorm(nn.GroupNorm):
    """GroupNorm over k members' groups, on contiguous memory: each (example, group) is then one
    contiguous run of values, reduced the same way at any offset, so a member's result does not depend
    on its slot (torch's kernel for channels_last memory reduces across the channels of several groups
    at once, and a member's bits then depend on its slot); the output goes back to the input's layout."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4 and not x.is_contiguous():
            return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)
        return super().forward(x)


# The grouped MLP's norms that take (1, k*W, N) (GroupedMLP): their statistics and state are per channel
# over all of the batch -- one column of a member's (N, W) is one row of N values here -- and the activations
# after them are elementwise. Exact types: ghost BN and the noisy group derive from these and take (N, k*W).
_BY_CHANNEL: tuple[type[nn.Module], ...] = (nn.Identity, BatchNorm1d, BatchNormAct1d, nn.BatchNorm1d, BatchRenorm1d)


def _norm_member(grouped: nn.Module, i: int, norm: nn.Module, grads: bool = False) -> None:
    if type(norm) is nn.Identity:
        return
    # the norms why_not_groupable lets through: a GroupNorm or a batch norm
    c = (
        norm.num_channels
        if isinstance(norm, nn.GroupNorm)
        else cast(nn.modules.batchnorm._BatchNorm, norm).num_features
    )
    part = slice(i * c, (i + 1) * c)
    with torch.no_grad():
        for name in ("weight", "bias"):
            if (t := getattr(norm, name)) is not None:
                _put(t, getattr(grouped, name), part, grads)
    if isinstance(norm, nn.GroupNorm):
        return  # no running statistics
    norm = cast(nn.modules.batchnorm._BatchNorm, norm)  # the other norms why_not_groupable lets through
    with torch.no_grad():
        for name in ("running_mean", "running_var"):
            if (t := getattr(norm, name)) is not None:
                t.copy_(getattr(grouped, name)[part])
        if norm.num_batches_tracked is not None:
            norm.num_batches_tracked.copy_(grouped.num_batches_tracked)  # type: ignore[arg-type]  # it tracks too


def _block(model: CNN1d | MLP, i: int) -> Block:
    return cast(Block, model.blocks[i])  # why_not_groupable checked that every block is a Block


# bnlab's batch norm and its class that applies an activation after it, in one kernel per pass
_WITH_RELU: dict[type[nn.Module], type[BatchNormAct1d | BatchNormAct2d]] = {
    BatchNorm1d: BatchNormAct1d,
    BatchNorm2d: BatchNormAct2d,
}


def _norm_and_act(
    norms: list[nn.Module], act: nn.Module, placement: str, as_2d: bool = False
) -> tuple[nn.Module, nn.Module]:
    """A grouped block's norm (:func:`_group_norm`) and activation: bnlab's batch norm followed by a
    ReLU as one :class:`~bnlab.nn.BatchNormAct2d` (or 1d) layer and the ReLU an identity -- the same
    outputs and gradients, in one kernel per pass instead of three (measured in
    docs/guide/seeds.md); other pairs as they are."""
    relu = placement == "before" and type(act) is nn.ReLU and type(norms[0]) is BatchNorm1d
    return _group_norm(norms, as_2d, relu), (nn.Identity() if relu else act)


class _GroupedBlock(nn.Module):
    def __init__(self, op: GroupedConv1d | GroupedLinear, norm: nn.Module, act: nn.Module, placement: str) -> None:
        super().__init__()
        self.op, self.norm, self.act, self.placement = op, norm, act, placement

    def normalize(self, x: Tensor) -> Tensor:
        """norm and act in the block's order, on (N, k*C[, L])."""
        if self.placement == "before":
            return self.act(self.norm(x))
        return self.norm(self.act(x))


class _Grouped(nn.Module):
    """A grouped model: :meth:`scores` (k, classes, N), the head's own layout, in which the members' loss is
    taken (:func:`~bnlab.train.trainer.members_loss`: along N); ``forward`` gives them as (k, N, classes), as
    the members give theirs."""

    k: int

    def scores(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.scores(x).transpose(1, 2)  # (k, classes, N) -> (k, N, classes)


class GroupedCNN1d(_Grouped):
    """k :class:`~bnlab.models.cnn1d.CNN1d` as one: input (N, k, L), output (k, N, classes)."""

    def __init__(self, members: list[CNN1d]) -> None:
        super().__init__()
        self.k = len(members)
        first = members[0]
        self.blocks = nn.ModuleList(
            _GroupedBlock(
                GroupedConv1d([cast(nn.Conv1d, _block(m, i).op) for m in members]),
                *_norm_and_act(
                    [_block(m, i).norm for m in members], _block(first, i).act, _block(first, i).placement, True
                ),
                _block(first, i).placement,
            )
            for i in range(len(first.blocks))
        )
        self.head = GroupedLinear([m.head for m in members])

    def scores(self, x: Tensor) -> Tensor:
        for block in cast("Iterable[_GroupedBlock]", self.blocks):
            x = block.normalize(block.op(x))  # (N, k*C, 1, L') in channels_last memory, i.e. (N, L', k*C)
        n, length = x.shape[0], x.shape[3]
        x = x.permute(0, 3, 1, 2).reshape(n, length, self.k, -1)  # (N, L', k, C), a view
        x = x.permute(2, 3, 1, 0).reshape(self.k, -1, n)  # (k, C*L', N): each member's flatten(1), transposed
        return self.head(x)  # (k, classes, N)

    def inputs(self, x: Tensor) -> Tensor:
        """Members' batches (k, N, L) (or (k, N, 1, L)) in this model's input layout (N, k, L)."""
        return x.reshape(self.k, x.shape[1], x.shape[-1]).transpose(0, 1)


class GroupedMLP(_Grouped):
    """k :class:`~bnlab.models.mlp.MLP` as one: input (k, N, features), output (k, N, classes)."""

    def __init__(self, members: list[MLP]) -> None:
        super().__init__()
        self.k = len(members)
        first = members[0]
        self.blocks = nn.ModuleList(
            _GroupedBlock(
                GroupedLinear([cast(nn.Linear, _block(m, i).op) for m in members]),
                *_norm_and_act([_block(m, i).norm for m in members], _block(first, i).act, _block(first, i).placement),
                _block(first, i).placement,
            )
            for i in range(len(first.blocks))
        )
        self.head = GroupedLinear([m.head for m in members])

    def scores(self, x: Tensor) -> Tensor:
        k, n = x.shape[0], x.shape[1]
        x = x.transpose(1, 2)  # (k, F, N)
        for block in cast("Iterable[_GroupedBlock]", self.blocks):
            h = block.op(x)  # (k, W, N), contiguous
            w = h.shape[1]
            if type(block.norm) in _BY_CHANNEL:  # (1, k*W, N): member i's channels i*W.., a row of N values each
                x = block.normalize(h.view(1, k * w, n)).view(k, w, n)
            else:  # (N, k*W): member i's channels i*W.. (contiguous: the layout bnlab's kernels take)
                h = block.normalize(h.permute(2, 0, 1).reshape(n, k * w).contiguous())
                x = h.view(n, k, w).permute(1, 2, 0)  # (k, W, N), a strided view that bmm reads as it is
        return self.head(x)  # (k, classes, N)

    def inputs(self, x: Tensor) -> Tensor:
        """Members' batches ``(k, N, *features)`` as ``(k, N, features)``."""
        return x.reshape(x.shape[0], x.shape[1], -1)


def group(members: list[nn.Module]) -> GroupedCNN1d | GroupedMLP:
    """One grouped model of ``members`` (module docstring); they are left unchanged."""
    for m in members:
        reason = why_not_groupable(m)
        if reason is not None:
            raise ValueError(f"expected models that can be trained in a group (got {reason})")
    kinds = {type(m) for m in members}
    if len(kinds) != 1:
        raise ValueError(f"expected members of one architecture (got {sorted(t.__name__ for t in kinds)})")
    cls = GroupedCNN1d if type(members[0]) is CNN1d else GroupedMLP
    return cls(members)  # type: ignore[arg-type]  # checked above: all of cls's architecture


def mask_gradients(
    grouped: GroupedCNN1d | GroupedMLP, members: list[nn.Module], masks: list[dict[str, Tensor]]
) -> None:
    """Train only the entries each member's mask keeps, as its own gradient hooks did alone.

    ``masks[i]`` maps every parameter name of ``members[i]`` (the models ``grouped`` was built
    from) to a boolean mask of its shape (:func:`bnlab.models.freeze.random_subset_masks`). They are
    stacked by the code that stacked the parameters (grouping copies of the members that hold the
    masks as their weights), so each lies where its member's entries lie. A grouped parameter
    trains where any member's entries do: its gradient is multiplied by the stacked mask, so a
    member whose tensor was frozen alone gets a zero gradient there and, with SGD or Adam (no weight
    decay), never moves; a parameter no member trains is frozen."""
    holders = [copy.deepcopy(m) for m in members]
    with torch.no_grad():
        for holder, mask in zip(holders, masks):
            for name, p in holder.named_parameters():
                p.copy_(mask[name])
    stacked = dict(group(holders).named_parameters())
    for name, p in grouped.named_parameters():
        keep = stacked[name].detach().to(device=p.device, dtype=torch.bool)
        p.requires_grad_(bool(keep.any()))
        if keep.any() and not keep.all():
            m = keep.to(p.dtype)
            p.register_hook(lambda g, m=m: g * m)


def ungroup(grouped: GroupedCNN1d | GroupedMLP, i: int, model: nn.Module, grads: bool = False) -> nn.Module:
    """Write member ``i``'s parameters and buffers of ``grouped`` into ``model`` (one of the
    architecture it was built from), with ``grads`` the parameters' gradients too (each member's own:
    members never mix); returns ``model`` in ``grouped``'s mode."""
    model = cast("CNN1d | MLP", model)  # the architecture grouped was built from
    for gb, block in zip(cast("Iterable[_GroupedBlock]", grouped.blocks), cast("Iterable[Block]", model.blocks)):
        gb.op.member(i, block.op, grads)  # type: ignore[arg-type]  # a layer of gb.op's kind: a Conv1d or a Linear
        _norm_member(gb.norm, i, block.norm, grads)
    grouped.head.member(i, model.head, grads)
    return model.train(grouped.training)


def member_optimizer(
    grouped: GroupedCNN1d | GroupedMLP, i: int, model: nn.Module, optimizer: torch.optim.Optimizer
) -> torch.optim.Optimizer:
    """Member ``i`` written into ``model`` with its gradients (:func:`ungroup`) and an optimizer of ``optimizer``'s
    class and settings (its one parameter group's, the scheduled learning rate included) over ``model``'s
    parameters that ``optimizer`` steps, each with member ``i``'s part of the grouped parameter's state
    (momentum buffer, Adam's moments; a step count as it is): what member ``i``'s own optimizer would hold had
    it trained alone (to the group's float tolerance), for a probe that steps it (the experiments' gradient-ICS
    probe). Its step moves the member exactly as ``optimizer``'s step moves member ``i``'s part. The group's
    optimizer is not touched."""
    if len(optimizer.param_groups) != 1:
        raise ValueError(f"expected an optimizer with one parameter group (got {len(optimizer.param_groups)})")
    token = _WRITTEN.set([])
    try:
        ungroup(grouped, i, model, grads=True)
        written = _WRITTEN.get() or []
    finally:
        _WRITTEN.reset(token)
    settings = optimizer.param_groups[0]
    stepped = {id(p) for p in settings["params"]}
    parts = [(m, g, part) for m, g, part in written if id(g) in stepped]
    own = type(optimizer)([m for m, _, _ in parts], **optimizer.defaults)
    own.param_groups[0].update({k: v for k, v in settings.items() if k != "params"})
    for m, g, part in parts:
        state = optimizer.state.get(g)
        if state:
            own.state[m] = {
                k: (v[part].clone() if v.shape == g.shape else v.clone()) if isinstance(v, Tensor) else v
                for k, v in state.items()
            }
    return own
