r"""The Triton backend: every primitive as launches of bnlab's Triton kernels (:mod:`bnlab.kernels.triton_bn`).

The dispatch (:mod:`bnlab.core.dispatch`) hands it CUDA tensors when triton is installed, and CPU
tensors too under ``BNLAB_BACKEND=triton`` -- run by Triton's interpreter, which needs
``TRITON_INTERPRET=1`` before the kernels are imported (a CPU tensor reaching compiled kernels is
a one-line error). What it takes: contiguous NC* or channels-innermost memory (channels_last 2d/3d,
(N, C), (N, C, L)), float32 / float16 / bfloat16 with float32 statistics (float64 stays on the
reference: the dispatch sends it there), per-channel vectors of the input's dtype or, with a half-type
input, float32 (torch's mixed precision: the kernels load every operand as float32 and store each in its
own dtype, so a float32 layer's gradients and running statistics stay float32).

Every primitive is also a ``torch.library`` custom operator (``torch.ops.bnlab.triton_*``) with a
fake implementation, so torch.compile (``fullgraph=True``) and torch.export trace a call as one
opaque node instead of breaking the graph at the kernel launch; the running-statistics update is a
declared mutation of the buffers. Eager calls skip the operator dispatcher (its overhead is a
small batch's whole kernel time); the instance the dispatch hands out under a tracer
(``traced=True``) calls the operators.

No host synchronization: launch geometry depends on shapes only, and a tensor momentum (the
cumulative average of ``momentum=None``) is read by the kernel from device memory.
"""

from __future__ import annotations

import functools
import importlib.util
from types import SimpleNamespace
from typing import cast

import torch
from torch import Tensor
from torch.autograd.graph import increment_version

from . import Backend, Running

__all__ = ["Triton", "available", "kernels"]

INTERPRETER_PROGRAMS = 4  # programs a reduction spreads over in the interpreter (it runs them one by one)
# Up to this many elements a training forward and a backward are one launch each (one program per
# channel block): below it launches cost more than the work (the small inputs, < 256K).
SINGLE_MAX_NUMEL = 1 << 18


@functools.cache
def available() -> bool:
    """Whether triton is installed (looked up once, without importing it)."""
    return importlib.util.find_spec("triton") is not None


@functools.cache
def kernels():
    """The kernel module, imported on first use (importing triton costs about a second)."""
    from ...kernels import triton_bn

    return triton_bn


@functools.cache
def _interpreted() -> bool:
    """Whether the kernels were built for Triton's interpreter (fixed when they are imported)."""
    return type(kernels().normalize).__name__ == "InterpretedFunction"


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _geometry(x: Tensor):
    """(rows, C, S, P, blocks) of ``x``: rows = the (R, C) family (P = R), else planes (P = N)."""
    if x.is_cpu and not _interpreted():
        raise ValueError(
            "expected TRITON_INTERPRET=1 (set before bnlab's Triton kernels are imported) to run the Triton "
            "backend on CPU tensors (got compiled kernels)"
        )
    K = kernels()
    C = x.shape[1]
    N = x.shape[0]
    if x.dim() > 2 and x.is_contiguous() and x.numel() != N * C:
        rows, S, P = False, x.numel() // (N * C), N
    else:
        rows, S, P = True, 1, x.numel() // C
    programs = 4 * _sm_count(x.device.index or 0) if x.is_cuda else INTERPRETER_PROGRAMS
    return rows, C, S, P, K.blocks(rows, C, S, P, programs, single=x.numel() <= SINGLE_MAX_NUMEL)


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _unbias(count: int) -> float:
    return count / (count - 1) if count > 1 else 1.0


def same_layout(t: Tensor, x: Tensor) -> Tensor:
    """``t`` with ``x``'s strides (the kernels address both with one set of offsets)."""
    return t if t.stride() == x.stride() else torch.empty_like(x).copy_(t)


# --- the launches (eager implementations of the custom operators) ------------------------------


