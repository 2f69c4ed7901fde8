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
   float64, bfloat16 or float16 (half types compute in float32 and round once, as the reference
   computes them), a parameter or buffer of another dtype than the input -- except float32 ones with
   a half-type input, torch's mixed precision (a float32 model under autocast) --, batch statistics
   not in the accumulation dtype (float32 for half types), a per-channel vector that is not
   contiguous;
4. an empty input, or memory that is neither contiguous NC* nor channels-innermost
   (channels_last, a transposed (N, L, C), a 2D (N, C));
5. in the backward: grad mode on (double backward needs the differentiable closed form), or an
   incoming gradient that is not a plain CPU tensor of the input's shape (any strides or dtype are
   fine: it is copied into the input's layout).

An eval call that autograd records (grad mode on and the input or a parameter requiring a
gradient) still runs on the fast backend, whose output :class:`bnlab.core.autograd.BatchNormEval`
makes differentiable, so eval outputs have the same bits with grad mode on or off.

Everything else runs on the fast backend of the tensor's device: :mod:`bnlab.core.backends.numba_cpu`
on the CPU, :mod:`bnlab.core.backends.triton_gpu` on CUDA when triton is installed (float64 stays on
the reference there). Under torch.compile a CUDA call gets the Triton backend's traced instance,
whose primitives are custom operators the compiler sees as opaque nodes (rule 2 otherwise).

**Choosing a backend.** The environment variable ``BNLAB_BACKEND`` (read at import) or
:func:`set_backend` forces one for every device: ``numba`` (the CPU's kernels; CUDA tensors take the
reference), ``reference`` (everything on torch operations, as ``BNLAB_FAST=0``) or ``triton`` (the
Triton kernels on CUDA and on CPU tensors, the latter in Triton's interpreter: set
``TRITON_INTERPRET=1`` too). Asking for triton without triton installed is an ImportError in one
line, never a quiet fallback.

