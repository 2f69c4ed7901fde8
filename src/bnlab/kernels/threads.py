"""numba's threading layer for bnlab's kernels, chosen and started in one place.

bnlab's training forward and backward each launch two or three parallel loops, so what a launch
costs decides the speed of a mid-sized batch norm. Measured on a 2-core machine (2 threads):

* numba's ``workqueue`` layer: about 90 us per launch (its workers sleep between launches and are
  woken by the kernel); a training forward and backward launch four times, 360 us per layer
  and step, where a 32x16x64x64 forward's memory traffic takes about 0.8 ms.
* numba's ``omp`` layer (GNU OpenMP): about 2 us per launch once its workers are awake. A torch op
  followed by two launches cost what the torch op alone cost (171 vs 164 us).

So bnlab prefers ``omp``, falling back to ``workqueue`` where numba's OpenMP pool cannot load (no
libgomp on the system); ``tbb`` comes last. OpenMP workers spin after each parallel region before
they sleep; numba's runtime is a second OpenMP runtime next to torch's, so a long spin would take
a core from torch's next op. bnlab therefore starts numba's pool with ``GOMP_SPINCOUNT`` =
:data:`SPINCOUNT` (long enough for the launches within one batch-norm call, short next to a
convolution), and restores the environment afterwards so torch's runtime and child processes keep
theirs.

A layer or priority the user chose (``NUMBA_THREADING_LAYER``, ``NUMBA_THREADING_LAYER_PRIORITY``)
and an OpenMP spin setting of their own (``GOMP_SPINCOUNT``, ``OMP_WAIT_POLICY``) are left alone.

GNU OpenMP does not survive ``fork``: numba aborts a child process that launches a parallel loop
after its parent has. :func:`parallel_allowed` is False in such a child, so it runs the serial
kernels (processes bnlab starts itself are spawned, not forked).
"""

from __future__ import annotations

import os

import numba

__all__ = ["SPINCOUNT", "start", "parallel_allowed"]

SPINCOUNT = "10000"
_PRIORITY = ["omp", "workqueue", "tbb"]
_started_in: list[int] = []  # the pid whose numba pool started (empty: not started)


def start() -> None:
    """Choose the layer (unless the user did) and start numba's thread pool now. Idempotent."""
    if _started_in:
        return
    if "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ and numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER_PRIORITY = list(_PRIORITY)
    own_spin = "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ
    if not own_spin:
        os.environ["GOMP_SPINCOUNT"] = SPINCOUNT
    try:
        from numba.np.ufunc import parallel

        parallel._launch_threads()  # loads the layer; libgomp reads GOMP_SPINCOUNT as it loads
    finally:
        if not own_spin:
            del os.environ["GOMP_SPINCOUNT"]
    _started_in.append(os.getpid())


def parallel_allowed() -> bool:
    """False in a process forked from one whose pool started (GNU OpenMP cannot run there)."""
    return not _started_in or _started_in[0] == os.getpid()
