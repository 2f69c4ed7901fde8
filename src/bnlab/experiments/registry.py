"""The experiments, by claim id, and the functions that run them.

Each experiment is a module (``cNN_name.py``) with module-level constants ``ID``, ``NAME``,
``QUESTION``, ``CLAIM``, ``SOURCE`` and ``RULE`` -- the verdict rule, stated before anything runs --
and either

* a training experiment: ``sweep(quick: bool, seeds: int | None) -> list[RunConfig]`` declaring its
  runs, and ``analyze(runs: list[RunResult], ctx: Context) -> ClaimResult`` computing the verdict
  from them (``runs[i]`` is ``sweep(...)[i]``'s result, read from the store; None for a failed run);
* or a computed experiment: ``run(ctx: Context) -> ClaimResult``.

Runs come from the results store: finished runs are reused, never recomputed. :func:`run_all`
gathers every experiment's sweep into ONE sweep, so the worker processes start once and stay busy.
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
    "C1": "bnlab.experiments.c01_bn_trains_faster",
    "C2": "bnlab.experiments.c02_identities",
    "C3": "bnlab.experiments.c03_higher_lr",
    "C4": "bnlab.experiments.c04_placement",
    "C5": "bnlab.experiments.c05_noisy_bn",
    "C6": "bnlab.experiments.c06_ics_gradients",
    "C7": "bnlab.experiments.c07_landscape",
    "C8": "bnlab.experiments.c08_small_batches",
    "C9": "bnlab.experiments.c09_batch_renorm",
    "C10": "bnlab.experiments.c10_ghost_bn",
    "C11": "bnlab.experiments.c11_precise_bn",
    "C12": "bnlab.experiments.c12_only_bn_params",
    "C13": "bnlab.experiments.c13_adapt_statistics",
    "C14": "bnlab.experiments.c14_tent",
}

ProgressFn = Callable[[str, int, int], None]  # (experiment id, runs done, runs total)


def _no_progress(experiment: str, done: int, total: int) -> None:
    pass


def _as_progress_fn(progress) -> ProgressFn:
    """Accept a callable or an object with ``update(experiment, done, total)`` (report.Progress)."""
    if progress is None:
        return _no_progress
    return progress.update if hasattr(progress, "update") else progress


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


def _sweep(module: ModuleType, ctx: Context) -> list:
    return list(module.sweep(ctx.quick, ctx.seeds)) if hasattr(module, "sweep") else []


def _run_configs(configs: list, ctx: Context, owner: dict[str, str]) -> dict:
    """Run (or reuse) every config in one sweep; return {config key: RunResult or None}.

    Progress is reported per experiment: ``ctx.progress(id, runs done, runs total)`` after each
    of its runs, with the runs already in the store counted as done.
    """
    from ..train.store import Store
    from ..train.sweep import run_sweep

    if not configs:
        return {}
    ctx.store.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(c.key() for c in configs))  # unique, in the sweep's order
    total: dict[str, int] = {}
    for key in keys:
        total[owner[key]] = total.get(owner[key], 0) + 1
    with Store(ctx.store) as store:
        already = store.done(configs)
    done = {claim: 0 for claim in total}
    for key in already:
        done[owner[key]] += 1
    for claim in total:  # experiments with stored runs; the others appear with their first run, so
        if done[claim]:  # each experiment's clock (and so its ETA) starts when its own runs do
            ctx.progress(claim, done[claim], total[claim])

    def progress(p) -> None:
        key = (p.last or {}).get("key")
        if key in owner:
            done[owner[key]] += 1
            ctx.progress(owner[key], done[owner[key]], total[owner[key]])

    results = run_sweep(configs, store=ctx.store, jobs=ctx.jobs, progress=progress, on_error="skip")
    return {c.key(): r for c, r in zip(configs, results)}


def _finish(module: ModuleType, ctx: Context, by_key: dict, configs: list, start: float) -> ClaimResult:
    if hasattr(module, "sweep"):
        result = module.analyze([by_key.get(c.key()) for c in configs], ctx)
    else:
        result = module.run(ctx)
    result.wall_time_s = time.perf_counter() - start
    return result


def run(claim_id: str, ctx: Context) -> ClaimResult:
    module = get(claim_id)
    start = time.perf_counter()
    configs = _sweep(module, ctx)
    by_key = _run_configs(configs, ctx, {c.key(): module.ID for c in configs})
    return _finish(module, ctx, by_key, configs, start)


def run_all(quick: bool = False, jobs: int = 1, seeds: int | None = None,
            progress=None, store: Path | None = None) -> list[ClaimResult]:
    ctx = Context(quick=quick, seeds=seeds, jobs=jobs, progress=_as_progress_fn(progress),
                  store=store or default_store())
    start = time.perf_counter()
    modules = [get(claim_id) for claim_id in EXPERIMENTS]
    sweeps = {m.ID: _sweep(m, ctx) for m in modules}
    owner = {c.key(): claim_id for claim_id, configs in sweeps.items() for c in configs}
    by_key = _run_configs([c for configs in sweeps.values() for c in configs], ctx, owner)
    results = []
    for m in modules:
        t = time.perf_counter()
        results.append(_finish(m, ctx, by_key, sweeps[m.ID], t))
    # Training time is shared by one sweep: give each experiment its analysis time plus its share.
    sweep_s = (time.perf_counter() - start) - sum(r.wall_time_s for r in results)
    n_runs = sum(len(s) for s in sweeps.values()) or 1
    for r in results:
        r.wall_time_s += sweep_s * len(sweeps[r.id]) / n_runs
    return results
