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

Seeds in rounds: an experiment that declares ``SEEDS`` (:class:`.spec.Seeds`) runs its first round
of seeds, is judged, and -- unless every verdict (the claim's and each part's) is settled and was
settled with the same verdicts at the look before (:func:`.stability.confirmed`) -- adds ``step``
seeds and is judged again, up to its cap (a larger cap with a scheduler). Each round of all the experiments
still open goes out as one sweep, and each experiment is judged as soon as its runs of the round are in, while
the others' runs go on. A quick run, or one with ``--seeds``, is one round.

A quick run trains every seed on its own: its two seeds per setting would fill a fixed-width
group (:data:`bnlab.train.seeds.GROUP_WIDTH`) to a quarter, at more than twice the cost of two
single runs; a full run's rounds add whole groups of seeds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from . import stability
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


class _Silent:
    def plan(self, runs: dict[str, int], stored: dict[str, int]) -> None:
        pass

    def update(self, experiment: str, done: int, total: int) -> None:
        pass


class _FromFunction:
    """A bare ``fn(experiment, done, total)`` as a progress object (it is not told the plan)."""

    def __init__(self, fn: ProgressFn) -> None:
        self.update = fn

    def plan(self, runs: dict[str, int], stored: dict[str, int]) -> None:
        pass


def _as_progress(progress):
    """Accept None, a callable, or an object with ``update(experiment, done, total)`` and
    optionally ``plan(runs, stored)`` (report.Progress)."""
    if progress is None:
        return _Silent()
    if hasattr(progress, "update"):
        return progress if hasattr(progress, "plan") else _FromFunction(progress.update)
    return _FromFunction(progress)


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
    jobs: int = 1  # local worker processes for sweeps (1: in this process)
    store: Path = dataclasses.field(default_factory=default_store)
    progress: Any = dataclasses.field(default_factory=_Silent)  # plan(runs, stored) and update(id, done, total)
    scheduler: str | None = None  # a Dask scheduler's address: run the sweeps there
    threads: int = 1  # torch threads per run
    session: Any = None  # a bnlab.train.cluster.Session every round's sweep runs on (None: _run_rounds opens one)

    def __post_init__(self) -> None:
        self.progress = _as_progress(self.progress)


def ids() -> list[str]:
    return list(EXPERIMENTS)


