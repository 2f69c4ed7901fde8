"""ClaimResults for the report's tests: the shape of real experiment output, with test data.

The numbers are generated here (seeded), not measured; the figures are real matplotlib figures
drawn by FigureSpec.draw functions, as the experiments will draw theirs.
"""

from __future__ import annotations

import math
import random

from matplotlib.figure import Figure

from bnlab.experiments import ClaimResult, FigureSpec, estimate

ALL_IDS = tuple(f"C{i}" for i in range(1, 13))
VERDICT_CYCLE = ("reproduced", "not reproduced", "inconclusive")


def draw_curves(data):
    """Lines with optional shaded bands: data = {"x": [...], "series": {label: {"y", "lo", "hi"}}}."""
    fig = Figure(figsize=(6.4, 3.4), layout="constrained")
    ax = fig.add_subplot()
    for label, s in data["series"].items():
        (line,) = ax.plot(data["x"], s["y"], label=label)
        if "lo" in s:
            ax.fill_between(data["x"], s["lo"], s["hi"], alpha=0.2, color=line.get_color())
    ax.set_xscale(data.get("xscale", "linear"))
    ax.set_xlabel(data["xlabel"])
    ax.set_ylabel(data["ylabel"])
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return fig


def draw_paired(data):
    """Per-seed paired differences with their mean: data = {"diffs": [...], "label": str}."""
    fig = Figure(figsize=(6.4, 2.6), layout="constrained")
    ax = fig.add_subplot()
    diffs = data["diffs"]
    ax.axvline(0, color="0.6", lw=1)
    ax.plot(diffs, [0] * len(diffs), "o", alpha=0.6)
    ax.plot([sum(diffs) / len(diffs)], [0], "D", color="black", label="mean")
    ax.set_yticks([])
    ax.set_xlabel(data["label"])
    ax.legend(frameon=False)
    return fig


def _curves(rng, name, xlabel, ylabel, labels, xscale="linear", n=30):
    x = [10 ** (-3 + 3.5 * i / (n - 1)) if xscale == "log" else i * 100 for i in range(n)]
    series = {}
    for k, label in enumerate(labels):
        y = [1 - math.exp(-(i + 1) / (6 + 6 * k)) + rng.gauss(0, 0.01) for i in range(n)]
        series[label] = {"y": y, "lo": [v - 0.04 for v in y], "hi": [v + 0.04 for v in y]}
    return FigureSpec(name, f"{ylabel} vs {xlabel}", {"x": x, "series": series, "xlabel": xlabel,
                                                      "ylabel": ylabel, "xscale": xscale},
                      draw_curves, caption=f"Mean over 3 seeds; bands: 95% CI ({name}).")


def make_result(claim_id: str, verdict: str | None = None, *, figures: bool = True, seed: int = 0) -> ClaimResult:
    rng = random.Random(f"{claim_id}-{seed}")
    index = int(claim_id[1:]) if claim_id[1:].isdigit() else 0
    verdict = verdict or VERDICT_CYCLE[index % 3]
    figs = []
    if figures and claim_id == "C1":
        figs = [_curves(rng, "accuracy_vs_steps", "steps", "test accuracy", ["BN", "no BN"]),
                _curves(rng, "sigmoid_input_percentiles", "steps", "sigmoid input", ["15th", "50th", "85th"])]
    elif figures and claim_id in ("C3", "C8", "C11"):
        figs = [_curves(rng, "sweep", "learning rate" if claim_id == "C3" else "batch size", "accuracy",
                        ["BN", "GN", "none"], xscale="log")]
    elif figures and claim_id == "C4":
        figs = [FigureSpec("paired_differences", "before minus after, per seed",
                           {"diffs": [rng.gauss(0.2, 0.6) for _ in range(10)], "label": "accuracy points"},
                           draw_paired, caption="One dot per seed; the diamond is the mean.")]
    seeds = [0, 1, 2]
    rows = [{"seed": s, "norm": norm, "lr": 0.1, "final_acc": round(rng.uniform(0.6, 0.95), 4),
             "diverged": False} for s in seeds for norm in ("bn", "none")]
    acc = [r["final_acc"] for r in rows if r["norm"] == "bn"]
    mean = sum(acc) / len(acc)
    return ClaimResult(
        id=claim_id, name=f"claim-{claim_id.lower()}-test",
        question=f"Test question for {claim_id}?",
        claim=f"The published statement of {claim_id}.",
        source=f"Author et al. 20{10 + index}",
        rule="reproduced if the BN mean beats the baseline's upper CI bound",
        verdict=verdict,
        summary=f"{claim_id} summary: the test verdict is {verdict}.",
        setup={"data": "mnist1d", "seeds": seeds, "quick": True},
        numbers={"final accuracy, BN": estimate(mean, (mean - 0.02, mean + 0.02), n=len(acc)),
                 "p-value (paired t)": 0.0123, "steps": 2000},
        figures=figs, rows=rows, wall_time_s=1.5 + index,
    )


def all_results(**kw) -> list[ClaimResult]:
    return [make_result(cid, **kw) for cid in ALL_IDS]
