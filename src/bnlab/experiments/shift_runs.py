"""The runs C13 and C14 share, and how to read them.

One source model per seed: MNIST-1D's CNN with BN (conv-BN-ReLU x3, linear head), Adam lr 1e-2,
batch 100 (the MNIST-1D reference optimizer), trained on the clean training set. After training,
the ``shift_eval`` probe (:mod:`bnlab.experiments.probes.shift_eval`) measures its error on the
clean test set and on every shifted test set of ``mnist1d-c`` (six corruptions x five severities,
:mod:`bnlab.data.shifted`) without adaptation and with test-batch statistics, AdaBN and TENT, plus
the small-batch measurements. C13 and C14 declare the same sweep, so the store runs it once and
both read it. Errors are reported in percent, as in TENT's table.
"""

from __future__ import annotations

import dataclasses
import math

from ..data import shifted
from ..train.config import RunConfig
from . import stats, text
from .plotting import legend_below, percent_axis
from .result import Label

DATA = "mnist1d"
BASE = RunConfig(data=DATA, model="cnn", norm="bn", optimizer="adam", lr=1e-2, batch_size=100, eval_samples=1000)
FULL = {"steps": 1000, "seeds": 8, "severities": shifted.SEVERITIES, "small": True}
QUICK = {"steps": 100, "seeds": 2, "severities": (5,), "small": False}
TOP = 5  # the verdicts read the highest severity, as TENT's table does

CORRUPTIONS = tuple(shifted.CORRUPTIONS[DATA])
CORRUPTION_LABELS = {c: spec.label for c, spec in shifted.CORRUPTIONS[DATA].items()}
METHODS = {  # probe key -> what a reader sees
    "source": "no adaptation",
    "test_batch": "test-batch statistics",
    "adabn": "AdaBN",
    "tent": "TENT",
    "tent_lr_paper": "TENT at the paper's lr",
}
MAIN_METHODS = ("source", "test_batch", "adabn", "tent")


def plan(quick: bool) -> dict:
    return QUICK if quick else FULL


def sweep(quick: bool, seeds: int | None) -> list[RunConfig]:
    p = plan(quick)
    spec = f"shift_eval:{DATA}:{','.join(str(s) for s in p['severities'])}" + ("" if p["small"] else ":main")
    base = dataclasses.replace(BASE, steps=p["steps"], eval_every=p["steps"], probes=(spec,))
    return [dataclasses.replace(base, seed=s) for s in range(seeds or p["seeds"])]


def metric(run, corruption: str, severity: int, key: str) -> float:
    """One stored measurement in percent (NaN when absent)."""
    value = run.final_metrics.get(f"shift/{corruption}/{severity}/{key}")
    return math.nan if value is None else 100.0 * value


def usable(runs: list, quick: bool) -> tuple[list, list[int]]:
    """(runs with every main measurement, seeds of the failed, diverged or incomplete ones)."""
    severities = plan(quick)["severities"]
    good, bad = [], []
    for r in runs:
        if r is None:
            continue
        needed = [("clean", 0)] + [(c, s) for c in CORRUPTIONS for s in severities]
        if r.diverged or any(math.isnan(metric(r, c, s, m)) for c, s in needed for m in MAIN_METHODS):
            bad.append(r.config.seed)
        else:
            good.append(r)
    return good, bad


def records(runs: list, configs: list, quick: bool, measure) -> dict[int, object]:
    """{seed: measure(run)} for the usable runs, None for the others (failed, diverged, incomplete)."""
    good = {id(r) for r in usable(runs, quick)[0]}
    return {
        c.seed: (measure(r) if r is not None and id(r) in good else None)
        for c, r in sorted(zip(configs, runs), key=lambda cr: cr[0].seed)
    }


def values(runs: list, key: str, severity: int, corruption: str | None = None) -> list[float]:
    """Per seed: the error (%) of ``key`` on one corruption, or the mean over all corruptions."""
    names = CORRUPTIONS if corruption is None else (corruption,)
    return [sum(metric(r, c, severity, key) for c in names) / len(names) for r in runs]


def recovered(runs: list, key: str, severity: int = TOP, corruption: str | None = None) -> list[float]:
    """Per seed: the share (%) of the error added by the shift that ``key`` takes back:
    (source − adapted) / (source − clean source), on one corruption or the mean over all."""
    out = []
    for r in runs:
        src, new = values([r], "source", severity, corruption)[0], values([r], key, severity, corruption)[0]
        lost = src - metric(r, "clean", 0, "source")
        out.append(100.0 * (src - new) / lost if lost > 0 else math.nan)
    return [v for v in out if not math.isnan(v)]


