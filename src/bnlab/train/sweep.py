"""Run many configs into one store, in this process or on a Dask cluster, skipping what is done.

::

    from bnlab.train import RunConfig
    from bnlab.train.sweep import run_sweep

    configs = [RunConfig(norm=n, lr=lr, seed=s) for n in ("none", "bn") for lr in (0.01, 0.1) for s in range(3)]
    results = run_sweep(configs, store="results.db", jobs=2, progress=print)
    # results[i] is configs[i]'s RunResult (read back from the store)
    run_sweep(configs, "results.db", scheduler="tcp://10.0.0.5:8786")   # on an existing Dask cluster

* **Seeds trained together.** Configs that differ only in ``seed`` are trained as one grouped model
  (:mod:`.seeds`), in groups of up to :data:`~bnlab.train.seeds.GROUP_WIDTH`: one task per group,
  here or on the cluster. Each seed's result is stored under its own config's key, and progress
  counts runs. A seed's result is the same bits in whichever group it is trained (the groups have
  one width; tested), so what a sweep stores does not depend on which seeds it was asked for or
  found done. Configs that cannot be grouped (:func:`~bnlab.train.seeds.why_not_grouped`) train one at a time;
  ``group_seeds=False`` sends every config to the single-seed trainer.
* **One training for the runs that only observe it.** Configs that differ only in the seed and what
  observes the training (the probes that read only the model they are handed, ``eval_every``, and
  ``steps`` on a constant schedule: :func:`~bnlab.train.views.trunk`) go to one group, which trains each seed
  once, up to the longest run's steps, and gives each config the result it gets alone (tested bit for bit).
  The experiments ask for such runs (C4's BN-before-ReLU arm, C5's BN and no-BN arms and C11's runs are
  C3's; C13's are C14's; C6's are C7's), so a full report trains 74 fewer of its 701 runs.
* A config already finished or diverged in the store is not run again; re-running a sweep after a
  crash or a kill runs only what is missing (the runs in flight at the kill).
* ``jobs > 1`` starts a local Dask cluster of that many worker processes (spawned: a script that
  calls run_sweep needs the ``if __name__ == "__main__":`` guard) and stops it at the end;
  ``scheduler=ADDRESS`` submits to an existing Dask scheduler instead (:mod:`.cluster`);
  ``session=`` a :class:`~bnlab.train.cluster.Session` runs on the caller's cluster, which outlives the
  sweep (several sweeps, one cluster start). Every
  run uses ``threads`` torch threads (default 1) wherever it runs, so a run gives bit-identical
  metrics whatever ``jobs`` is and whichever worker ran it (torch's CPU kernels may sum in a
  different order with a different thread count; workers on other kinds of CPU may differ in the
  last bits). Results come back to this process, which alone writes the store, each as soon as it
  arrives: a kill of the sweep loses only the runs in flight.
* A run whose worker dies is rescheduled on another worker by Dask; one whose workers keep dying
  is recorded as "failed". Ctrl-C (KeyboardInterrupt) or SIGTERM through ``bnlab``'s command line
  cancels the queued runs, releases their claims and stops the local workers before it returns.
* ``progress(p)`` is called after every run with a :class:`SweepProgress` (runs done / total,
  elapsed, ETA, the last result's summary).
* A config that another live process has claimed (two sweeps over one store) is not run twice:
  run_sweep waits for it at the end, saying so, and runs it itself if that process dies. A claim
  whose process is gone (or whose pid now belongs to another program) is taken over at once,
  with a message on the ``bnlab`` logger.
* A run that raises is recorded as "failed" with its traceback and the others go on; at the end
  run_sweep raises :class:`SweepError` naming the failures (``on_error="skip"`` returns None for
  them instead, and logs how many failed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import cluster
from .config import RunConfig
from .local import train_here
from .result import RunResult
from .store import Claim, Store, StoreError

log = logging.getLogger("bnlab")


@dataclasses.dataclass
class SweepProgress:
    done: int  # runs completed in this sweep, plus those found done in the store
    total: int  # distinct configs in the sweep
    skipped: int  # found done in the store, not run
    failed: int
    elapsed_s: float
    eta_s: float  # runs left x wall time per run completed so far in this sweep (NaN before the first)
    last: dict | None = None  # summary() of the run just completed, with "key"

    def __str__(self) -> str:
        eta = "?" if self.eta_s != self.eta_s else f"{self.eta_s:.0f}s"
        return (
            f"{self.done}/{self.total} runs ({self.skipped} already done, {self.failed} failed), "
            f"{self.elapsed_s:.0f}s elapsed, ETA {eta}"
        )


class SweepError(RuntimeError):
    pass


class _Tally:
    """Counts, failures and progress reports of one sweep."""

    def __init__(self, total: int, skipped: int, progress: Callable[[SweepProgress], None] | None) -> None:
        self.total, self.skipped, self.progress = total, skipped, progress
        self.failures: list[str] = []  # keys of the failed runs
        self.done, self.ran = skipped, 0
        self.t0 = time.perf_counter()

    def __call__(self, key: str, outcome: str, summary: dict | None) -> None:
        if outcome == "failed":
            self.failures.append(key)
        else:
            self.ran += 1
        self.done += 1
        if self.progress is not None:
            elapsed = time.perf_counter() - self.t0
            finished_here = self.ran + len(self.failures)
            eta = elapsed / finished_here * (self.total - self.done) if finished_here else float("nan")
            last = {"key": key, **(summary or {})}
            self.progress(SweepProgress(self.done, self.total, self.skipped, len(self.failures), elapsed, eta, last))


def _say_takeovers(claims: list[Claim]) -> None:
    by_owner: dict[tuple[str, str], int] = {}
    for c in claims:
        if c.previous_owner is not None or c.reason is not None:
            k = (c.previous_owner or "?", c.reason or "")
            by_owner[k] = by_owner.get(k, 0) + 1
    for (holder, reason), n in by_owner.items():
        log.warning("taking over %d run(s) claimed by %s: %s", n, holder, reason)


def plan_groups(configs: Sequence[RunConfig], group_seeds: bool = True) -> list[list[RunConfig]]:
    """The sweep's units of work, dearest first: the configs of one training but the seed
    (:func:`~bnlab.train.views.trunk`: they differ only in ``seed`` and what only observes the training), in
    groups of at most :data:`~bnlab.train.seeds.GROUP_WIDTH` seeds with all their configs (in the order they
    come) where they can be trained together (:func:`~bnlab.train.seeds.why_not_grouped`), else one config per
    unit, so that several workers share the seeds of a setting that trains one seed at a time; one config per
    unit without ``group_seeds``. Dearest first (:func:`_cost`; units of equal cost in the order they come), so
    that a long unit does not start last while the other workers idle."""
    if not group_seeds:
        return sorted(([c] for c in configs), key=lambda u: -_cost(u[0], False))
    from .seeds import seed_chunks
    from .views import trunk

    settings: dict[RunConfig, list[RunConfig]] = {}
    for c in configs:
        settings.setdefault(trunk(c), []).append(c)
    shapes: dict[tuple, Any] = {}  # one data set loaded per name, for the models' shapes
    units: list[tuple[float, list[RunConfig]]] = []
    for group in settings.values():
        if _groupable(group, shapes):
            cost = _cost(max(group, key=lambda c: c.steps), True)
            units += [(cost, chunk) for chunk in seed_chunks(group)]
        else:
            units += [(_cost(c, False), [c]) for c in group]
    return [unit for _, unit in sorted(units, key=lambda cu: -cu[0])]


def _groupable(configs: list[RunConfig], shapes: dict) -> bool:
    """Whether ``configs`` (of one trunk) train as a group; False where the check itself fails (a data set or
    model the config cannot build): its runs then fail where they run and are recorded, one by one."""
    from .. import data as bdata
    from .seeds import why_not_grouped

    where = (configs[0].data, configs[0].data_root)
    try:
        if where not in shapes:
            shapes[where] = bdata.load(*where)
        seeds = {c.seed for c in configs}  # one config per view (seed 0's or another's) is enough to check
        views = {dataclasses.replace(c, seed=min(seeds)): None for c in configs}
        return why_not_grouped(list(views), shapes[where]) is None
    except Exception:  # noqa: BLE001 -- the run's own error is recorded when it runs
        return False


# A unit's cost, relative, for the order: steps x (batch + 50) of a run; a group of seeds (computed
# GROUP_WIDTH wide) as about 3 single runs (docs/guide/seeds.md: a group of 8 takes ~0.4 of its 8 runs).
_GROUP_COST = 3.0


def _cost(config: RunConfig, grouped: bool) -> float:
    return config.steps * (config.batch_size + 50) * (_GROUP_COST if grouped else 1.0)


def _record(db: Store, config: RunConfig, outcome: str, payload, tally: _Tally) -> None:
    if outcome == "failed":
        db.fail(config, payload)
        tally(config.key(), "failed", None)
    else:
        db.save(payload)
        tally(config.key(), payload.status, payload.summary())


def _release(db: Store, configs) -> None:
    """Drop this process's claims of runs it will not finish (interrupted), keeping the first error."""
    try:
        db.release(list(configs))
    except StoreError as e:
        log.warning("could not release the claims of the interrupted runs (%s); a later sweep takes them over", e)


