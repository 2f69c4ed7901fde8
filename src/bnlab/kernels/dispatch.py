"""The one place that decides whether batch norm runs a fast kernel or the pure-torch reference.

:mod:`bnlab.functional` asks :func:`train_forward`, :func:`train_backward` and :func:`eval_forward`
first; they return ``None`` when the call must take the reference path. :func:`why_reference` says
why, and is what the tests check. The fast path (:mod:`bnlab.kernels.numba_cpu`) takes:

* CPU tensors of float32 or float64 with weight, bias and running stats of the same dtype; and
  bfloat16 / float16, which run the float32 kernels on a float32 copy (batch statistics in
  float32) and are rounded once at the end, as the reference computes them;
* memory laid out as contiguous NC* ("ncs": (N, C, S) with S the spatial size) or channels-last
  ("rc": (R, C) with R = N * spatial size; a 2D (N, C) input is this layout too);
* a non-empty batch, outside any tracing: under ``torch.compile``, ``torch.jit`` and the
  ``torch.func`` transforms the reference runs, so those keep seeing plain torch operations;
* in the backward, grad mode off -- with ``create_graph=True`` (double backward) the reference's
  differentiable closed form runs;
* in eval, contiguous NC* input and no autograd graph to record (inference); channels-last eval
  stays with the reference's ``addcmul``, which is faster there.

Everything else (CUDA, odd strides, tensor subclasses, mixed dtypes) takes the reference. Setting the
environment variable ``BNLAB_FAST=0`` or :func:`set_fast` (False) sends everything to the reference.

Fused activations (for BN + activation layers): :func:`bn_act_train_forward` and
:func:`bn_act_train_backward` always give an answer -- the fast kernel where it applies, else the
reference built from :mod:`bnlab.functional`'s primitives followed by the torch activation.
Statistics conventions are functional's: ``var`` is the *biased* batch variance (the running
variance update, with the unbiased one, is left to :func:`bnlab.functional.update_running_stats`).

Threads: each fast call runs on ``torch.get_num_threads()`` threads (capped by numba's pool size),
so ``torch.set_num_threads`` governs bnlab too.
"""

from __future__ import annotations

import contextlib
import os
import threading

import torch
from torch import Tensor
from torch.autograd.graph import increment_version

from .. import activations as A
from .. import functional as F
from . import threads

__all__ = [
    "why_reference",
    "layout",
    "set_fast",
    "fast_enabled",
    "reference_only",
    "train_forward",
    "train_backward",
    "eval_forward",
    "eval_constants",
    "update_running_stats",
    "bn_act_train_forward",
    "bn_act_train_backward",
]

_KERNEL_DTYPES = (torch.float32, torch.float64)  # what the kernels compute in
# Half types run the float32 kernels on a float32 copy and round the result once -- what the
# reference does too (statistics and normalization in float32, PyTorch's convention).
_HALF_DTYPES = (torch.bfloat16, torch.float16)
_FAST_DTYPES = _KERNEL_DTYPES + _HALF_DTYPES
# Below this many elements the kernels run on the calling thread: splitting the work pays off
# above it (a (256, 512) training forward: 38 us on 2 threads, 56 us serial; at 64K elements the
# two were even).
PARALLEL_MIN_NUMEL = 1 << 16
_PLAIN_TYPES = (Tensor, torch.nn.Parameter)
_wrapped = torch._C._functorch.is_functorch_wrapped_tensor
_state = {"fast": os.environ.get("BNLAB_FAST", "1") != "0"}
_threads = threading.local()  # numba's thread count is per calling thread, like torch's
_kernels = None  # bnlab.kernels.numba_cpu, imported on first fast call (numba import is ~0.3 s)


def set_fast(enabled: bool) -> None:
    """Allow (True) or forbid (False) the fast kernels for the whole process."""
    _state["fast"] = bool(enabled)


def fast_enabled() -> bool:
    return _state["fast"]


@contextlib.contextmanager
def reference_only():
    """Within this block every call takes the pure-torch reference; the previous setting is restored."""
    before = _state["fast"]
    _state["fast"] = False
    try:
        yield
    finally:
        _state["fast"] = before


def layout(x: Tensor) -> str | None:
    """'ncs' (contiguous N, C, S), 'rc' (channels innermost, (R, C)) or None (anything else)."""
    if x.dim() <= 2:  # (N, C), or a (C,) vector of per-channel statistics
        return "rc" if x.is_contiguous() else None
    if x.is_contiguous():
        return "ncs" if x.numel() != x.shape[0] * x.shape[1] else "rc"  # spatial size 1: rows of C
    if x.movedim(1, -1).is_contiguous():
        return "rc"
    return None


def _traced() -> bool:
    return (
        torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
    )


