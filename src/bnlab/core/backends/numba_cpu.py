"""The numba CPU backend: the primitives as calls of the compiled kernels of :mod:`bnlab.kernels`.

What it takes is decided by the dispatch (:mod:`bnlab.core.dispatch`): plain CPU tensors, float32 /
float64, bfloat16 (read and written as it is and computed in float32, rounded once on the way out, as
the reference computes it) and float16 (run on a float32 copy and rounded once), contiguous NC* or
channels-innermost memory, per-channel vectors contiguous and of the input's dtype or, with a half-type
input, float32 (torch's mixed precision; half-type vectors go in as float32 copies: C values). Within
that it answers every primitive.

Per call it does the least Python it can: tensors cross into the kernels as addresses
(``data_ptr()``) with their sizes, outputs are allocated once with torch, and ``forward`` updates
the running statistics inside the same kernel call (``fuses_update``).

The memory family of the kernels (:mod:`bnlab.kernels.numba_cpu`) is chosen here: *planes* for a
contiguous (N, C, S) whose planes are at least :data:`PLANE_MIN` long, else *rows* -- channels-last
and (N, C) input as (R, C), and short planes as N rows of C*S values (the lab's 1D CNN runs
(100, 25, 20): 2,500 planes of 20 values, where per-plane bookkeeping would outweigh the work).
A batch of one, (1, C, S), is planes at any length: as one row of C*S values each of its C channels
would be S columns merged one by one (a grouped MLP's (1, 800, 60): 230 us forward and 187 us
backward as one row, 89 and 97 as planes, 1 thread).

Threads: each call runs on ``torch.get_num_threads()`` threads (capped by numba's pool size), so
``torch.set_num_threads`` governs bnlab too; below :data:`PARALLEL_MIN_NUMEL` elements the kernels
run on the calling thread.
"""

from __future__ import annotations

import threading
from typing import overload

import torch
from torch import Tensor
from torch.autograd.graph import increment_version

from .. import math as M
from . import Backend, Running

__all__ = ["NumbaCPU", "PARALLEL_MIN_NUMEL", "PLANE_MIN", "family", "parallel"]

# Below this many elements the kernels run on the calling thread: splitting the work pays off
# above it (a (256, 512) training forward: 38 us on 2 threads, 56 us serial; at 64K elements the
# two were even).
PARALLEL_MIN_NUMEL = 1 << 16
# Planes shorter than this run as rows (module docstring).
PLANE_MIN = 64
KERNEL_DTYPES = (torch.float32, torch.float64)  # what the kernels compute in
# What x, y, dy and dx may be stored in, with the dtype the kernels compute them in: bfloat16 is read and
# written by the kernels themselves (on a float32 copy and back, a call took 1.8-5x torch's time).
_COMPUTE = {torch.float32: torch.float32, torch.float64: torch.float64, torch.bfloat16: torch.float32}

_kernels = None  # bnlab.kernels.numba_cpu, imported on first use (numba's import costs ~0.3 s)
_threads = threading.local()  # numba's thread count is per calling thread, like torch's
_TAGS: dict[torch.dtype, object] = {}  # dtype -> an empty array of its element type in the kernels


def _numba():
    """The kernel module, with numba's thread count following torch's for this thread."""
    global _kernels
    if _kernels is None:
        from ...kernels import numba_cpu

        _kernels = numba_cpu
        for dtype in KERNEL_DTYPES:
            _TAGS[dtype] = torch.empty(0, dtype=dtype).numpy()  # the kernels' dtype, as an array type
        _TAGS[torch.bfloat16] = torch.empty(0, dtype=torch.int16).numpy().view("uint16")  # its bits
    want = torch.get_num_threads()
    if getattr(_threads, "n", None) != want:
        import numba

        numba.set_num_threads(max(1, min(want, numba.config.NUMBA_NUM_THREADS)))
        _threads.n = want
    return _kernels


def parallel(x: Tensor) -> bool:
    """Whether a call on ``x`` runs the parallel kernels (large enough, more than one thread, and not
    in a child forked after the pool started: see :mod:`bnlab.kernels.threads`)."""
    if x.numel() < PARALLEL_MIN_NUMEL or torch.get_num_threads() < 2:
        return False
    return _numba().threads.parallel_allowed()