def _run_here(
    todo: list[RunConfig], db: Store, tally: _Tally, device: str, threads: int, group_seeds: bool = True
) -> list[RunConfig]:
    """Claim and run each unit of configs in this process; return the configs another process holds."""
    busy: list[RunConfig] = []
    for unit in plan_groups(todo, group_seeds):
        claims = [db.claim(c) for c in unit]
        _say_takeovers(claims)
        mine = [c for c, claim in zip(unit, claims) if claim]
        busy.extend(c for c, claim in zip(unit, claims) if not claim)
        if not mine:
            continue
        try:
            outcomes = train_here(mine, device, threads, group_seeds)
        except BaseException:
            _release(db, mine)
            raise
        for c, (outcome, payload) in zip(mine, outcomes):
            _record(db, c, outcome, payload, tally)
    return busy


def _run_on_cluster(
    todo: list[RunConfig],
    db: Store,
    tally: _Tally,
    *,
    scheduler: str | None,
    jobs: int,
    device: str,
    threads: int,
    worker_setup,
    group_seeds: bool = True,
    session: cluster.Session | None = None,
) -> list[RunConfig]:
    """Claim every config, run the claimed ones as Dask tasks (a group of seeds each, or one run
    without ``group_seeds``), store each result as it arrives."""
    import distributed

    pending: dict[str, RunConfig] = {}  # claimed by this process, not yet stored
    busy, claims = [], []
    try:
        for c in todo:
            claims.append(db.claim(c))
            if claims[-1]:
                pending[c.key()] = c
            else:
                busy.append(c)
        _say_takeovers(claims)
        if not pending:
            return busy
        units = plan_groups(list(pending.values()), group_seeds)
        connection = contextlib.nullcontext(session.client()) if session else cluster.connect(scheduler, jobs)
        with connection as client:
            futures = {}
            for unit in units:
                if group_seeds:
                    futures[cluster.submit(client, unit, device, threads, worker_setup)] = unit
                else:
                    futures[cluster.submit_one(client, unit[0], device, threads, worker_setup)] = unit
            for fut in distributed.as_completed(futures, loop=client.loop):
                unit = futures[fut]
                try:
                    outs = fut.result()
                except Exception as e:  # noqa: BLE001 -- KilledWorker: its workers kept dying; or the scheduler was lost
                    error = f"{type(e).__name__}: {e} (the run's worker process died or the cluster lost it)"
                    outs = [{"outcome": "failed", "error": error}] * len(unit)
                if not group_seeds:
                    outs = [outs] if isinstance(outs, dict) else outs
                for c, out in zip(unit, outs):
                    if out["outcome"] == "failed":
                        _record(db, c, "failed", out["error"], tally)
                    else:
                        _record(db, c, out["outcome"], RunResult.from_dict(out["result"]), tally)
                    del pending[c.key()]
    except BaseException:
        _release(db, pending.values())
        raise
    return busy


