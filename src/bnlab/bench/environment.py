"""What makes two benchmark runs comparable: pinned settings, and a record of the machine.

Page faults on fresh large outputs shifted torch's native timings by up to 2x: glibc returns large
freed blocks to the OS (mmap'ed allocations, heap trimming), so every call that allocates a
multi-MB output faults its pages in again. :func:`pin_allocator` sets glibc's ``M_MMAP_THRESHOLD``
and ``M_TRIM_THRESHOLD`` so freed memory stays in the process and is reused, for both libraries.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

import torch

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 1 << 30  # blocks under 1 GiB come from the heap, and freed memory is not trimmed


def pin_allocator() -> str:
    """Keep freed memory in the process (glibc only); returns what was done, for the record."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return "not pinned (no glibc mallopt)"
    ok = mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES) == 1 and mallopt(_M_TRIM_THRESHOLD, 2 * _KEEP_BYTES) == 1
    if not ok:
        return "not pinned (mallopt refused)"
    return f"glibc mallopt M_MMAP_THRESHOLD={_KEEP_BYTES} M_TRIM_THRESHOLD={2 * _KEEP_BYTES}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(allocator: str) -> dict:
    """The facts a reader needs to compare this run with another."""
    import numba

    from ..core import dispatch
    from ..kernels import cache

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        layer = "not initialised"
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numba": numba.__version__,
        "numpy": __import__("numpy").__version__,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": layer,
        "numba_cache_dir": cache.CACHE_DIR,
        "fast_path_enabled": dispatch.fast_enabled(),
        "allocator": allocator,
        "env": {
            k: os.environ[k]
            for k in sorted(os.environ)
            if k.startswith(("OMP_", "GOMP_", "MKL_", "NUMBA_", "BNLAB_", "MALLOC_", "KMP_"))
        },
    }
