"""Constructed RunResults for the C6 / C7 / C12 analysis tests: series with known values."""

from __future__ import annotations

import math

from bnlab.train.result import RunResult


def fake_run(config, metrics: dict[str, list[float]], test_acc: float = 0.9) -> RunResult:
    """A finished run of ``config`` whose metric steps carry ``metrics`` (all lists the same length)."""
    n = len(next(iter(metrics.values()))) if metrics else 1
    step = [float(config.eval_every * (i + 1)) for i in range(n)]
    series = {"step": step, "lr": [config.lr] * n, "train_loss": [1.0] * n, "train_acc": [test_acc] * n,
              "test_acc": [test_acc] * n, "test_loss": [0.5] * n, **metrics}
    assert all(len(v) == n for v in series.values()) and not any(math.isnan(x) for x in step)
    return RunResult(config=config, status="finished", series=series, steps_done=config.steps)