def family(x: Tensor) -> tuple[str, tuple[int, int, int]]:
    """The kernel family and its dims for ``x``: ("planes", (N, C, S)) or ("rows", (R, C, G)).

    ``x`` is contiguous NC* or has its channels innermost (the dispatch checked).
    """
    C = x.shape[1]
    if x.dim() > 2 and x.is_contiguous():
        N = x.shape[0]
        S = x.numel() // (N * C)
        return ("planes", (N, C, S)) if S >= PLANE_MIN or N == 1 else ("rows", (N, C, S))
    return "rows", (x.numel() // C, C, 1)


def _ptr(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


@overload
def _in_kernel_dtype(t: Tensor) -> Tensor: ...
@overload
def _in_kernel_dtype(t: None) -> None: ...
def _in_kernel_dtype(t: Tensor | None) -> Tensor | None:
    """A per-channel vector as the kernels take it: ``t`` itself, or a float32 copy of a half type."""
    return t if t is None or t.dtype in KERNEL_DTYPES else t.detach().float()


def _elements(x: Tensor) -> Tensor:
    """x (or dy) as the kernels take it: bfloat16 as it is (they read its bits), else as a vector
    (:func:`_in_kernel_dtype`: float16 as a float32 copy, memory format kept)."""
    return x if x.dtype is torch.bfloat16 else _in_kernel_dtype(x)


def _as(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """``t`` in ``dtype``: itself, or rounded once."""
    return t if t is None or t.dtype == dtype else t.to(dtype)


class NumbaCPU(Backend):
    name = "numba_cpu"
    fuses_update = True

    @staticmethod
    def _call_args(x: Tensor):
        """The kernel module, the serial/parallel mode tag, the compute dtype, its tag and the tag of x's
        elements (``tags``, the kernels' last two arguments), the family and its dims."""
        K = _numba()
        fam, dims = family(x)
        dtype = _COMPUTE[x.dtype]
        return (
            K,
            (K.PARALLEL if parallel(x) else K.SERIAL),
            dtype,
            (_TAGS[dtype], _TAGS[x.dtype]),
            fam == "planes",
            dims,
        )

    def forward(self, x, weight, bias, eps, act, slope, running: Running | None):
        xk, wk, bk = _elements(x), _in_kernel_dtype(weight), _in_kernel_dtype(bias)
        K, mode, dtype, tags, planes, dims = self._call_args(xk)
        y = torch.empty_like(xk)
        mean = torch.empty(dims[1], dtype=dtype)
        var = torch.empty(dims[1], dtype=dtype)
        rm = rv = None
        count, momentum = 0, 0.0
        in_kernel = running is not None and all(t is None or t.dtype == dtype for t in (running.mean, running.var))
        if running is not None and in_kernel:  # (half-type buffers are updated below in torch ops)
            rm, rv, count, momentum = running.mean, running.var, running.count, float(running.momentum)
        (K.forward_planes if planes else K.forward_rows)(
            xk.data_ptr(),
            dims,
            _ptr(wk),
            _ptr(bk),
            float(eps),
            K.ACT_TAGS[act],
            float(slope),
            mode,
            y.data_ptr(),
            mean.data_ptr(),
            var.data_ptr(),
            _ptr(rm),
            _ptr(rv),
            count,
            momentum,
            *tags,
        )
        if running is not None:
            if not in_kernel:
                M.update_running_stats(running.mean, running.var, mean, var, running.count, running.momentum)
            else:  # written in place by the kernel, as lerp_ would: autograd sees the change
                increment_version([t for t in (rm, rv) if t is not None])
        return _as(y, x.dtype), mean, var  # a float16 y is rounded once, here (bfloat16 in the kernel)

    def stats(self, x):
        xk = _elements(x)
        K, mode, dtype, tags, planes, dims = self._call_args(xk)
        mean = torch.empty(dims[1], dtype=dtype)
        var = torch.empty(dims[1], dtype=dtype)
        (K.stats_planes if planes else K.stats_rows)(xk.data_ptr(), dims, mode, mean.data_ptr(), var.data_ptr(), *tags)
        return mean, var

    def normalize(self, x, mean, var, weight, bias, eps, act, slope):
        xk, wk, bk = _elements(x), _in_kernel_dtype(weight), _in_kernel_dtype(bias)
        K, mode, dtype, tags, planes, dims = self._call_args(xk)
        y = torch.empty_like(xk)
        (K.normalize_planes if planes else K.normalize_rows)(
            xk.data_ptr(),
            dims,
            mean.data_ptr(),
            var.data_ptr(),
            _ptr(wk),
            _ptr(bk),
            float(eps),
            K.ACT_TAGS[act],
            float(slope),
            mode,
            y.data_ptr(),
            *tags,
        )
        return _as(y, x.dtype)

    def _grad_in(self, dy: Tensor, xk: Tensor) -> Tensor:
        if dy.stride() != xk.stride() or dy.dtype != xk.dtype:
            return torch.empty_like(xk).copy_(dy)  # an expanded gradient, the other memory format, float16
        return dy

    def backward(self, dy, x, weight, bias, mean, var, eps, act, slope, needs):
        xk, wk, bk = _elements(x), _in_kernel_dtype(weight), _in_kernel_dtype(bias)
        K, mode, dtype, tags, planes, dims = self._call_args(xk)
        C = dims[1]
        dyk = self._grad_in(dy, xk)
        dx = torch.empty_like(xk) if needs[0] else None
        dw = torch.empty(C, dtype=dtype) if needs[1] and weight is not None else None
        db = torch.empty(C, dtype=dtype) if needs[2] and bias is not None else None
        (K.backward_planes if planes else K.backward_rows)(
            dyk.data_ptr(),
            xk.data_ptr(),
            dims,
            _ptr(wk),
            _ptr(bk),
            mean.data_ptr(),
            var.data_ptr(),
            float(eps),
            K.ACT_TAGS[act],
            float(slope),
            mode,
            _ptr(dx),
            _ptr(dw),
            _ptr(db),
            *tags,
        )
        # half types: round once (a bfloat16 dx was rounded in the kernel)
        dw = None if dw is None or weight is None else _as(dw, weight.dtype)
        db = None if db is None or bias is None else _as(db, bias.dtype)
        return _as(dx, x.dtype), dw, db

    def backward_reduce(self, dy, x, weight, bias, mean, var, eps, act, slope):
        xk, wk, bk = _elements(x), _in_kernel_dtype(weight), _in_kernel_dtype(bias)
        K, mode, dtype, tags, planes, dims = self._call_args(xk)
        sum_g = torch.empty(dims[1], dtype=dtype)
        sum_gxmu = torch.empty(dims[1], dtype=dtype)
        (K.reduce_planes if planes else K.reduce_rows)(
            self._grad_in(dy, xk).data_ptr(),
            xk.data_ptr(),
            dims,
            _ptr(wk),
            _ptr(bk),
            mean.data_ptr(),
            var.data_ptr(),
            float(eps),
            K.ACT_TAGS[act],
            float(slope),
            mode,
            sum_g.data_ptr(),
            sum_gxmu.data_ptr(),
            *tags,
        )
        return sum_g, sum_gxmu

    def backward_elemt(self, dy, x, weight, bias, mean, var, eps, act, slope, mean_g, mean_gxmu):
        xk, wk, bk = _elements(x), _in_kernel_dtype(weight), _in_kernel_dtype(bias)
        K, mode, dtype, tags, planes, dims = self._call_args(xk)
        mean_g, mean_gxmu = mean_g.contiguous(), mean_gxmu.contiguous()
        dx = torch.empty_like(xk)
        (K.elemt_planes if planes else K.elemt_rows)(
            self._grad_in(dy, xk).data_ptr(),
            xk.data_ptr(),
            dims,
            _ptr(wk),
            _ptr(bk),
            mean.data_ptr(),
            var.data_ptr(),
            float(eps),
            K.ACT_TAGS[act],
            float(slope),
            mean_g.data_ptr(),
            mean_gxmu.data_ptr(),
            mode,
            dx.data_ptr(),
            *tags,
        )
        return _as(dx, x.dtype)

    def eval(self, x, running_mean, running_var, weight, bias, eps, act, slope):
        xk = _elements(x)
        rm, rv, wk, bk = (_in_kernel_dtype(t) for t in (running_mean, running_var, weight, bias))
        K, mode, dtype, tags, planes, dims = self._call_args(xk)
        y = torch.empty_like(xk)
        (K.eval_planes if planes else K.eval_rows)(
            xk.data_ptr(),
            dims,
            rm.data_ptr(),
            rv.data_ptr(),
            _ptr(wk),
            _ptr(bk),
            float(eps),
            K.ACT_TAGS[act],
            float(slope),
            mode,
            y.data_ptr(),
            *tags,
        )
        return _as(y, x.dtype)

    def update_running_stats(self, running_mean, running_var, mean, var, count, momentum):
        buffers = tuple(t for t in (running_mean, running_var) if t is not None)
        if count <= 0 or not buffers:
            return
        if mean.dtype not in KERNEL_DTYPES or any(t.dtype != mean.dtype for t in buffers):
            M.update_running_stats(running_mean, running_var, mean, var, count, momentum)
            return
        K = _numba()
        K.update_running_stats(
            _ptr(running_mean),
            _ptr(running_var),
            mean.data_ptr(),
            var.data_ptr(),
            mean.shape[0],
            int(count),
            float(momentum),
            _TAGS[mean.dtype],
        )
        increment_version(buffers)