**One check per layer call.** A layer's forward asks :func:`select` (training) or
:func:`select_eval` once and runs every primitive of the call on the answer; its backward asks
:func:`select_backward` once. Every answer is a backend: there is no "none" to fall back from.
:func:`why_reference` gives the reason in words (what the tests and ``bnlab bench`` report).
"""

from __future__ import annotations

import contextlib
import os
from typing import TypedDict

import torch
from torch import Tensor

from . import checks
from .backends import Backend
from .backends.numba_cpu import NumbaCPU
from .backends.reference import Reference
from .backends.triton_gpu import Triton
from .backends.triton_gpu import available as _triton_available

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
    "BACKENDS",
    "set_backend",
    "forced_backend",
]

REFERENCE: Backend = Reference()
TRACED: Backend = Reference(traced=True)
FAST_BACKENDS: dict[str, Backend] = {"cpu": NumbaCPU()}  # device type -> its default fast backend
if _triton_available():
    FAST_BACKENDS["cuda"] = Triton()
_CPU = FAST_BACKENDS["cpu"]
TRITON: Backend = FAST_BACKENDS.get("cuda") or Triton()
TRITON_TRACED: Backend = Triton(traced=True)  # custom operators, for torch.compile on CUDA
BACKENDS = ("numba", "reference", "triton")  #: the names BNLAB_BACKEND and set_backend take

_FAST_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_HALF_DTYPES = (torch.bfloat16, torch.float16)
_PLAIN_TYPES = (Tensor, torch.nn.Parameter)
_TRACED_REASON = "traced (torch.compile, torch.jit or a torch.func transform)"


class _State(TypedDict):
    fast: bool  # rule 1: the fast backends may run
    forced: str | None  # set_backend's name, None for each device's defaults


_state: _State = {"fast": os.environ.get("BNLAB_FAST", "1") != "0", "forced": None}
# The fast backend per device type now (None: the reference); set_backend changes these.
_route: dict[str, Backend | None] = {"cpu": _CPU, "cuda": FAST_BACKENDS.get("cuda")}


def set_backend(name: str | None) -> None:
    """Force a backend for every device ('numba', 'reference' or 'triton'; see the module docstring),
    or None for each device's default. ValueError for another name; ImportError (one line) for
    'triton' without triton installed."""
    if name is not None and name not in BACKENDS:
        raise ValueError(f"expected BNLAB_BACKEND to be one of {', '.join(BACKENDS)} (got {name!r})")
    if name == "triton" and not _triton_available():
        raise ImportError("BNLAB_BACKEND=triton needs triton, which is not installed (pip install 'bnlab[gpu]')")
    _state["forced"] = name
    if name is None:
        _route.update(cpu=_CPU, cuda=FAST_BACKENDS.get("cuda"))
    elif name == "numba":
        _route.update(cpu=_CPU, cuda=None)
    elif name == "reference":
        _route.update(cpu=None, cuda=None)
    else:
        _route.update(cpu=TRITON, cuda=TRITON)


def forced_backend() -> str | None:
    """The backend :func:`set_backend` (or ``BNLAB_BACKEND``) forced, None for the defaults."""
    return _state["forced"]


set_backend(os.environ.get("BNLAB_BACKEND") or None)


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


def _vector_dtype(x: Tensor, t: Tensor) -> torch.dtype:
    """The dtype rule 3 asks of the per-channel tensor ``t`` of a call on ``x``: x's own, or float32 (a
    float32 ``t``, a half-type ``x``): both fast backends compute half types in float32."""
    if t.dtype is torch.float32 and x.dtype in _HALF_DTYPES:
        return torch.float32
    return x.dtype


def _tensor_issue(t: Tensor, dtype: torch.dtype) -> str | None:
    """Rule 3 for one tensor; None if it is a plain strided CPU tensor of ``dtype``."""
    # Runs for every operand of every call: cheap attributes first (t.device builds an object).
    if type(t) in _PLAIN_TYPES and t.is_cpu and t.dtype == dtype and t.layout is torch.strided:
        return None
    if type(t) not in _PLAIN_TYPES:
        return f"not a plain tensor ({type(t).__name__})"
    if not t.is_cpu and (not t.is_cuda or _route["cuda"] is None):
        return f"device {t.device}"
    if t.layout is not torch.strided:
        return f"tensor layout {t.layout}"
    if t.dtype != dtype:
        return f"mixed dtypes (expected {dtype}, got a {t.dtype} operand)"
    return None


def _vectors_plain(x: Tensor, vectors: tuple) -> bool:
    """Check the per-channel tensors of a call on ``x`` (:func:`bnlab.core.checks.check_vectors`:
    one element per channel, dtype, device -- the user's errors) and say whether every one is a
    plain contiguous (C,) CPU tensor of ``x``'s dtype (or float32 with a half-type ``x``: rule 3), what the
    kernels take as they are.

    The kernels read these tensors by address, so nothing reaches a backend unchecked; the common
    case is recognised by one look at each tensor, which serves both the check and rule 3.
    """
    if x.is_cpu:
        shape, dtype = (x.shape[1],), x.dtype
        for t in vectors:
            if t is not None and not (
                type(t) in _PLAIN_TYPES
                and (t.dtype is dtype or t.dtype is _vector_dtype(x, t))
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
            issue = _tensor_issue(t, _vector_dtype(x, t))
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
    accumulation dtype). Grad mode is not looked at (rule 5 is the caller's).
    """
    if not _state["fast"]:
        return "fast path disabled"
    if traced():
        return _TRACED_REASON
    why = _why_not_fast(x, vectors, grad, stats)
    if why is None and _fast_for(x) is REFERENCE:
        if x.dtype == torch.float64 and (_route["cpu"] if x.is_cpu else _route["cuda"]) is TRITON:
            return "float64 on the Triton backend"
        return f"BNLAB_BACKEND={_state['forced']} (no fast backend for {x.device.type})"
    return why


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
    if traced():  # asked first, so that a traced call always gets a traced backend
        checks.check_vectors(x, *vectors)
        return _traced_for(x, vectors)
    plain = _vectors_plain(x, vectors)
    if not _state["fast"]:
        return REFERENCE
    if _why_not_fast(x, () if plain else vectors, None, ()) is not None:
        return REFERENCE
    return _fast_for(x)


def select_eval(
    x: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
) -> Backend:
    """The backend of an eval call (:func:`select`'s rules; the tensors checked as there). Grad mode
    is not looked at: :func:`bnlab.core.ops.evaluate` makes a fast output differentiable."""
    vectors = (weight, bias, running_mean, running_var)
    if traced():
        checks.check_vectors(x, *vectors)
        return _traced_for(x, vectors, grad_graph=True)
    plain = _vectors_plain(x, vectors)
    if not _state["fast"]:
        return REFERENCE
    if _why_not_fast(x, () if plain else vectors, None, ()) is not None:
        return REFERENCE
    return _fast_for(x)


def select_update(mean: Tensor, var: Tensor, running_mean: Tensor | None, running_var: Tensor | None) -> Backend:
    """The backend of a running-statistics update alone, from batch statistics (C,) a layer combined
    itself (its buffers were checked by the training calls that made them)."""
    if traced():
        return TRACED
    if not _state["fast"]:
        return REFERENCE
    if _why_not_fast(mean, (var, running_mean, running_var), None, ()) is not None:
        return REFERENCE
    return _fast_for(mean)


def select_backward(forward: Backend, dy: Tensor, x: Tensor) -> Backend:
    """The backend of a backward whose forward ran on ``forward`` (rule 5)."""
    if forward is not _CPU and forward is not TRITON:
        return forward
    if torch.is_grad_enabled():
        return REFERENCE
    if traced():  # compiled autograd traces the backward
        return TRACED
    if type(dy) not in _PLAIN_TYPES or dy.layout is not torch.strided or dy.shape != x.shape:
        return REFERENCE
    if not (dy.is_cpu if x.is_cpu else dy.device == x.device):
        return REFERENCE
    if not torch._C._has_storage(dy):  # a batched gradient (jacobian(vectorize=True), is_grads_batched)
        return REFERENCE
    return forward


def _fast_for(x: Tensor) -> Backend:
    """The fast backend of ``x``'s device (the checks of rules 3-5 passed); float64 stays on the
    reference on the Triton backend (its kernels compute in float32)."""
    backend = _route["cpu"] if x.is_cpu else _route["cuda"]
    if backend is None or (backend is TRITON and x.dtype == torch.float64):
        return REFERENCE
    return backend


def _traced_for(x: Tensor, vectors, grad_graph: bool = False) -> Backend:
    """Rule 2's answer: the Triton backend's custom operators under torch.compile (not under jit or a
    torch.func transform, which need torch operations) where the call would run on Triton untraced;
    else TRACED. ``grad_graph``: an eval call, which takes the reference's differentiable ops when
    autograd records a graph."""
    if (
        not _state["fast"]
        or not torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
        or torch.jit.is_tracing()
    ):
        return TRACED
    if (_route["cpu"] if x.is_cpu else _route["cuda"]) is not TRITON:
        return TRACED
    if (
        grad_graph
        and torch.is_grad_enabled()
        and (x.requires_grad or any(v is not None and v.requires_grad for v in vectors))
    ):
        return TRACED
    # The tensors may be fake (torch.export) or functional: rules 3-4 by their properties alone.
    if (x.dtype not in _HALF_DTYPES and x.dtype != torch.float32) or x.layout is not torch.strided:
        return TRACED
    if x.numel() == 0 or layout(x) is None:
        return TRACED
    for t in vectors:
        if t is not None and (t.dtype != _vector_dtype(x, t) or t.device != x.device or not t.is_contiguous()):
            return TRACED
    return TRITON_TRACED