def _tensor_issue(t: Tensor, x: Tensor, dtype: torch.dtype) -> str | None:
    # Runs for every operand of every call: cheap attributes first (t.device builds an object).
    if t.is_cpu and t.dtype == dtype and t.layout is torch.strided and type(t) in _PLAIN_TYPES:
        return "not a plain tensor (functorch-wrapped)" if _wrapped(t) else None
    if type(t) not in _PLAIN_TYPES or _wrapped(t):
        return f"not a plain tensor ({type(t).__name__})"
    if not t.is_cpu:
        return f"device {t.device}"
    if t.dtype != dtype:
        return f"mixed dtypes ({x.dtype} input, {t.dtype} operand; expected {dtype})"
    return f"tensor layout {t.layout}"


def why_reference(x: Tensor, *vectors: Tensor | None, grad: Tensor | None = None,
                  stats: tuple[Tensor, ...] = ()) -> str | None:
    """Why a call takes the reference path; None if the fast kernel can run it.

    ``x`` is the input, ``vectors`` its (C,) weight/bias/running statistics in ``x``'s dtype (None
    allowed), ``grad`` the incoming gradient of a backward (any strides and dtype: it is copied into
    ``x``'s layout if needed), ``stats`` batch statistics, which are in the accumulation dtype
    (float32 for half-type input).
    """
    if not _state["fast"]:
        return "fast path disabled"
    if _traced():
        return "traced (torch.compile, torch.jit or a torch.func transform)"
    for t in (x,) + vectors:
        issue = None if t is None else _tensor_issue(t, x, x.dtype)
        if issue is not None:
            return issue
    acc = torch.float32 if x.dtype in _HALF_DTYPES else x.dtype
    for t in stats:
        issue = _tensor_issue(t, x, acc)
        if issue is not None:
            return issue
    if grad is not None:
        issue = _tensor_issue(grad, x, grad.dtype)
        if issue is not None:
            return issue
    if x.dtype not in _FAST_DTYPES:
        return f"dtype {x.dtype}"
    if x.numel() == 0:
        return "empty input"
    if layout(x) is None:
        return f"strides {x.stride()} are neither contiguous nor channels-last"
    if any(v is not None and not v.is_contiguous() for v in vectors + stats):
        return "non-contiguous per-channel vector"
    if grad is not None and grad.shape != x.shape:
        return f"gradient of shape {tuple(grad.shape)} for an input of shape {tuple(x.shape)}"
    return None


# --- tensors <-> the kernels' arrays ----------------------------------------------------------------


def _parallel(x: Tensor) -> bool:
    return x.numel() >= PARALLEL_MIN_NUMEL and torch.get_num_threads() > 1 and threads.parallel_allowed()


def _mode(K, x: Tensor):
    return K.PARALLEL if _parallel(x) else K.SERIAL


def _numba():
    global _kernels
    if _kernels is None:
        from . import numba_cpu

        _kernels = numba_cpu
    want = torch.get_num_threads()
    if getattr(_threads, "n", None) != want:
        import numba

        numba.set_num_threads(max(1, min(want, numba.config.NUMBA_NUM_THREADS)))
        _threads.n = want
    return _kernels


def _view(t: Tensor, lay: str):
    """The kernels' array for ``t``: (N, C, S) for 'ncs', (R, C) for 'rc'; shares memory."""
    t = t.detach()
    if lay == "ncs":
        return t.view(t.shape[0], t.shape[1], -1).numpy()
    if t.dim() == 2:
        return t.numpy()
    rows = t.movedim(1, -1).reshape(-1, t.shape[1])  # (R, C)
    assert rows.data_ptr() == t.data_ptr(), "layout() promised a view"  # outputs are written here
    return rows.numpy()


_EMPTY: dict[torch.dtype, Tensor] = {}


def _vec(t: Tensor | None, like: Tensor):
    """A (C,) parameter as an array; None becomes an empty array, the kernels' "no parameter"."""
    if t is None:
        t = _EMPTY.get(like.dtype)
        if t is None:
            t = _EMPTY[like.dtype] = torch.empty(0, dtype=like.dtype)
    return t.detach().numpy()


def _in_kernel_dtype(t: Tensor | None) -> Tensor | None:
    """``t`` itself, or a float32 copy of a half-type tensor (memory format kept)."""
    return t if t is None or t.dtype in _KERNEL_DTYPES else t.detach().float()