def get(claim_id: str) -> ModuleType:
    key = claim_id.upper()
    if key not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {claim_id!r}; expected one of {', '.join(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[key])


def _sweep(module: ModuleType, ctx: Context) -> list:
    return list(module.sweep(ctx.quick, ctx.seeds)) if hasattr(module, "sweep") else []


def _run_configs(sweeps: dict[str, list], ctx: Context, on_complete: Callable[[str], None] | None = None) -> dict:
    """Run (or reuse) every experiment's configs (``sweeps``: experiment id -> its configs) in one sweep;
    return {config key: RunResult or None}.

    Progress: ``ctx.progress.plan`` with every experiment's runs (and how many are stored) first,
    then ``ctx.progress.update(id, runs done, runs total)`` after each of its runs (a run two experiments
    share counts for the last). ``on_complete(id)`` is called, during the sweep, as soon as the last of an
    experiment's runs that were not yet stored is; the runs of the others go on meanwhile on the workers.
    """
    from ..train.store import Store
    from ..train.sweep import run_sweep

    configs = [c for cs in sweeps.values() for c in cs]
    # config key -> the last experiment that has it, for the progress counts (a run shared with an experiment
    # of an earlier round only then counts once in the progress's totals, which keep the earlier rounds')
    owner = {c.key(): claim_id for claim_id, cs in sweeps.items() for c in cs}
    total = dict.fromkeys(sweeps, 0)  # computed experiments (no runs) are in the plan too
    for key in owner.values():
        total[key] += 1
    done = dict.fromkeys(total, 0)
    stored: set[str] = set()
    if configs:
        with Store(ctx.store) as store:
            stored = set(store.done(configs))
    for key in stored:
        done[owner[key]] += 1
    ctx.progress.plan(dict(total), dict(done))
    if not configs:
        return {}
    waiting = {claim_id: {c.key() for c in cs} - stored for claim_id, cs in sweeps.items()}
    waiting = {claim_id: keys for claim_id, keys in waiting.items() if keys}  # those with runs to wait for
    needed_by: dict[str, list[str]] = {}
    for claim_id, keys in waiting.items():
        for key in keys:
            needed_by.setdefault(key, []).append(claim_id)

    def progress(p) -> None:
        key = (p.last or {}).get("key")
        if key in owner:
            done[owner[key]] += 1
            ctx.progress.update(owner[key], done[owner[key]], total[owner[key]])
        for claim_id in needed_by.pop(key, []) if key is not None else []:
            waiting[claim_id].discard(key)
            if not waiting[claim_id] and on_complete is not None:
                on_complete(claim_id)

    results = run_sweep(
        configs,
        store=ctx.store,
        jobs=ctx.jobs,
        progress=progress,
        on_error="skip",
        scheduler=ctx.scheduler,
        group_seeds=not ctx.quick,
        threads=ctx.threads,
        session=ctx.session,
    )
    return {c.key(): r for c, r in zip(configs, results)}


def _stored_results(configs: list, ctx: Context) -> dict:
    """{config key: RunResult or None} of ``configs`` as the store holds them now."""
    from ..train.store import Store

    with Store(ctx.store) as store:
        return {c.key(): r for c, r in zip(configs, store.results(configs))}


def _finish(module: ModuleType, ctx: Context, by_key: dict, configs: list) -> ClaimResult:
    """The experiment's verdict, with ``wall_time_s`` its measured cost: the wall time of each of
    its runs (measured by the trainer where the run ran, now or when it was stored) plus the time
    its analysis (or a computed experiment's whole run) takes here."""
    start = time.perf_counter()
    if hasattr(module, "sweep"):
        runs = [by_key.get(c.key()) for c in configs]
        result = module.analyze(runs, ctx)
        train_s = sum(r.wall_s for r in {id(r): r for r in runs if r is not None}.values())
    else:
        result = module.run(ctx)
        train_s = 0.0
    result.wall_time_s = train_s + (time.perf_counter() - start)
    assert result.stability is not None, f"{module.ID}: every verdict carries its stability (stability.settle)"
    return result


def _plan(module: ModuleType, ctx: Context) -> list[int] | None:
    """The seed counts of the module's rounds, or None for one round at ``ctx.seeds`` (the module's default)."""
    policy = getattr(module, "SEEDS", None)
    if policy is None or ctx.quick or ctx.seeds is not None or not hasattr(module, "sweep"):
        return None
    return policy.rounds(policy.cluster_cap if ctx.scheduler else policy.cap)


def _stabilities(result: ClaimResult) -> list:
    return [result.stability] + [p.stability for p in result.parts]


def _round(
    active: list[ModuleType], ctx: Context, ctxs: dict[str, Context], interim: dict[str, bool]
) -> dict[str, ClaimResult]:
    """One look of the ``active`` experiments: their runs (each with its own ``ctxs[id]``) in one sweep on
    ``ctx``'s store and cluster, and
    each experiment judged (an ``interim`` look without the projection, :func:`.stability.interim_look`) as
    soon as its runs are all in, while the others' runs go on -- the judging, a bootstrap of the rule, would
    otherwise wait for the round's last run with the workers idle."""
    sweeps = {m.ID: _sweep(m, ctxs[m.ID]) for m in active}
    by_id = {m.ID: m for m in active}
    judged: dict[str, ClaimResult] = {}

    def judge(claim_id: str, by_key: dict) -> None:
        with stability.interim_look() if interim[claim_id] else contextlib.nullcontext():
            judged[claim_id] = _finish(by_id[claim_id], ctxs[claim_id], by_key, sweeps[claim_id])

    by_key = _run_configs(sweeps, ctx, lambda claim_id: judge(claim_id, _stored_results(sweeps[claim_id], ctx)))
    for m in active:
        if m.ID not in judged:
            judge(m.ID, by_key)
    return judged


def _run_rounds(modules: list[ModuleType], ctx: Context) -> list[ClaimResult]:
    """Every module's runs in rounds of one sweep each (module docstring), all on one cluster (``ctx.session``,
    else one opened here for the rounds: a local cluster starts once, not once a round); the results in
    ``modules``' order."""
    if ctx.session is None:
        from ..train.cluster import Session

        with Session(ctx.scheduler, ctx.jobs) as session:
            return _run_rounds(modules, dataclasses.replace(ctx, session=session))
    plans = {m.ID: _plan(m, ctx) for m in modules}
    look = {m.ID: 0 for m in modules}
    before: dict[str, list] = {}  # the stabilities of each experiment's previous look
    results: dict[str, ClaimResult] = {}
    active = list(modules)
    while active:
        # plans[m.ID] is not None where it is indexed (mypy narrows no subscript by a variable key)
        ctxs = {m.ID: dataclasses.replace(ctx, seeds=plans[m.ID][look[m.ID]]) if plans[m.ID] else ctx for m in active}  # type: ignore[index]
        interim = {m.ID: plans[m.ID] is not None and look[m.ID] < len(plans[m.ID]) - 1 for m in active}  # type: ignore[arg-type]
        judged = _round(active, ctx, ctxs, interim)
        still = []
        for m in active:
            result = results[m.ID] = judged[m.ID]
            plan = plans[m.ID]
            if plan is None:
                continue
            last = look[m.ID] == len(plan) - 1
            now = _stabilities(result)
            stop = stability.confirmed(before.get(m.ID), now) and not last
            result.rounds = {
                "rounds": look[m.ID] + 1,
                "seeds": plan[look[m.ID]],
                "plan": plan,
                "stopped": "settled" if stop else "cap",
            }
            before[m.ID] = now
            if not (stop or last):
                look[m.ID] += 1
                still.append(m)
        active = still
    return [results[m.ID] for m in modules]


def run(claim_id: str, ctx: Context) -> ClaimResult:
    return _run_rounds([get(claim_id)], ctx)[0]


def run_all(
    quick: bool = False,
    jobs: int = 1,
    seeds: int | None = None,
    progress=None,
    store: Path | None = None,
    scheduler: str | None = None,
    threads: int = 1,
    session: Any = None,
) -> list[ClaimResult]:
    """Every experiment: their runs in rounds of one sweep each (local workers or ``scheduler``, ``threads``
    torch threads per run), each round followed by the analyses of the experiments it ran; ``session``: a
    :class:`~bnlab.train.cluster.Session` of the caller's to run them on (its scheduler and jobs then
    replace ``scheduler`` and ``jobs``)."""
    ctx = Context(
        quick=quick,
        seeds=seeds,
        jobs=jobs,
        progress=progress,
        store=store or default_store(),
        scheduler=scheduler,
        threads=threads,
        session=session,
    )
    return _run_rounds([get(claim_id) for claim_id in EXPERIMENTS], ctx)
