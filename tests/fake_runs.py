"""Constructed RunResults for testing the experiments' analyses without training."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

from bnlab.train.result import RunResult


def fake_run(config, acc_curve, loss_curve=None, diverged_at: int | None = None, extra=None) -> RunResult:
    """A run of ``config`` whose test accuracy at its metric steps is ``acc_curve(step)``.

    Other series: train/eval losses from ``loss_curve(step)`` (default 1 - acc), and ``extra``
    ({metric: f(step)}). With ``diverged_at`` the run stops there with a non-finite last loss.
    """
    loss_curve = loss_curve or (lambda s: 1.0 - acc_curve(s))
    steps = list(range(config.eval_every, config.steps + 1, config.eval_every))
    if steps[-1] != config.steps:
        steps.append(config.steps)
    if diverged_at is not None:
        steps = [s for s in steps if s < diverged_at] + [diverged_at]
    series = {
        "step": [float(s) for s in steps],
        "train_loss": [loss_curve(s) for s in steps],
        "train_eval_loss": [loss_curve(s) for s in steps],
        "test_acc": [acc_curve(s) for s in steps],
    }
    for name, f in (extra or {}).items():
        series[name] = [f(s) for s in steps]
    if diverged_at is not None:
        for name in ("test_acc", "train_eval_loss"):
            series[name][-1] = math.nan
        series["train_loss"][-1] = math.inf
    return RunResult(
        config=config,
        status="diverged" if diverged_at is not None else "finished",
        series=series,
        steps_done=diverged_at or config.steps,
        diverged_step=diverged_at,
    )


def check_well_formed(result) -> None:
    """A ClaimResult the report can use: JSON-serialisable, figures that draw, rows for the CSV."""
    import json

    import matplotlib.pyplot as plt

    from bnlab.experiments.result import VERDICTS

    # the rule's verdict, its stability, and what the report says: the verdict only when stable
    assert result.rule_verdict in VERDICTS and result.stability is not None
    assert result.verdict == (result.rule_verdict if result.stability.stable else "underpowered")
    for part in result.parts:  # each part judged the same way as the claim
        assert part.rule_verdict in VERDICTS and part.stability.verdict == part.rule_verdict
        assert part.verdict == (part.rule_verdict if part.stability.stable else "underpowered")
    json.dumps(result.to_json(), allow_nan=False)
    assert result.rows and result.figures and result.summary
    assert "seeds" in result.setup and "quick" in result.setup
    # what a reader sees: a title, one sentence of what was found, plain words for every number
    assert result.title and result.finding and result.finding.endswith(".")
    unlabelled = set(result.numbers) - set(result.labels)
    assert not unlabelled, f"numbers without a label: {sorted(unlabelled)}"
    for fig in result.figures:
        f = fig.draw(fig.data)
        assert f.axes
        plt.close(f)


def run_with_series(config, metrics: dict[str, list[float]], test_acc: float = 0.9) -> RunResult:
    """A finished run of ``config`` whose metric steps carry ``metrics`` (all lists the same length)."""
    n = len(next(iter(metrics.values()))) if metrics else 1
    step = [float(config.eval_every * (i + 1)) for i in range(n)]
    series = {
        "step": step,
        "lr": [config.lr] * n,
        "train_loss": [1.0] * n,
        "train_acc": [test_acc] * n,
        "test_acc": [test_acc] * n,
        "test_loss": [0.5] * n,
        **metrics,
    }
    assert all(len(v) == n for v in series.values()) and not any(math.isnan(x) for x in step)
    return RunResult(config=config, status="finished", series=series, steps_done=config.steps)