def _wait_for_others(
    busy: list[RunConfig],
    db: Store,
    tally: _Tally,
    device: str,
    threads: int,
    poll_s: float = 0.5,
    group_seeds: bool = True,
) -> None:
    """Runs another live process had claimed: wait for them, or take them over if it goes away."""
    holders = {(db.info(c) or {}).get("owner") for c in busy}
    log.warning(
        "waiting for %d run(s) that another process is computing (%s); they are taken over if it stops",
        len(busy),
        ", ".join(sorted(h or "?" for h in holders)),
    )
    while busy:
        time.sleep(poll_s)
        still = []
        for c in busy:
            if db.status(c) in ("finished", "diverged"):
                tally(c.key(), "finished", None)
                continue
            still.extend(_run_here([c], db, tally, device, threads, group_seeds))
        busy = still


def run_sweep(
    configs: Sequence[RunConfig],
    store: Store | str | os.PathLike,
    jobs: int = 1,
    *,
    progress: Callable[[SweepProgress], None] | None = None,
    threads: int = 1,
    device: str = "cpu",
    on_error: str = "raise",
    worker_setup: Callable[[], None] | None = None,
    scheduler: str | None = None,
    group_seeds: bool = True,
    session: cluster.Session | None = None,
) -> list[RunResult | None]:
    """Run every config not yet done in ``store``; return each config's result, in order.

    Args:
        configs: the runs (duplicates are run once).
        store: a :class:`Store` or the path of its SQLite file.
        jobs: worker processes of the local cluster; 1 runs in this process. Ignored with ``scheduler``.
        progress: called with a :class:`SweepProgress` after each run.
        threads: torch threads per run, in workers and in this process alike (restored after). Default: 1
        device: the device every run uses.
        on_error: "raise" (default) raises :class:`SweepError` at the end if runs failed; "skip"
            returns None for them.
        worker_setup: a module-level function each worker process calls before its first run, e.g.
            one that registers an experiment's probes or norms (workers start from a fresh import).
        scheduler: the address of a running Dask scheduler (``tcp://host:8786``) to run on; None
            runs locally.
        group_seeds: train the configs that differ only in ``seed`` together (:mod:`.seeds`);
            False runs each config with the single-seed trainer (``bnlab train``'s). Default: True
        session: an open :class:`~bnlab.train.cluster.Session` to run on instead (its scheduler and jobs
            replace ``scheduler`` and ``jobs``); it stays open for the caller's next sweep.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"expected on_error 'raise' or 'skip' (got {on_error!r})")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"expected jobs >= 1 (got {jobs!r})")
    if session is not None:
        scheduler, jobs = session.scheduler, session.jobs
    own_store = not isinstance(store, Store)
    db = store if isinstance(store, Store) else Store(store)
    try:
        unique = list({c.key(): c for c in configs}.values())
        damaged = db.damaged(unique)
        if damaged:
            log.warning("%d stored run(s) in %s fail their checksum and will be run again", len(damaged), db.path)
        done_keys = db.done(unique)
        todo = [c for c in unique if c.key() not in done_keys]
        tally = _Tally(len(unique), len(done_keys), progress)
        if todo and db.read_only:
            raise StoreError(
                f"results store {db.path} is read-only here, and {len(todo)} of the sweep's "
                f"{len(unique)} runs are not in it (expected a writable store to run them)"
            )
        if scheduler is None and (jobs == 1 or len(plan_groups(todo, group_seeds)) <= 1):
            busy = _run_here(todo, db, tally, device, threads, group_seeds)
        else:
            busy = _run_on_cluster(
                todo,
                db,
                tally,
                scheduler=scheduler,
                jobs=jobs,
                device=device,
                threads=threads,
                worker_setup=worker_setup,
                group_seeds=group_seeds,
                session=session,
            )
        if busy:
            _wait_for_others(busy, db, tally, device, threads, group_seeds=group_seeds)
        if tally.failures:
            first = (db.info(tally.failures[0]) or {}).get("error") or ""
            if on_error == "raise":
                raise SweepError(
                    f"{len(tally.failures)} of {len(unique)} runs failed; the first ({tally.failures[0]}):\n{first}"
                )
            log.warning(
                "%d of %d runs failed (their errors are in %s); the first: %s",
                len(tally.failures),
                len(unique),
                db.path,
                first.strip().splitlines()[-1] if first.strip() else "?",
            )
        return db.results(configs)
    finally:
        if own_store:
            db.close()