def _fast_forward(x: Tensor, weight, bias, eps: float, act: str, slope: float):
    K = _numba()
    xk, weight, bias = _in_kernel_dtype(x), _in_kernel_dtype(weight), _in_kernel_dtype(bias)
    lay = layout(xk)
    C = x.shape[1]
    y = torch.empty_like(xk)
    mean = torch.empty(C, dtype=xk.dtype)
    var = torch.empty(C, dtype=xk.dtype)
    run = K.train_forward_ncs if lay == "ncs" else K.train_forward_rc
    run(_view(xk, lay), _vec(weight, xk), _vec(bias, xk), float(eps), K.ACT_TAGS[act], float(slope),
        _mode(K, xk), _view(y, lay), mean.numpy(), var.numpy())
    return (y if xk is x else y.to(x.dtype)), mean, var  # a half-type y is rounded once, here


def _fast_backward(dy, x, weight, bias, mean, var, eps, act, slope, needs):
    K = _numba()
    xk, wk, bk = _in_kernel_dtype(x), _in_kernel_dtype(weight), _in_kernel_dtype(bias)
    lay = layout(xk)
    C = x.shape[1]
    if dy.stride() != xk.stride() or dy.dtype != xk.dtype:
        dy = torch.empty_like(xk).copy_(dy)  # an expanded gradient, the other memory format, a half type
    dx = torch.empty_like(xk) if needs[0] else None
    dw = torch.empty(C, dtype=xk.dtype) if needs[1] and weight is not None else None
    db = torch.empty(C, dtype=xk.dtype) if needs[2] and bias is not None else None
    no_dx = torch.empty((0,) * (3 if lay == "ncs" else 2), dtype=xk.dtype).numpy()  # "skip dx"
    run = K.train_backward_ncs if lay == "ncs" else K.train_backward_rc
    run(_view(dy, lay), _view(xk, lay), _vec(wk, xk), _vec(bk, xk), mean.detach().numpy(), var.detach().numpy(),
        float(eps), K.ACT_TAGS[act], float(slope), _mode(K, xk), no_dx if dx is None else _view(dx, lay),
        _vec(dw, xk), _vec(db, xk))
    if xk is not x:  # half types: round once
        dx = None if dx is None else dx.to(x.dtype)
        dw = None if dw is None else dw.to(weight.dtype)
        db = None if db is None else db.to(bias.dtype)
    return dx, dw, db


# --- what bnlab.functional calls ----------------------------------------------------------------


def train_forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
    """``(y, mean, var)`` of a training forward from the fast kernel, or None for the reference.

    ``mean`` and the biased ``var`` are (C,) in the accumulation dtype (the input's; float32 for
    half types, which run the float32 kernels on a float32 copy).
    """
    if why_reference(x, weight, bias) is not None:
        return None
    return _fast_forward(x, weight, bias, eps, "identity", 0.0)


def train_backward(dy: Tensor, x: Tensor, weight: Tensor | None, bias: Tensor | None, mean: Tensor,
                   var: Tensor, eps: float, needs: tuple[bool, bool, bool]):
    """``(dx, dweight, dbias)`` (None where not needed) from the fast kernel, or None.

    None as well when grad mode is on (double backward needs the differentiable reference).
    """
    if torch.is_grad_enabled() or why_reference(x, weight, bias, grad=dy, stats=(mean, var)) is not None:
        return None
    return _fast_backward(dy, x, weight, bias, mean, var, eps, "identity", 0.0, needs)


def eval_forward(x: Tensor, running_mean: Tensor, running_var: Tensor, weight: Tensor | None,
                 bias: Tensor | None, eps: float) -> Tensor | None:
    """Eval-mode batch norm from the fast kernel in one pass, or None for the reference.

    ``y = x * scale + shift`` with ``scale = weight / sqrt(running_var + eps)`` and ``shift = bias -
    running_mean * scale`` (:func:`bnlab.functional.eval_affine`), the constants computed inside.

    None as well when autograd would need a graph (grad mode on and the input or a parameter
    requiring a gradient: the reference's torch operations are differentiable) and for channels-last
    inputs (torch's ``addcmul``, the reference's choice there, is faster than a row-loop kernel).
    """
    if layout(x) != "ncs":
        return None
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return None
    if why_reference(x, running_mean, running_var, weight, bias) is not None:
        return None
    K = _numba()
    xk = _in_kernel_dtype(x)
    rm, rv, w, b = (_in_kernel_dtype(t) for t in (running_mean, running_var, weight, bias))
    y = torch.empty_like(xk)
    K.eval_forward_ncs(_view(xk, "ncs"), _vec(rm, xk), _vec(rv, xk), _vec(w, xk), _vec(b, xk), float(eps),
                       K.ACT_TAGS["identity"], _mode(K, xk), _view(y, "ncs"))
    return y if xk is x else y.to(x.dtype)


