"""Interleaved timing of competing callables, and the machine's copy bandwidth.

Both libraries are timed in the same process, alternating sample by sample (the order flips every
repeat), after a warm-up, with the garbage collector off; each sample runs the callable enough
times to last at least ``min_sample_s``. The median of the samples is reported: on a shared
machine the noise is one-sided (other work only ever makes a sample slower).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

import torch


def _loops_for(fn: Callable[[], object], min_sample_s: float) -> int:
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    return max(1, int(min_sample_s / once) + 1) if once < min_sample_s else 1


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2, min_sample_s: float = 0.002
) -> dict[str, float]:
    """Median seconds per call of each callable, sampled alternately; keys as in ``fns``."""
    return {name: statistics.median(s) for name, s in sample_interleaved(fns, repeats, warmup, min_sample_s).items()}


def sample_interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 2,
    min_sample_s: float = 0.002,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """The samples behind :func:`time_interleaved`: ``repeats`` seconds-per-call values per callable,
    on ``clock`` (wall time; ``time.process_time`` for this process's CPU time)."""
    if repeats < 1:
        raise ValueError(f"expected repeats >= 1 (got {repeats})")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    loops = {name: _loops_for(fns[name], min_sample_s) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for rep in range(repeats):
            for name in names if rep % 2 == 0 else names[::-1]:
                fn, n = fns[name], loops[name]
                start = clock()
                for _ in range(n):
                    fn()
                samples[name].append((clock() - start) / n)
    finally:
        if was_enabled:
            gc.enable()
    return samples


def copy_seconds(numel: int, repeats: int, dtype: torch.dtype = torch.float32) -> float:
    """Median seconds of ``dst.copy_(src)`` for ``numel`` elements into a preallocated ``dst``."""
    src = torch.rand(numel, dtype=dtype)
    dst = torch.empty_like(src)
    return time_interleaved({"copy": lambda: dst.copy_(src)}, repeats)["copy"]


def copy_bandwidth(nbytes: int = 256 << 20, repeats: int = 9) -> float:
    """The machine's copy bandwidth in GB/s (read + write counted), on arrays far larger than caches."""
    numel = nbytes // 4
    return 2 * numel * 4 / copy_seconds(numel, repeats) / 1e9


def is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress_line(stream, text: str) -> None:
    """A benchmark's progress: one live line on a terminal; plain lines, without control characters, in a
    pipe or a log."""
    stream.write(f"\r{text}\033[K" if is_terminal(stream) else f"{text}\n")
    stream.flush()
