"""The one place that decides which backend runs a batch-norm primitive, and why.

The rules, in order; the first that applies sends the call to the reference backend (torch
operations, :mod:`bnlab.core.backends.reference`):

1. the fast path is off: the environment variable ``BNLAB_FAST=0``, :func:`set_fast` (False), or
   inside :func:`reference_only`;
2. a tracer is active -- torch.compile, torch.jit tracing or scripting, a torch.func transform
   (vmap, grad, jacrev, jvp, ...) -- so tracers keep seeing plain torch operations (the reference
   handed out then is marked ``traced``);
3. an operand the kernels do not take: not a plain ``torch.Tensor`` / ``nn.Parameter`` (subclasses),
   not on a device with a fast backend (the CPU), not strided, an input dtype other than float32,
   float64, bfloat16 or float16 (half types run the float32 kernels on a float32 copy and round
   once, as the reference computes them), a parameter or buffer of another dtype than the input,
   batch statistics not in the accumulation dtype (float32 for half types), a per-channel vector
   that is not contiguous;
4. an empty input, or memory that is neither contiguous NC* nor channels-innermost
   (channels_last, a transposed (N, L, C), a 2D (N, C));
5. in the backward: grad mode on (double backward needs the differentiable closed form), or an
   incoming gradient that is not a plain CPU tensor of the input's shape (any strides or dtype are
   fine: it is copied into the input's layout);
6. in eval: autograd would record a graph (grad mode on and the input or a parameter requiring a
   gradient), which the reference's differentiable torch operations give.

Everything else runs on the fast backend of the tensor's device: :mod:`bnlab.core.backends.numba_cpu`
on the CPU (a CUDA backend would be one more entry in :data:`FAST_BACKENDS`).

**One check per layer call.** A layer's forward asks :func:`select` (training) or
:func:`select_eval` once and runs every primitive of the call on the answer; its backward asks
:func:`select_backward` once. Every answer is a backend: there is no "none" to fall back from.
:func:`why_reference` gives the reason in words (what the tests and ``bnlab bench`` report).
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch import Tensor

from . import checks
from .backends import Backend
from .backends.numba_cpu import NumbaCPU
from .backends.reference import Reference

__all__ = [
    "REFERENCE",
    "TRACED",
    "FAST_BACKENDS",
    "select",
    "select_eval",
    "select_update",
    "select_backward",
    "why_reference",
    "layout",
    "set_fast",
    "fast_enabled",
    "reference_only",
    "traced",
]

REFERENCE: Backend = Reference()
TRACED: Backend = Reference(traced=True)
FAST_BACKENDS: dict[str, Backend] = {"cpu": NumbaCPU()}  # device type -> its fast backend
_CPU = FAST_BACKENDS["cpu"]

_FAST_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_HALF_DTYPES = (torch.bfloat16, torch.float16)
_PLAIN_TYPES = (Tensor, torch.nn.Parameter)
_TRACED_REASON = "traced (torch.compile, torch.jit or a torch.func transform)"
_state = {"fast": os.environ.get("BNLAB_FAST", "1") != "0"}


def set_fast(enabled: bool) -> None:
    """Allow (True) or forbid (False) the fast backends for the whole process (rule 1)."""
    _state["fast"] = bool(enabled)


def fast_enabled() -> bool:
    """Whether the fast backends may run (:func:`set_fast`; ``BNLAB_FAST=0`` turns them off)."""
    return _state["fast"]


@contextlib.contextmanager
def reference_only():
    """Within this block every call takes the reference backend; the previous setting is restored."""
    before = _state["fast"]
    _state["fast"] = False
    try:
        yield
    finally:
        _state["fast"] = before


def traced() -> bool:
    """Rule 2: torch.compile, torch.jit or a torch.func transform is active."""
    return (
        torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
    )


def layout(x: Tensor) -> str | None:
    """Rule 4: 'ncs' (contiguous N, C, S), 'rc' (channels innermost, (R, C)) or None (anything else)."""
    if x.dim() <= 2:  # (N, C), or a (C,) vector of per-channel statistics
        return "rc" if x.is_contiguous() else None
    if x.is_contiguous():
        return "ncs" if x.numel() != x.shape[0] * x.shape[1] else "rc"  # spatial size 1: rows of C
    if x.movedim(1, -1).is_contiguous():
        return "rc"
    return None


def _tensor_issue(t: Tensor, dtype: torch.dtype) -> str | None:
    """Rule 3 for one tensor; None if it is a plain strided CPU tensor of ``dtype``."""
    # Runs for every operand of every call: cheap attributes first (t.device builds an object).
    if type(t) in _PLAIN_TYPES and t.is_cpu and t.dtype == dtype and t.layout is torch.strided:
        return None
    if type(t) not in _PLAIN_TYPES:
        return f"not a plain tensor ({type(t).__name__})"
    if not t.is_cpu:
        return f"device {t.device}"
    if t.layout is not torch.strided:
        return f"tensor layout {t.layout}"
    return f"mixed dtypes (expected {dtype}, got a {t.dtype} operand)"


def _vectors_plain(x: Tensor, vectors: tuple) -> bool:
    """Check the per-channel tensors of a call on ``x`` (:func:`bnlab.core.checks.check_vectors`:
    one element per channel, dtype, device -- the user's errors) and say whether every one is a
    plain contiguous (C,) CPU tensor of ``x``'s dtype, what the kernels take as they are.

    The kernels read these tensors by address, so nothing reaches a backend unchecked; the common
    case is recognised by one look at each tensor, which serves both the check and rule 3.
    """
    if x.is_cpu:
        shape, dtype = (x.shape[1],), x.dtype
        for t in vectors:
            if t is not None and not (
                type(t) in _PLAIN_TYPES
                and t.dtype is dtype
                and t.is_cpu
                and t.layout is torch.strided
                and t.shape == shape
                and t.is_contiguous()
            ):
                break
        else:
            return True
    checks.check_vectors(x, *vectors)
    return False


def _why_not_fast(x: Tensor, vectors, grad: Tensor | None, stats) -> str | None:
    """Rules 3-5 (tensors only); ``vectors`` may be () when they are known to be plain."""
    issue = _tensor_issue(x, x.dtype)
    if issue is not None:
        return issue
    dtype = x.dtype
    if dtype not in _FAST_DTYPES:
        return f"dtype {dtype}"
    for t in vectors:
        if t is not None:
            issue = _tensor_issue(t, dtype)
            if issue is not None:
                return issue
            if not t.is_contiguous():
                return "non-contiguous per-channel vector"
    acc = torch.float32 if dtype in _HALF_DTYPES else dtype
    for t in stats:
        issue = _tensor_issue(t, acc)
        if issue is not None:
            return issue
        if not t.is_contiguous():
            return "non-contiguous per-channel vector"
    if grad is not None:
        if type(grad) not in _PLAIN_TYPES or not grad.is_cpu or grad.layout is not torch.strided:
            return _tensor_issue(grad, grad.dtype) or "gradient is not a plain CPU tensor"
        if grad.shape != x.shape:
            return f"gradient of shape {tuple(grad.shape)} for an input of shape {tuple(x.shape)}"
    if x.numel() == 0:
        return "empty input"
    if layout(x) is None:
        return f"strides {x.stride()} are neither contiguous nor channels-last"
    return None


def why_reference(
    x: Tensor, *vectors: Tensor | None, grad: Tensor | None = None, stats: tuple[Tensor, ...] = ()
) -> str | None:
    """Why a call on these tensors takes the reference backend (rules 1-5); None if it runs fast.

    ``x`` is the input, ``vectors`` its (C,) weight/bias/running statistics in ``x``'s dtype (None
    allowed), ``grad`` the incoming gradient of a backward, ``stats`` batch statistics (in the
    accumulation dtype). Grad mode is not looked at (rules 5 and 6 are the callers').
    """
    if not _state["fast"]:
        return "fast path disabled"
    if traced():
        return _TRACED_REASON
    return _why_not_fast(x, vectors, grad, stats)


def select(
    x: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
) -> Backend:
    """The backend of a training call on ``x`` ``(N, C, *)`` with its per-channel tensors (None allowed),
    which are checked here first (a ValueError / TypeError for a wrong size, dtype or device): its
    forward, stats, normalize and running-statistics update."""
    vectors = (weight, bias, running_mean, running_var)
    if traced():  # asked first, so that a traced call always gets TRACED
        checks.check_vectors(x, *vectors)
        return TRACED
    plain = _vectors_plain(x, vectors)
    if not _state["fast"]:
        return REFERENCE
    if _why_not_fast(x, () if plain else vectors, None, ()) is not None:
        return REFERENCE
    return _CPU


def select_eval(
    x: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
) -> Backend:
    """The backend of an eval call (rule 6 on top of :func:`select`'s; the tensors checked as there)."""
    vectors = (weight, bias, running_mean, running_var)
    if traced():
        checks.check_vectors(x, *vectors)
        return TRACED
    plain = _vectors_plain(x, vectors)
    if not _state["fast"]:
        return REFERENCE
    if torch.is_grad_enabled() and (x.requires_grad or any(v is not None and v.requires_grad for v in vectors)):
        return REFERENCE
    if _why_not_fast(x, () if plain else vectors, None, ()) is not None:
        return REFERENCE
    return _CPU


def select_update(mean: Tensor, var: Tensor, running_mean: Tensor | None, running_var: Tensor | None) -> Backend:
    """The backend of a running-statistics update alone, from batch statistics (C,) a layer combined
    itself (its buffers were checked by the training calls that made them)."""
    if traced():
        return TRACED
    if not _state["fast"]:
        return REFERENCE
    if _why_not_fast(mean, (var, running_mean, running_var), None, ()) is not None:
        return REFERENCE
    return _CPU


def select_backward(forward: Backend, dy: Tensor, x: Tensor) -> Backend:
    """The backend of a backward whose forward ran on ``forward`` (rule 5)."""
    if forward is not _CPU:
        return forward
    if torch.is_grad_enabled():
        return REFERENCE
    if traced():  # compiled autograd traces the backward
        return TRACED
    if type(dy) not in _PLAIN_TYPES or not dy.is_cpu or dy.layout is not torch.strided or dy.shape != x.shape:
        return REFERENCE
    if not torch._C._has_storage(dy):  # a batched gradient (jacobian(vectorize=True), is_grads_batched)
        return REFERENCE
    return _CPU
