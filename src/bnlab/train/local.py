"""One unit of a sweep trained in this process: what a sweep's own process and a Dask worker both run
(:mod:`bnlab.train.sweep`, :mod:`bnlab.train.cluster`)."""

from __future__ import annotations

import traceback

from .config import RunConfig
from .result import RunResult


def train_here(
    configs: list[RunConfig], device: str, threads: int, group_seeds: bool = True
) -> list[tuple[str, RunResult | str]]:
    """Train one unit of :func:`~bnlab.train.sweep.plan_groups` in this process: ``(status, result)`` or ``("failed",
    traceback)`` per config. A group that raises is retried one seed at a time, so that a failing
    run does not take the others with it (a seed's result is the same in any group)."""
    if not group_seeds:
        return [_train_one(c, device, threads) for c in configs]
    from .seeds import train_group

    try:
        results = train_group(configs, device=device, threads=threads, progress=False)
    except Exception:  # noqa: BLE001 -- a failed group is retried seed by seed; a failed seed is a result
        if len(configs) == 1:
            return [("failed", traceback.format_exc())]
        return [out for c in configs for out in train_here([c], device, threads)]
    return [(r.status, r) for r in results]


def _train_one(config: RunConfig, device: str, threads: int) -> tuple[str, RunResult | str]:
    """The single-seed trainer on one config."""
    from .trainer import train

    try:
        result = train(config, device=device, threads=threads, progress=False)
    except Exception:  # noqa: BLE001 -- a failed run is a result (its traceback stored), not the sweep's end
        return "failed", traceback.format_exc()
    return result.status, result
