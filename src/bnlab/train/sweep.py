"""Run many configs into one store, on several worker processes, skipping what is done.

::

    from bnlab.train import RunConfig
    from bnlab.train.sweep import run_sweep

    configs = [RunConfig(norm=n, lr=lr, seed=s) for n in ("none", "bn") for lr in (0.01, 0.1) for s in range(3)]
    results = run_sweep(configs, store="results.db", jobs=2, progress=print)
    # results[i] is configs[i]'s RunResult (read back from the store)

* A config already finished or diverged in the store is not run again; re-running a sweep after a
  crash or a kill runs only what is missing (the runs in flight at the kill).
* ``jobs > 1`` starts that many worker processes (spawned: a script that calls run_sweep needs the
  ``if __name__ == "__main__":`` guard), each with ``threads`` torch threads (default 1, so two
  workers use two cores, and a run gives bit-identical metrics whatever ``jobs`` is: torch's CPU
  kernels may sum in a different order with a different thread count). Workers write their
  results to the store themselves, so a kill of the sweep loses only the runs in flight.
* ``progress(p)`` is called after every run with a :class:`SweepProgress` (runs done / total,
  elapsed, ETA, the last result's summary).
* A config that another live process has claimed (two sweeps over one store) is not run twice:
  run_sweep waits for it at the end, and runs it itself if that process dies.
* A run that raises is recorded as "failed" with its traceback and the others go on; at the end
  run_sweep raises :class:`SweepError` naming the failures (``on_error="skip"`` returns None for
  them instead).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import os
import time
import traceback
from typing import Callable, Sequence

import torch

from .config import RunConfig
from .result import RunResult
from .store import Store


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
        return (f"{self.done}/{self.total} runs ({self.skipped} already done, {self.failed} failed), "
                f"{self.elapsed_s:.0f}s elapsed, ETA {eta}")


class SweepError(RuntimeError):
    pass


def _init_worker(threads: int, setup: Callable[[], None] | None) -> None:
    torch.set_num_threads(threads)
    if setup is not None:
        setup()


def _claim_train_store(config: RunConfig, store: Store, **train_kw) -> tuple[str, str, dict | None]:
    """Claim, train and store one config; returns (key, outcome, summary), outcome "busy" when
    another process holds the claim and "failed" (traceback stored) when training raised."""
    from .trainer import train

    if not store.claim(config):
        return config.key(), "busy", None
    try:
        result = train(config, **train_kw)
    except Exception:
        store.fail(config, traceback.format_exc())
        return config.key(), "failed", None
    store.save(result)
    return config.key(), result.status, result.summary()


def _run_one(config: RunConfig, store_path: str, device: str) -> tuple[str, str, dict | None]:
    """One config in a worker process (its store connection is opened once per worker)."""
    return _claim_train_store(config, _worker_store(store_path), device=device, progress=False)


_STORES: dict[str, Store] = {}


def _worker_store(path: str) -> Store:
    if path not in _STORES:
        _STORES[path] = Store(path)
    return _STORES[path]


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
) -> list[RunResult | None]:
    """Run every config not yet done in ``store``; return each config's result, in order.

    Args:
        configs: the runs (duplicates are run once).
        store: a :class:`Store` or the path of its SQLite file.
        jobs: worker processes; 1 runs in this process.
        progress: called with a :class:`SweepProgress` after each run.
        threads: torch threads per run, in workers and in this process alike (restored after). Default: 1
        device: the device every run uses.
        on_error: "raise" (default) raises :class:`SweepError` at the end if runs failed; "skip"
            returns None for them.
        worker_setup: a module-level function each worker process calls first, e.g. one that
            registers an experiment's probes or norms (spawned workers start from a fresh import).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"expected on_error 'raise' or 'skip' (got {on_error!r})")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"expected jobs >= 1 (got {jobs!r})")
    own_store = not isinstance(store, Store)
    db = Store(store) if own_store else store
    try:
        unique = list({c.key(): c for c in configs}.values())
        done_keys = db.done(unique)
        todo = [c for c in unique if c.key() not in done_keys]
        state = {"done": len(done_keys), "failed": 0, "ran": 0, "busy": set()}
        failures: list[str] = []
        t0 = time.perf_counter()

        def report(key: str, outcome: str, summary: dict | None) -> None:
            if outcome == "failed":
                state["failed"] += 1
                failures.append(key)
            elif outcome == "busy":
                state["busy"].add(key)
            else:
                state["ran"] += 1
            state["done"] += 1
            if progress is not None:
                elapsed = time.perf_counter() - t0
                finished_here = state["ran"] + state["failed"]
                left = len(unique) - state["done"]
                eta = elapsed / finished_here * left if finished_here else float("nan")
                last = None if summary is None else {"key": key, **summary}
                progress(SweepProgress(state["done"], len(unique), len(done_keys), state["failed"], elapsed, eta, last))

        if jobs == 1 or len(todo) <= 1:
            for c in todo:
                report(*_run_in_process(c, db, device, threads))
        else:
            ctx = multiprocessing.get_context("spawn")
            path = os.path.abspath(db.path)
            with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                        initargs=(threads, worker_setup)) as pool:
                futures = [pool.submit(_run_one, c, path, device) for c in todo]
                for fut in cf.as_completed(futures):
                    report(*fut.result())
        busy = [c for c in todo if c.key() in state["busy"]]
        while busy:  # runs another process had claimed: wait for them, or take them over if it died
            time.sleep(0.5)
            still = []
            for c in busy:
                if db.status(c) in ("finished", "diverged"):
                    continue
                key, outcome, _ = _run_in_process(c, db, device, threads)
                if outcome == "busy":
                    still.append(c)
                elif outcome == "failed":
                    state["failed"] += 1
                    failures.append(key)
            busy = still
        if failures and on_error == "raise":
            first = db.info(failures[0]) or {}
            raise SweepError(f"{len(failures)} of {len(unique)} runs failed; the first ({failures[0]}):\n"
                             f"{first.get('error')}")
        return db.results(configs)
    finally:
        if own_store:
            db.close()


def _run_in_process(config: RunConfig, store: Store, device: str, threads: int) -> tuple[str, str, dict | None]:
    return _claim_train_store(config, store, device=device, threads=threads)
