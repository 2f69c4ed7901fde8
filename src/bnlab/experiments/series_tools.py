"""Small readers of stored runs' metric series, shared by the training experiments.

A run's ``series`` holds aligned lists, one entry per metric step (see
:class:`bnlab.train.result.RunResult`). These helpers turn them into the per-seed numbers the
verdicts use (final values, steps to a threshold) and into mean bands over seeds for the figures;
:mod:`.text` writes them in sentences.
Runs are grouped by a key function of their config; ``None`` runs (failed) are skipped by the
callers and reported by them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np


def steps_to(run, metric: str, threshold: float) -> float:
    """The first metric step at which ``metric`` >= ``threshold``; ``inf`` if it never gets there.

    A diverged run that never reached the threshold also gives ``inf``.
    """
    steps, values = run.series.get("step", []), run.series.get(metric, [])
    for s, v in zip(steps, values):
        if not math.isnan(v) and v >= threshold:
            return float(s)
    return math.inf


def censored(values: Iterable[float], cap: float) -> list[float]:
    """``values`` with ``inf`` (never reached) replaced by ``cap`` -- a lower bound on the truth."""
    return [min(float(v), float(cap)) for v in values]


def final(run, metric: str) -> float:
    """The last finite value of ``metric`` (NaN if there is none, e.g. a run that diverged at once)."""
    for v in reversed(run.series.get(metric, [])):
        if not math.isnan(v):
            return float(v)
    return math.nan


def finished_acc(run) -> float:
    """A run's final test accuracy; NaN for a failed (None) or diverged run, which has none."""
    if run is None or run.diverged or not run.series.get("test_acc"):
        return math.nan
    return run.final("test_acc")


def group(runs: Sequence, configs: Sequence, key: Callable) -> dict:
    """{key(config): [(seed, run or None), ...]} in sweep order."""
    out: dict = {}
    for c, r in zip(configs, runs):
        out.setdefault(key(c), []).append((c.seed, r))
    return out


def mean_band(runs: Sequence, metric: str) -> dict[str, list[float]]:
    """Mean and min/max over ``runs`` of ``metric`` at the metric steps they share (for figures)."""
    runs = [r for r in runs if r is not None and r.series.get(metric)]
    if not runs:
        return {"step": [], "mean": [], "low": [], "high": []}
    n = min(len(r.series[metric]) for r in runs)
    values = np.array([r.series[metric][:n] for r in runs], dtype=float)  # (runs, steps)
    with np.errstate(all="ignore"):
        mean = np.nanmean(values, axis=0)
        low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    return {
        "step": [float(s) for s in runs[0].series["step"][:n]],
        "mean": mean.tolist(),
        "low": low.tolist(),
        "high": high.tolist(),
    }


def by_seed(configs: Sequence, runs: Sequence, setting: Callable, measure: Callable) -> dict:
    """{seed: {setting(config): measure(run)}} in seed order: everything one seed measured, the unit a
    verdict rule reads and :mod:`.stability` resamples. ``measure`` gets None for a failed run."""
    out: dict = {}
    for c, r in zip(configs, runs):
        out.setdefault(c.seed, {})[setting(c)] = measure(r)
    return dict(sorted(out.items()))