def _on_tensor_device(fn):
    """Run ``fn`` with the CUDA device of its first tensor argument current (triton launches on the
    current device; a model on cuda:1 is called with cuda:0 current unless its user switched)."""

    @functools.wraps(fn)
    def launch(*args):
        t = next(a for a in args if isinstance(a, Tensor))
        if t.is_cuda and t.device.index != torch.cuda.current_device():
            with torch.cuda.device(t.device):
                return fn(*args)
        return fn(*args)

    return launch


def stats_into(x, mean, var, rm, rv, mom_tensor, momentum: float, count: int, lo=None) -> None:
    """mean, biased var (float32) and the running update; ``lo`` (where given) receives the mean's
    rounding to float32, which :func:`normalize_into` takes back so y is normalized by the float64 mean."""
    K = kernels()
    rows, C, S, P, B = _geometry(x)
    # float64 partials: a chunk's M2 may pass float32's range where the variance does not
    part = torch.empty((3, B.chunks, C), dtype=torch.float64, device=x.device)
    K.stats_partial[(triton_cdiv(C, B.block_c), B.chunks)](
        x, part[0], part[1], part[2], C, S, P, B.units, B.per_chunk, ROWS=rows, BLOCK_M=B.block_m, BLOCK_C=B.block_c
    )
    K.stats_merge[(triton_cdiv(C, B.block_cf),)](
        part[0],
        part[1],
        part[2],
        mean,
        var,
        mean if lo is None else lo,
        mean if rm is None else rm,
        mean if rv is None else rv,
        mean if mom_tensor is None else mom_tensor,
        float(momentum),
        _unbias(count),
        float(x.numel() // C),  # m, the values per channel (count is the running update's, 0 without one)
        C,
        B.chunks,
        HAS_LO=lo is not None,
        HAS_RM=rm is not None,
        HAS_RV=rv is not None,
        MOM_TENSOR=mom_tensor is not None,
        BLOCK_C=B.block_cf,
    )


def normalize_into(y, x, mean, var, weight, bias, eps, act, slope, residual=None, mask=None, evaluate=False, lo=None):
    K = kernels()
    rows, C, S, P, B = _geometry(x)
    K.normalize[(triton_cdiv(C, B.block_c), B.elem_chunks)](
        x,
        y,
        x if residual is None else residual,
        x if mask is None else mask,
        mean,
        var,
        mean if lo is None else lo,
        x if weight is None else weight,
        x if bias is None else bias,
        float(eps),
        float(slope),
        C,
        S,
        P,
        B.units,
        B.elem_per_chunk,
        HAS_W=weight is not None,
        HAS_B=bias is not None,
        HAS_LO=lo is not None,
        HAS_RES=residual is not None,
        WRITE_MASK=mask is not None,
        EVAL=evaluate,
        ACT=K.ACT_CODES[act],
        ROWS=rows,
        BLOCK_M=B.block_m,
        BLOCK_C=B.block_c,
    )


def _gate(residual, mask) -> int:
    return 2 if mask is not None else 1 if residual is not None else 0


def backward_sums(dy, x, weight, bias, mean, var, eps, act, slope, dw=None, db=None, residual=None, mask=None):
    """(sum(g), sum(g * (x - mean))) per channel, float32; dweight / dbias written where given."""
    K = kernels()
    rows, C, S, P, B = _geometry(x)
    part = torch.empty((2, B.chunks, C), dtype=torch.float32, device=x.device)
    K.backward_partial[(triton_cdiv(C, B.block_c), B.chunks)](
        dy,
        x,
        x if residual is None else residual,
        x if mask is None else mask,
        mean,
        var,
        x if weight is None else weight,
        x if bias is None else bias,
        float(eps),
        float(slope),
        part[0],
        part[1],
        C,
        S,
        P,
        B.units,
        B.per_chunk,
        HAS_W=weight is not None,
        HAS_B=bias is not None,
        GATE=_gate(residual, mask),
        ACT=K.ACT_CODES[act],
        ROWS=rows,
        BLOCK_M=B.block_m,
        BLOCK_C=B.block_c,
    )
    sg, sgx = stat_vectors(x)  # two tensors, not views of one (a custom operator's outputs may not alias)
    K.backward_merge[(triton_cdiv(C, B.block_cf),)](
        part[0],
        part[1],
        sg,
        sgx,
        var,
        float(eps),
        sg if dw is None else dw,
        sg if db is None else db,
        C,
        B.chunks,
        HAS_DW=dw is not None,
        HAS_DB=db is not None,
        BLOCK_C=B.block_cf,
    )
    return sg, sgx


def backward_dx(
    dy, x, weight, bias, mean, var, eps, act, slope, mg, mgx, factor: float, residual=None, mask=None, dr=None
):
    """dx in ``x``'s layout and dtype, from the means ``factor * mg``, ``factor * mgx``; ``dr`` (the
    residual's gradient g) written where given."""
    K = kernels()
    rows, C, S, P, B = _geometry(x)
    dx = torch.empty_like(x)
    K.backward_elemt[(triton_cdiv(C, B.block_c), B.elem_chunks)](
        dy,
        x,
        x if residual is None else residual,
        x if mask is None else mask,
        dx,
        dx if dr is None else dr,
        mean,
        var,
        x if weight is None else weight,
        x if bias is None else bias,
        float(eps),
        float(slope),
        mg,
        mgx,
        float(factor),
        C,
        S,
        P,
        B.units,
        B.elem_per_chunk,
        HAS_W=weight is not None,
        HAS_B=bias is not None,
        GATE=_gate(residual, mask),
        HAS_DR=dr is not None,
        ACT=K.ACT_CODES[act],
        ROWS=rows,
        BLOCK_M=B.block_m,
        BLOCK_C=B.block_c,
    )
    return dx


def stat_vectors(x: Tensor) -> tuple[Tensor, Tensor]:
    C = x.shape[1]
    return torch.empty(C, dtype=torch.float32, device=x.device), torch.empty(C, dtype=torch.float32, device=x.device)


@_on_tensor_device
def _forward(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    momentum_tensor: Tensor | None,
    momentum: float,
    count: int,
    eps: float,
    act: str,
    slope: float,
) -> tuple[Tensor, Tensor, Tensor]:
    mean, var = stat_vectors(x)
    y = torch.empty_like(x)
    rows, C, S, P, B = _geometry(x)
    if not B.single:
        lo = torch.empty_like(mean)
        stats_into(x, mean, var, running_mean, running_var, momentum_tensor, momentum, count, lo)
        normalize_into(y, x, mean, var, weight, bias, eps, act, slope, lo=lo)
        return y, mean, var
    K = kernels()
    K.forward_single[(triton_cdiv(C, B.block_c),)](
        x,
        y,
        mean,
        var,
        x if weight is None else weight,
        x if bias is None else bias,
        mean if running_mean is None else running_mean,
        mean if running_var is None else running_var,
        mean if momentum_tensor is None else momentum_tensor,
        float(momentum),
        _unbias(count),
        float(x.numel() // C),
        float(eps),
        float(slope),
        C,
        S,
        P,
        B.units,
        HAS_W=weight is not None,
        HAS_B=bias is not None,
        HAS_RM=running_mean is not None,
        HAS_RV=running_var is not None,
        MOM_TENSOR=momentum_tensor is not None,
        ACT=K.ACT_CODES[act],
        ROWS=rows,
        BLOCK_M=B.block_m,
        BLOCK_C=B.block_c,
    )
    return y, mean, var


@_on_tensor_device
def _stats(x: Tensor) -> tuple[Tensor, Tensor]:
    mean, var = stat_vectors(x)
    stats_into(x, mean, var, None, None, None, 0.0, 0)
    return mean, var


@_on_tensor_device
def _normalize(
    x: Tensor,
    mean: Tensor,
    var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    act: str,
    slope: float,
    evaluate: bool,
) -> Tensor:
    y = torch.empty_like(x)
    normalize_into(y, x, mean, var, weight, bias, eps, act, slope, evaluate=evaluate)
    return y


@_on_tensor_device
def _backward(
    dy: Tensor,
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    var: Tensor,
    eps: float,
    act: str,
    slope: float,
    need_dx: bool,
    need_dw: bool,
    need_db: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias), each an empty tensor where not needed (a custom operator returns tensors)."""
    dy = same_layout(dy, x)
    dw = torch.empty_like(weight) if need_dw and weight is not None else None
    db = torch.empty_like(bias) if need_db and bias is not None else None
    m = x.numel() // x.shape[1]
    rows, C, S, P, B = _geometry(x)
    if not B.single:
        sg, sgx = backward_sums(dy, x, weight, bias, mean, var, eps, act, slope, dw, db)
        dx = backward_dx(dy, x, weight, bias, mean, var, eps, act, slope, sg, sgx, 1.0 / m) if need_dx else None
        return cast("tuple[Tensor, Tensor, Tensor]", tuple(x.new_empty(0) if t is None else t for t in (dx, dw, db)))
    K = kernels()
    dx = torch.empty_like(x) if need_dx else None
    K.backward_single[(triton_cdiv(C, B.block_c),)](
        dy,
        x,
        x if dx is None else dx,
        mean,
        var,
        x if weight is None else weight,
        x if bias is None else bias,
        float(eps),
        float(slope),
        mean if dw is None else dw,
        mean if db is None else db,
        1.0 / m,
        C,
        S,
        P,
        B.units,
        HAS_W=weight is not None,
        HAS_B=bias is not None,
        HAS_DW=dw is not None,
        HAS_DB=db is not None,
        HAS_DX=dx is not None,
        ACT=K.ACT_CODES[act],
        ROWS=rows,
        BLOCK_M=B.block_m,
        BLOCK_C=B.block_c,
    )
    return cast("tuple[Tensor, Tensor, Tensor]", tuple(x.new_empty(0) if t is None else t for t in (dx, dw, db)))


@_on_tensor_device
def _backward_reduce(
    dy: Tensor,
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    var: Tensor,
    eps: float,
    act: str,
    slope: float,
) -> tuple[Tensor, Tensor]:
    return backward_sums(same_layout(dy, x), x, weight, bias, mean, var, eps, act, slope)


@_on_tensor_device
def _backward_elemt(
    dy: Tensor,
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    var: Tensor,
    eps: float,
    act: str,
    slope: float,
    mean_g: Tensor,
    mean_gxmu: Tensor,
) -> Tensor:
    dy = same_layout(dy, x)
    return backward_dx(
        dy, x, weight, bias, mean, var, eps, act, slope, mean_g.contiguous(), mean_gxmu.contiguous(), 1.0
    )


@_on_tensor_device
def _update(
    running_mean: Tensor | None,
    running_var: Tensor | None,
    mean: Tensor,
    var: Tensor,
    momentum_tensor: Tensor | None,
    momentum: float,
    count: int,
) -> None:
    K = kernels()
    C = mean.shape[0]
    block = min(1024, 1 << max(0, (C - 1).bit_length()))
    K.update_running[(triton_cdiv(C, block),)](
        mean,
        var,
        mean if running_mean is None else running_mean,
        mean if running_var is None else running_var,
        mean if momentum_tensor is None else momentum_tensor,
        float(momentum),
        _unbias(count),
        C,
        HAS_RM=running_mean is not None,
        HAS_RV=running_var is not None,
        MOM_TENSOR=momentum_tensor is not None,
        BLOCK_C=block,
    )


# --- the custom operators ---------------------------------------------------------------------


def _register():
    """``torch.ops.bnlab.triton_*``: the launches above with fake implementations (shapes only)."""
    lib = torch.library

    def stat_like(x):
        return x.new_empty(x.shape[1], dtype=torch.float32)

    op = lib.custom_op("bnlab::triton_forward", mutates_args=("running_mean", "running_var"))(_forward)
    op.register_fake(lambda x, *a: (torch.empty_like(x), stat_like(x), stat_like(x)))
    op = lib.custom_op("bnlab::triton_stats", mutates_args=())(_stats)
    op.register_fake(lambda x: (stat_like(x), stat_like(x)))
    op = lib.custom_op("bnlab::triton_normalize", mutates_args=())(_normalize)
    op.register_fake(lambda x, *a: torch.empty_like(x))

    def fake_backward(dy, x, weight, bias, mean, var, eps, act, slope, need_dx, need_dw, need_db):
        dw = torch.empty_like(weight) if need_dw and weight is not None else x.new_empty(0)
        db = torch.empty_like(bias) if need_db and bias is not None else x.new_empty(0)
        return torch.empty_like(x) if need_dx else x.new_empty(0), dw, db

    op = lib.custom_op("bnlab::triton_backward", mutates_args=())(_backward)
    op.register_fake(fake_backward)
    op = lib.custom_op("bnlab::triton_backward_reduce", mutates_args=())(_backward_reduce)
    op.register_fake(lambda dy, x, *a: (stat_like(x), stat_like(x)))
    op = lib.custom_op("bnlab::triton_backward_elemt", mutates_args=())(_backward_elemt)
    op.register_fake(lambda dy, x, *a: torch.empty_like(x))
    op = lib.custom_op("bnlab::triton_update", mutates_args=("running_mean", "running_var"))(_update)
    op.register_fake(lambda *a: None)


_register()


# The launches called directly (no operator dispatch), for untraced calls.
_EAGER = SimpleNamespace(
    forward=_forward,
    stats=_stats,
    normalize=_normalize,
    backward=_backward,
    backward_reduce=_backward_reduce,
    backward_elemt=_backward_elemt,
    update=_update,
)


class _Ops:
    """The same, through ``torch.ops.bnlab`` (what tracers record)."""

    def __getattr__(self, name):
        return getattr(torch.ops.bnlab, f"triton_{name}")


def _momentum_args(momentum) -> tuple[Tensor | None, float]:
    """A tensor momentum is read by the kernel (no host sync); a number is passed as it is."""
    if isinstance(momentum, Tensor):
        return momentum, 0.0
    return None, float(momentum)


class Triton(Backend):
    name = "triton"
    fuses_update = True

    def __init__(self, traced: bool = False) -> None:
        self.traced = traced
        self._ops = _Ops() if traced else _EAGER

    def forward(self, x, weight, bias, eps, act, slope, running: Running | None):
        rm = rv = mom_t = None
        mom, count = 0.0, 0
        if running is not None:
            rm, rv, count = running.mean, running.var, running.count
            mom_t, mom = _momentum_args(running.momentum)
        y, mean, var = self._ops.forward(x, weight, bias, rm, rv, mom_t, mom, count, float(eps), act, float(slope))
        if running is not None and not self.traced:  # written in place by the kernel: autograd sees the change
            increment_version([t for t in (rm, rv) if t is not None])
        return y, mean, var

    def stats(self, x):
        return self._ops.stats(x)

    def normalize(self, x, mean, var, weight, bias, eps, act, slope):
        return self._ops.normalize(x, mean, var, weight, bias, float(eps), act, float(slope), False)

    def backward(self, dy, x, weight, bias, mean, var, eps, act, slope, needs):
        dx, dw, db = self._ops.backward(dy, x, weight, bias, mean, var, float(eps), act, float(slope), *needs)
        return (
            dx if needs[0] else None,
            dw if needs[1] and weight is not None else None,
            db if needs[2] and bias is not None else None,
        )

    def backward_reduce(self, dy, x, weight, bias, mean, var, eps, act, slope):
        return self._ops.backward_reduce(dy, x, weight, bias, mean, var, float(eps), act, float(slope))

    def backward_elemt(self, dy, x, weight, bias, mean, var, eps, act, slope, mean_g, mean_gxmu):
        return self._ops.backward_elemt(
            dy, x, weight, bias, mean, var, float(eps), act, float(slope), mean_g.float(), mean_gxmu.float()
        )

    def eval(self, x, running_mean, running_var, weight, bias, eps, act, slope):
        return self._ops.normalize(x, running_mean, running_var, weight, bias, float(eps), act, float(slope), True)

    def update_running_stats(self, running_mean, running_var, mean, var, count, momentum):
        if count <= 0 or (running_mean is None and running_var is None):
            return
        mom_t, mom = _momentum_args(momentum)
        self._ops.update(running_mean, running_var, mean, var, mom_t, mom, int(count))
        if not self.traced:
            increment_version([t for t in (running_mean, running_var) if t is not None])
