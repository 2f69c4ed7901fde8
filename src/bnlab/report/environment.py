"""Where and how a report was produced: versions, machine, threads, seeds, wall time, git revision.

Every claim carries its evidence, and the evidence includes the environment: results.json and the
page's footer both show this dict.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from .. import __version__


def cpu_model() -> str:
    """The CPU's marketing name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


# The environment variables that cap the instruction set of torch's kernels (ATen, oneDNN, MKL) or of
# numba's: a run made with one of them set is a run of that instruction set, whatever the CPU offers.
ISA_CAPS = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
    "NUMBA_CPU_NAME",
    "NUMBA_CPU_FEATURES",
)


def cpu_isa() -> str:
    """The vector instruction set torch's CPU kernels run with here (``AVX512``, ``AVX2``, ...), then
    the environment variables of ``ISA_CAPS`` that are set, e.g. ``AVX2 (ATEN_CPU_CAPABILITY=avx2)``."""
    capability = torch.backends.cpu.get_cpu_capability()
    caps = [f"{name}={os.environ[name]}" for name in ISA_CAPS if os.environ.get(name)]
    return capability + (f" ({', '.join(caps)})" if caps else "")


def git_revision(path: Path | None = None) -> str | None:
    """The commit bnlab's source is checked out at (with "-dirty" for local changes), or None when
    bnlab is not running from a git checkout or git is unavailable."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        run: dict[str, Any] = dict(cwd=where, capture_output=True, text=True, timeout=10, check=True)
        rev = subprocess.run(["git", "rev-parse", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **run).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev or None


def collect(
    *,
    quick: bool,
    jobs: int,
    seeds: int | None,
    wall_time_s: float,
    claim_seeds: dict[str, Any] | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """The environment record of one report.

    Args:
        quick: whether the quick variants of the experiments ran.
        jobs: worker processes requested.
        threads: torch threads per run.
        seeds: seeds per configuration requested on the command line (None: each experiment's own).
        wall_time_s: wall time of running the experiments and writing the report, seconds.
        claim_seeds: the seeds each experiment actually used (claim id -> its ``setup["seeds"]``).
    """
    import matplotlib
    import numpy

    return {
        "bnlab": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "matplotlib": matplotlib.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_isa": cpu_isa(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "quick": quick,
        "jobs": jobs,
        "threads_per_run": threads,
        "seeds": {"requested": seeds, "per_claim": dict(claim_seeds or {})},
        "wall_time_s": round(float(wall_time_s), 3),
        "git_revision": git_revision(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
    }