def est(v: list[float]) -> dict:
    return stats.estimate([x for x in v if not math.isnan(x)]).to_json()


def signed(e: stats.Estimate, digits: int = 1) -> str:
    """A difference of percentages as '+0.2 points [−0.0, +0.3]', the report's one notation."""
    return text.interval(e, "pct points")


def labels(numbers: dict) -> dict[str, Label]:
    """C13's and C14's numbers are keyed by what a reader sees, their unit last: the labels follow."""
    out = {}
    for key in numbers:
        unit = "pct" if key.endswith("(%)") else "pct points" if key.endswith("(points)") else "count"
        text_ = key.removesuffix(" (%)").removesuffix(" (points)")
        detail = key.startswith(("Small batches", "Error at severity", "Mean error by severity", "Failed"))
        if "Share" in key:
            unit = "share"
        out[key] = Label(text_, unit, detail)
    return out


def estimate_of(d: dict) -> stats.Estimate:
    """An Estimate back from its report form ``{"mean", "ci95", "n"}`` (for a sentence)."""
    if "ci95" not in d:
        return stats.Estimate(d.get("mean", math.nan), math.nan, d.get("n", 0), math.nan)
    lo, hi = d["ci95"]
    return stats.Estimate(d["mean"], (hi - lo) / 2, d.get("n", 2), math.nan)


def severity_table(runs: list, severities) -> dict:
    """{"severity s": {method label: estimate}} of the mean error over corruptions."""
    return {f"severity {s}": {METHODS[m]: est(values(runs, m, s)) for m in MAIN_METHODS} for s in severities}


def corruption_table(runs: list, severity: int = TOP) -> dict:
    """{corruption label: {method label: estimate}} at one severity, as in TENT's table."""
    return {
        CORRUPTION_LABELS[c]: {METHODS[m]: est(values(runs, m, severity, c)) for m in MAIN_METHODS} for c in CORRUPTIONS
    }


def rows(runs: list, severities) -> list[dict]:
    """One CSV row per seed, corruption and severity: every method's error in percent."""
    out = []
    for r in runs:
        sets = [("clean", 0)] + [(c, s) for c in CORRUPTIONS for s in severities]
        for c, s in sets:
            row = {"seed": r.config.seed, "corruption": CORRUPTION_LABELS.get(c, c), "severity": s}
            row.update({f"{label} error (%)": metric(r, c, s, m) for m, label in METHODS.items()})
            out.append(row)
    return out


def markdown_table(runs: list, severities) -> str:
    """The full error table (corruption x severity, one column per method), "m [lo, hi]" in %."""
    head = "| corruption | severity | " + " | ".join(METHODS[m] for m in METHODS) + " |"
    lines = [head, "|" + " --- |" * (2 + len(METHODS))]
    sets = [("clean", 0)] + [(c, s) for c in CORRUPTIONS for s in severities]
    for c, s in sets:
        cells = [text.interval(stats.estimate(values(runs, m, s, c)), "pct") for m in METHODS]
        lines.append(f"| {CORRUPTION_LABELS.get(c, c)} | {s or '-'} | " + " | ".join(cells) + " |")
    for s in severities:
        cells = [text.interval(stats.estimate(values(runs, m, s)), "pct") for m in METHODS]
        lines.append(f"| mean of {len(CORRUPTIONS)} | {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def draw_by_corruption(data: dict):
    """Bars: error at the top severity per corruption and method (TENT's table as a figure)."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 3.4))
    groups = list(data["table"])
    methods = list(next(iter(data["table"].values())))
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        means = [data["table"][g][method].get("mean", np.nan) for g in groups]
        # intervals clipped to what an error can be: 0-100%
        lo = [m - max(0.0, data["table"][g][method].get("ci95", [m, m])[0]) for g, m in zip(groups, means)]
        hi = [min(100.0, data["table"][g][method].get("ci95", [m, m])[1]) - m for g, m in zip(groups, means)]
        ax.bar(
            np.arange(len(groups)) + (j - (len(methods) - 1) / 2) * width,
            means,
            width,
            yerr=[lo, hi],
            capsize=2,
            label=method,
            color=f"C{j}",
        )
    ax.axhline(data["clean"], color="k", ls="--", lw=1, label="clean data, no adaptation")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(f"test error at severity {data['severity']}")
    percent_axis(ax, limits=None)
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    legend_below(fig, ncol=3)
    return fig