def eval_constants(running_mean: Tensor, running_var: Tensor, weight: Tensor | None, bias: Tensor | None,
                   eps: float) -> tuple[Tensor, Tensor] | None:
    """:func:`bnlab.functional.eval_affine`'s ``(scale, shift)`` from one kernel call (instead of
    five torch operations), or None where the reference must compute them (autograd would need a
    graph, or an operand the kernels do not take)."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (weight, bias)):
        return None
    if running_var.dtype not in _KERNEL_DTYPES or why_reference(running_var, running_mean, weight, bias) is not None:
        return None
    scale = torch.empty_like(running_var)
    shift = torch.empty_like(running_var)
    _numba().eval_constants(running_mean.detach().numpy(), running_var.detach().numpy(), _vec(weight, running_var),
                            _vec(bias, running_var), float(eps), scale.numpy(), shift.numpy())
    return scale, shift


def update_running_stats(running_mean: Tensor | None, running_var: Tensor | None, mean: Tensor, var: Tensor,
                         count: int, momentum) -> bool:
    """The running-statistics update of :func:`bnlab.functional.update_running_stats` in one kernel
    call (instead of three torch operations); False, doing nothing, where the reference must run
    (a momentum given as a tensor, a buffer of another dtype, ...)."""
    if isinstance(momentum, Tensor) or not isinstance(count, int) or count <= 0 or mean.dtype not in _KERNEL_DTYPES:
        return False
    buffers = [t for t in (running_mean, running_var) if t is not None]
    if why_reference(mean, var, *buffers) is not None or any(t.requires_grad for t in buffers):
        return False
    K = _numba()
    K.update_running_stats(_vec(running_mean, mean), _vec(running_var, mean), _vec(mean, mean), _vec(var, mean),
                           count, float(momentum))
    increment_version(tuple(buffers))  # written in place, as lerp_ would: autograd sees the change
    return True


# --- batch norm + activation, for fused layers ----------------------------------------------------


def bn_act_train_forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
                         act: str = "relu", slope: float = 0.01) -> tuple[Tensor, Tensor, Tensor]:
    r"""Training forward of ``act(BN(x))``: returns ``(y, mean, var)``.

    .. math:: y = \mathrm{act}\big((x - \mathrm{E}[x]) / \sqrt{\mathrm{Var}[x] + \epsilon} \cdot w + b\big)

    ``mean`` and the biased ``var`` are (C,) in :func:`bnlab.functional.acc_dtype`; save ``x``,
    ``mean`` and ``var`` for :func:`bn_act_train_backward` (the pre-activation is recomputed there,
    so nothing else needs saving). ``act`` is one of ``identity``, ``relu``, ``leaky_relu`` (slope
    ``slope``), ``silu``. Not differentiable by itself: wrap the pair in an autograd.Function.
    """
    A.check_activation(act, slope)
    if why_reference(x, weight, bias) is None:
        return _fast_forward(x, weight, bias, eps, act, slope)
    mean, var = F.batch_stats(x)
    invstd = torch.rsqrt(var + eps)
    return A.activate(F.normalize(x, mean, invstd, weight, bias), act, slope), mean, var


def bn_act_train_backward(dy: Tensor, x: Tensor, weight: Tensor | None, bias: Tensor | None,
                          mean: Tensor, var: Tensor, eps: float, act: str = "relu",
                          slope: float = 0.01, needs: tuple[bool, bool, bool] = (True, True, True)):
    r"""Gradients ``(dx, dweight, dbias)`` of ``act(BN(x))`` (None where not needed or no parameter).

    With ``z = (x - mean) * invstd * w + b`` recomputed from ``x`` and ``g = dy * act'(z)``, it is
    batch norm's closed-form backward applied to ``g``::

        dbias = sum(g);  dweight = invstd * sum(g * (x - mean))
        dx = w * invstd * (g - sum(g)/m - (x - mean) * invstd^2 * sum(g * (x - mean))/m)

    Under grad mode (double backward) the reference runs, in differentiable torch ops.
    """
    A.check_activation(act, slope)
    if not torch.is_grad_enabled() and why_reference(x, weight, bias, grad=dy, stats=(mean, var)) is None:
        return _fast_backward(dy, x, weight, bias, mean, var, eps, act, slope, needs)
    invstd = torch.rsqrt(var + eps)
    m = F.count_per_channel(x)
    g = A.activation_grad(dy, F.normalize(x, mean, invstd, weight, bias), act, slope)
    sum_g, sum_gxmu = F.backward_reduce(g, x, mean)
    dx = F.backward_elemt(g, x, mean, invstd, weight, sum_g / m, sum_gxmu / m) if needs[0] else None
    dweight, dbias = F.param_grads(sum_g, sum_gxmu, invstd, weight, bias)
    return dx, dweight if needs[1] else None, dbias if needs[2] else None
