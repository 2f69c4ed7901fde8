"""numba's threading layer for bnlab's kernels, chosen and started in one place.

bnlab's training forward and backward each launch two or three parallel loops, so what a launch
costs decides the speed of a mid-sized batch norm: numba's ``workqueue`` layer costs about 90 us
per launch (its workers sleep between launches), its ``omp`` layer a few microseconds once the
workers are awake. So bnlab prefers ``omp``, falling back to ``workqueue`` where numba's OpenMP pool
cannot load; ``tbb`` comes last. A layer or priority the user chose (``NUMBA_THREADING_LAYER``,
``NUMBA_THREADING_LAYER_PRIORITY``) is left alone.

**One OpenMP runtime, torch's.** torch's Linux wheels load their GNU OpenMP into the global symbol
scope; numba's ``omp`` layer binds to the runtime already there, so bnlab's kernels and torch's ops
share one thread pool and one spin policy (torch's), and two processes on shared cores compete with
two teams, not four. But starting numba's pool calls ``omp_set_num_threads(cpu count)`` and
``omp_set_nested(1)`` in that runtime: left alone, this silently undid ``torch.set_num_threads(1)``
(two 1-thread trainings sharing 2 cores then ran 2-thread OpenMP teams that spun against each
other: 80 s instead of 5 s each) and enabled nested teams. :func:`start` therefore restores torch's
thread count and the runtime's active-levels limit after the pool starts.

**Threads of the caller.** The ``omp`` and ``tbb`` layers take parallel launches from several
Python threads at once; ``workqueue`` does not: two threads launching together abort the process
(SIGABRT). Under ``workqueue`` -- bnlab's fallback, or the user's choice -- :func:`serialized` makes
the kernel entry points take one process-wide lock, so launches from different threads run one
after the other (same results, no abort).

GNU OpenMP does not survive ``fork``: numba aborts a child process that launches a parallel loop
after its parent has. :func:`parallel_allowed` is False in such a child, so it runs the serial
kernels (processes bnlab starts itself are spawned, not forked).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading

import numba

__all__ = ["start", "parallel_allowed", "openmp_state", "serialized", "launches_need_lock"]

_PRIORITY = ["omp", "workqueue", "tbb"]
_started_in: list[int] = []  # the pid whose numba pool started (empty: not started)


def _omp():
    """The OpenMP entry points in the process's global scope (torch's runtime), or None."""
    lib = ctypes.CDLL(None)
    return lib if hasattr(lib, "omp_get_max_active_levels") else None


def openmp_state() -> tuple[int | None, int | None]:
    """(torch's thread count, the global OpenMP runtime's max active levels or None if absent).

    The thread count is None where torch is not loaded (the child process that only compiles kernels,
    :mod:`bnlab.kernels.cache`)."""
    lib = _omp()
    torch = sys.modules.get("torch")
    return (None if torch is None else torch.get_num_threads()), None if lib is None else int(
        lib.omp_get_max_active_levels()
    )


def start() -> None:
    """Choose the layer (unless the user did) and start numba's thread pool now. Idempotent."""
    if _started_in:
        return
    if "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ and numba.config.THREADING_LAYER == "default":  # type: ignore[attr-defined]  # run-time settings
        numba.config.THREADING_LAYER_PRIORITY = list(_PRIORITY)  # type: ignore[attr-defined]  # run-time setting
    threads, levels = openmp_state()
    try:
        from numba.np.ufunc import parallel

        parallel._launch_threads()
    finally:
        # numba's omp layer just set the shared runtime's thread count and nesting: put back torch's
        if threads is not None:
            sys.modules["torch"].set_num_threads(threads)
        if levels is not None:
            _omp().omp_set_max_active_levels(ctypes.c_int(levels))
    _started_in.append(os.getpid())


def parallel_allowed() -> bool:
    """False in a process forked from one whose pool started (GNU OpenMP cannot run there)."""
    return not _started_in or _started_in[0] == os.getpid()


_launch_lock = threading.Lock()  # held around each kernel call under a layer that is not thread-safe


def launches_need_lock() -> bool:
    """Whether the running layer aborts on concurrent launches (``workqueue``); call after :func:`start`."""
    return numba.threading_layer() == "workqueue"


def serialized(fn):
    """``fn`` called under one process-wide lock (see the module docstring)."""

    @functools.wraps(fn)
    def call(*args):
        with _launch_lock:
            return fn(*args)

    return call
