"""The experiments, by claim id, and the functions that run them.

Each experiment is a module (``cNN_name.py``) with the module-level constants ``ID``, ``NAME``,
``QUESTION``, ``CLAIM``, ``SOURCE`` and ``RULE`` -- the verdict rule, stated before anything runs --
and a function ``run(ctx: Context) -> ClaimResult``. Training experiments declare their sweep in a
``sweep(quick, seeds)`` function and get their runs from the results store (finished runs are
reused, never recomputed).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Callable

from .result import ClaimResult

# claim id -> module; the order is the report's.
EXPERIMENTS: dict[str, str] = {
    "C2": "bnlab.experiments.c02_identities",
}

ProgressFn = Callable[[str, int, int], None]  # (experiment id, runs done, runs total)


def _as_progress_fn(progress) -> ProgressFn:
    """Accept a callable or an object with ``update(experiment, done, total)`` (report.Progress)."""
    if progress is None:
        return _no_progress
    return progress.update if hasattr(progress, "update") else progress


def _no_progress(experiment: str, done: int, total: int) -> None:
    pass


def default_store() -> Path:
    """Where stored runs live: $BNLAB_STORE, else the user cache dir."""
    if os.environ.get("BNLAB_STORE"):
        return Path(os.environ["BNLAB_STORE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "bnlab" / "runs.sqlite"


@dataclasses.dataclass
class Context:
    quick: bool = False
    seeds: int | None = None  # None: the experiment's own default for quick/full
    jobs: int = 1  # worker processes for sweeps
    store: Path = dataclasses.field(default_factory=default_store)
    progress: ProgressFn = _no_progress


def ids() -> list[str]:
    return list(EXPERIMENTS)


def get(claim_id: str) -> ModuleType:
    key = claim_id.upper()
    if key not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {claim_id!r}; expected one of {', '.join(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[key])


def run(claim_id: str, ctx: Context) -> ClaimResult:
    module = get(claim_id)
    start = time.perf_counter()
    result = module.run(ctx)
    result.wall_time_s = time.perf_counter() - start
    return result


def run_all(quick: bool = False, jobs: int = 1, seeds: int | None = None,
            progress=None, store: Path | None = None) -> list[ClaimResult]:
    ctx = Context(quick=quick, seeds=seeds, jobs=jobs, progress=_as_progress_fn(progress),
                  store=store or default_store())
    return [run(claim_id, ctx) for claim_id in EXPERIMENTS]
