"""ClaimResults for the report's tests.

* :func:`lab_results` -- what the page shows in real use: every registered experiment's own
  ``analyze`` (C2's ``run``) over synthetic runs of its quick sweep, so titles, findings, labels,
  numbers and figures are the experiments' real ones. The runs' metric values are generated here
  (seeded), not measured.
* :func:`make_result` -- a small generic result for the renderer's mechanics (escaping, missing
  claims, broken figures).
"""

from __future__ import annotations

import math
import random

from matplotlib.figure import Figure

from bnlab.experiments import ClaimResult, FigureSpec, estimate, registry
from bnlab.train.result import RunResult

# Every metric an analysis reads, with a plausible value at training progress t in (0, 1].
_SIGMOID_PCT = {
    f"{probe}/blocks.2.act:{u}/p{q}": (lambda t, r, q=q: (q - 50) / 30 + r.gauss(0, 0.1))
    for probe in ("act_pct", "act_pct_fixed")
    for u in range(8)
    for q in (15, 50, 85)
}
_METRICS = {
    "test_acc": lambda t, r: min(0.99, 0.3 + 0.6 * t + r.gauss(0, 0.02)),
    "train_acc": lambda t, r: min(0.99, 0.3 + 0.65 * t + r.gauss(0, 0.02)),
    "train_loss": lambda t, r: 2.0 * (1.1 - t) + abs(r.gauss(0, 0.05)),
    "train_eval_loss": lambda t, r: 2.0 * (1.1 - t) + abs(r.gauss(0, 0.05)),
    **_SIGMOID_PCT,
    **{
        f"ics/{layer}/{m}": (lambda t, r, m=m: (0.97 + 0.02 * r.random()) if m == "cos" else 0.05 + 0.1 * r.random())
        for layer in ("blocks.1.op", "blocks.2.op", "head")
        for m in ("l2", "cos", "rel")
    },
    **{
        f"landscape/{k}": (lambda t, r: 0.1 + r.random())
        for k in ("loss_range", "grad_diff_max", "grad_diff_min", "beta", "loss_min", "loss_max")
    },
    "precise/ema_test_acc": lambda t, r: 0.85 + r.gauss(0, 0.02),
    **{f"precise/test_acc/{n}": (lambda t, r: 0.86 + r.gauss(0, 0.02)) for n in (100, 300, 1000, 3000, 4000)},
}


def synthetic_run(config, seed: int) -> RunResult:
    """A finished run of ``config`` with every metric of _METRICS at each of its metric steps."""
    r = random.Random(f"{config.key()}-{seed}")
    every = config.eval_every or config.steps
    steps = list(range(every, config.steps + 1, every)) or [config.steps]
    series = {"step": [float(s) for s in steps]}
    for name, f in _METRICS.items():
        series[name] = [float(f(s / config.steps, r)) for s in steps]
    return RunResult(
        config=config,
        status="finished",
        series=series,
        steps_done=config.steps,
        trainable_params=150 if config.trainable in ("norm", "random") else 0,
        final_metrics=_shift_metrics(config, r),
    )


def _shift_metrics(config, r) -> dict[str, float]:
    """The shift_eval probe's errors (fractions) for C13/C14's runs: clean, then every corruption and
    severity of the probe spec, for every method."""
    spec = next((p for p in config.probes if p.startswith("shift_eval:")), None)
    if spec is None:
        return {}
    from bnlab.experiments import shift_runs

    severities = [int(s) for s in spec.split(":")[2].split(",")]
    base = {"source": 0.35, "test_batch": 0.2, "adabn": 0.18, "tent": 0.17, "tent_lr_paper": 0.19}
    out = {f"shift/clean/0/{m}": 0.08 + r.uniform(0, 0.02) for m in base}
    for c in shift_runs.CORRUPTIONS:
        for s in severities:
            out.update({f"shift/{c}/{s}/{m}": v * s / 5 + r.uniform(0, 0.05) for m, v in base.items()})
    return out


def lab_results(quick: bool = True) -> list[ClaimResult]:
    """Every experiment's result as its own analysis computes it, over synthetic runs (see module)."""
    out = []
    for claim_id in registry.ids():
        module = registry.get(claim_id)
        ctx = registry.Context(quick=quick)
        if hasattr(module, "sweep"):
            configs = module.sweep(quick, None)
            out.append(module.analyze([synthetic_run(c, i) for i, c in enumerate(configs)], ctx))
        else:
            out.append(module.run(ctx))
    return out


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
    return FigureSpec(
        name,
        f"{ylabel} vs {xlabel}",
        {"x": x, "series": series, "xlabel": xlabel, "ylabel": ylabel, "xscale": xscale},
        draw_curves,
        caption=f"Mean over 3 seeds; bands: 95% CI ({name}).",
    )


def make_result(claim_id: str, verdict: str | None = None, *, figures: bool = True, seed: int = 0) -> ClaimResult:
    rng = random.Random(f"{claim_id}-{seed}")
    index = int(claim_id[1:]) if claim_id[1:].isdigit() else 0
    verdict = verdict or VERDICT_CYCLE[index % 3]
    figs = []
    if figures and claim_id == "C1":
        figs = [
            _curves(rng, "accuracy_vs_steps", "steps", "test accuracy", ["BN", "no BN"]),
            _curves(rng, "sigmoid_input_percentiles", "steps", "sigmoid input", ["15th", "50th", "85th"]),
        ]
    elif figures and claim_id in ("C3", "C8", "C11"):
        figs = [
            _curves(
                rng,
                "sweep",
                "learning rate" if claim_id == "C3" else "batch size",
                "accuracy",
                ["BN", "GN", "none"],
                xscale="log",
            )
        ]
    elif figures and claim_id == "C4":
        figs = [
            FigureSpec(
                "paired_differences",
                "before minus after, per seed",
                {"diffs": [rng.gauss(0.2, 0.6) for _ in range(10)], "label": "accuracy points"},
                draw_paired,
                caption="One dot per seed; the diamond is the mean.",
            )
        ]
    seeds = [0, 1, 2]
    rows = [
        {"seed": s, "norm": norm, "lr": 0.1, "final_acc": round(rng.uniform(0.6, 0.95), 4), "diverged": False}
        for s in seeds
        for norm in ("bn", "none")
    ]
    acc = [r["final_acc"] for r in rows if r["norm"] == "bn"]
    mean = sum(acc) / len(acc)
    return ClaimResult(
        id=claim_id,
        name=f"claim-{claim_id.lower()}-test",
        question=f"Test question for {claim_id}?",
        claim=f"The published statement of {claim_id}.",
        source=f"Author et al. 20{10 + index}",
        rule="reproduced if the BN mean beats the baseline's upper CI bound",
        verdict=verdict,
        summary=f"{claim_id} summary: the test verdict is {verdict}.",
        setup={"data": "mnist1d", "seeds": seeds, "quick": True},
        numbers={
            "final accuracy, BN": estimate(mean, (mean - 0.02, mean + 0.02), n=len(acc)),
            "p-value (paired t)": 0.0123,
            "steps": 2000,
        },
        figures=figs,
        rows=rows,
        wall_time_s=1.5 + index,
    )


def all_results(**kw) -> list[ClaimResult]:
    return [make_result(cid, **kw) for cid in ALL_IDS]
