"""C6: does BN reduce internal covariate shift, measured on the gradients?

Santurkar, Tsipras, Ilyas & Madry 2018 ("How Does Batch Normalization Help Optimization?", NeurIPS,
§2.2 and Fig. 5, https://arxiv.org/abs/1805.11604) define the ICS of layer i at step t as
||G - G'||_2 (and cos(G, G')), G being layer i's weight gradient and G' the same gradient after the
layers 1..i-1 have taken their step-t update; for VGG and a deep linear network they find it similar
or LARGER with BN -- BN does not reduce ICS in this sense.

Small analogue: MNIST-1D's CNN with and without BN (conv[-BN]-ReLU x3, linear head), SGD with
momentum at the same learning rate, the ``ics`` probe (:mod:`.probes.ics`) at every metric step on
the three weight layers after the first (``blocks.1.op``, ``blocks.2.op``, ``head``). The update of
the earlier layers is the optimizer's actual step (momentum included), as in the paper. Seeds pair
the two settings (same data order; same conv/linear initialisation).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ..train.config import RunConfig
from . import series_tools as st
from . import spec, stability, stats, text
from .plotting import log_ticks
from .result import ClaimResult, FigureSpec, Label

ID = "C6"
NAME = "ics-on-gradients"
TITLE = "Measured on the gradients, internal covariate shift is as large or larger with BN"
QUESTION = "Does BN reduce internal covariate shift, measured as the change of a layer's gradient?"
CLAIM = (
    "Measured on gradients -- ||G - G'|| and cos(G, G') when the earlier layers take their update -- "
    "internal covariate shift is similar or even larger with BN (VGG on CIFAR-10, deep linear nets)."
)
SOURCE = "Santurkar et al. 2018, How Does Batch Normalization Help Optimization?, §2.2, Fig. 5 (arXiv:1805.11604)"

# ---- the sweep -----------------------------------------------------------------------------------
NORMS = ("none", "bn")
LAYERS = ("blocks.1.op", "blocks.2.op", "head")  # every weight layer but the first (it has no earlier layer)
# lr 0.02: a rate at which the baseline (no BN) trains stably; in a 300-step pilot at 0.05 one of two
# no-BN seeds stalled, which would measure an unstable baseline rather than covariate shift.
BASE = RunConfig(
    data="mnist1d",
    model="cnn",
    optimizer="sgd",
    lr=0.02,
    momentum=0.9,
    batch_size=100,
    eval_samples=1000,
    probes=("ics",),
)
# 15 ICS measurements per run; 5 seeds: the first 5 of 8 stored seeds give the same verdict, stable in 100%
# of resamples (1000 steps with 5 seeds: 85%, so the steps stay).
FULL = dict(steps=1500, eval_every=100, seeds=5)
QUICK = dict(steps=200, eval_every=100, seeds=2)  # 2 metric steps: exercises every code path

# ---- the verdict rule (stated before the runs) ---------------------------------------------------
MEASURES = ("l2", "cos")  # the paper's two: raw ||G - G'|| and the cosine (as 1 - cos, an ICS: lower = less shift)
ALPHA = 0.05  # paired t-test by seed on log(BN / no-BN), Holm-adjusted over layers x measures
REDUCTION = 0.5  # a ratio BN/no-BN of 0.5 (BN halves ICS) is the smallest reduction we must be able to exclude
RULE = (
    f"Per seed and layer ({', '.join(LAYERS)}): the mean over training's metric steps of ||G - G'|| and of "
    f"1 - cos(G, G'), with BN and without; the paired (by seed) log ratio BN/no-BN, mean ± 95% CI, "
    f"two-sided paired t-test Holm-adjusted over the {len(LAYERS) * len(MEASURES)} layer x measure tests. "
    f"Not reproduced if BN's ICS is significantly lower on any of them (ratio < 1, adjusted p < {ALPHA}). "
    f"Inconclusive if none is, but some ratio is below 1 with a CI that cannot exclude a "
    f"{1 / REDUCTION:g}x reduction (CI lower end < {REDUCTION:g}). Reproduced otherwise: BN's ICS not "
    f"lower than the baseline's."
)


LAYER_NAMES = {"blocks.1.op": "2nd convolution", "blocks.2.op": "3rd convolution", "head": "output layer"}
MEASURE_NAMES = {"l2": "‖G − G′‖", "cos": "1 − cos(G, G′)", "rel": "‖G − G′‖ / ‖G‖"}


def _labels() -> dict[str, Label]:
    out = {}
    for layer in LAYERS:
        for m in MEASURES:
            out[f"ratio_bn_over_none/{layer}/{m}"] = Label(
                f"Gradient ICS, BN ÷ no BN: {LAYER_NAMES[layer]}, {MEASURE_NAMES[m]}", "×"
            )
    for layer in LAYERS:
        out[f"ratio_bn_over_none/{layer}/relative (not in rule)"] = Label(
            f"BN ÷ no BN: {LAYER_NAMES[layer]}, {MEASURE_NAMES['rel']} (not in the rule)", "×", detail=True
        )
    for norm in NORMS:
        out[f"head_l2_{norm}"] = Label(f"Output layer's ‖G − G′‖, {text.name(norm)}", detail=True)
        out[f"test_acc_{norm}"] = Label(f"Final test accuracy, {text.name(norm)}", "%", detail=True)
    out["significantly_lower"] = Label(
        f"Comparisons with BN significantly lower (of {len(LAYERS) * len(MEASURES)})", "count"
    )
    out["significantly_higher"] = Label(
        f"Comparisons with BN significantly higher (of {len(LAYERS) * len(MEASURES)})", "count"
    )
    out["failed_runs"] = Label("Runs that failed or diverged", detail=True)
    return out


def finding(numbers: dict, lower: int, higher: int, total: int) -> str:
    ratios = [numbers[f"ratio_bn_over_none/{layer}/{m}"]["mean"] for layer in LAYERS for m in MEASURES]
    span = f"{text.number(min(ratios), '×')} to {text.number(max(ratios), '×')}"
    if lower and not higher:
        words = "BN reduced it"
    elif higher and not lower:
        words = "BN increased it"
    elif lower and higher:
        words = "BN reduced it on some and increased it on others"
    else:
        words = "no significant difference either way"
    return (
        f"The gradient-measured shift with BN ÷ without ranged from {span} over {len(LAYERS)} layers and "
        f"{len(MEASURES)} measures ({lower} of {total} significantly lower, {higher} higher): {words}."
    )


def sweep(quick: bool, seeds: int | None) -> list[RunConfig]:
    plan = QUICK if quick else FULL
    base = dataclasses.replace(BASE, steps=plan["steps"], eval_every=plan["eval_every"])
    return [dataclasses.replace(base, norm=n, seed=s) for n in NORMS for s in range(seeds or plan["seeds"])]


def metric(layer: str, measure: str) -> str:
    return f"ics/{layer}/{measure}"


def run_ics(series: dict, layer: str, measure: str) -> float:
    """The mean over metric steps of one ICS measure (1 - cos for the cosine)."""
    v = np.asarray(series[metric(layer, measure)], dtype=float)
    v = 1.0 - v if measure == "cos" else v
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def verdict(tests: dict[str, stats.PairedTest], p_adjusted: dict[str, float]) -> str:
    """``tests[name]``: paired log(BN) - log(no-BN) of mean ICS; ``p_adjusted[name]``: its Holm p."""
    lower = [n for n, t in tests.items() if t.diff.mean < 0]
    if any(p_adjusted[n] < ALPHA for n in lower):
        return "not reproduced"
    if any(math.isnan(tests[n].diff.low) or math.exp(tests[n].diff.low) < REDUCTION for n in lower):
        return "inconclusive"
    return "reproduced"


def measure(run) -> dict | None:
    """log of each run-mean ICS measure, by (layer, measure) ("rel" too, outside the rule); None: failed
    or diverged."""
    if run is None or run.diverged:
        return None
    return {(layer, m): math.log(run_ics(run.series, layer, m)) for layer in LAYERS for m in MEASURES + ("rel",)}


def records(runs, configs) -> dict[int, dict]:
    """{seed: {norm: measure}}."""
    return st.by_seed(configs, runs, lambda c: c.norm, measure)


def compare(recs: list[dict], measures=MEASURES) -> tuple[dict, dict]:
    """Paired log(BN) − log(no BN) per layer x measure over the seeds where both finished, and the Holm ps."""
    both = [r for r in recs if r["bn"] is not None and r["none"] is not None]
    tests = {
        f"{layer}/{m}": stats.paired([r["bn"][(layer, m)] for r in both], [r["none"][(layer, m)] for r in both])
        for layer in LAYERS
        for m in measures
    }
    adjusted = dict(zip(tests, stats.holm([t.p_t if not math.isnan(t.p_t) else 1.0 for t in tests.values()])))
    return tests, adjusted


def rule(recs: list[dict]) -> str:
    """RULE on per-seed records (inconclusive with fewer than two seeds where both finished)."""
    if sum(r["bn"] is not None and r["none"] is not None for r in recs) < 2:
        return "inconclusive"
    return verdict(*compare(recs))


def analyze(runs, ctx) -> ClaimResult:
    configs = sweep(ctx.quick, ctx.seeds)
    per_run: dict[str, dict[int, dict]] = {n: {} for n in NORMS}  # norm -> seed -> series
    rows, failed = [], []
    for cfg, run in zip(configs, runs):
        row = {"norm": cfg.norm, "seed": cfg.seed}
        if run is None or run.diverged:
            failed.append(f"{cfg.norm}/seed {cfg.seed}: {'failed' if run is None else 'diverged'}")
            rows.append({**row, "status": "failed" if run is None else run.status})
            continue
        per_run[cfg.norm][cfg.seed] = run.series
        row.update({"status": run.status, "test_acc": run.final("test_acc")})
        row.update({f"mean_{m}_{la}": run_ics(run.series, la, m) for la in LAYERS for m in MEASURES})
        rows.append(row)
    seeds = sorted(set(per_run["none"]) & set(per_run["bn"]))
    recs = records(runs, configs)
    stab = stability.assess(recs, rule)
    tests, adjusted = compare(list(recs.values()))
    result = stab.verdict
    numbers: dict[str, Any] = {}
    for name, t in tests.items():
        d = t.diff
        numbers[f"ratio_bn_over_none/{name}"] = {
            "mean": math.exp(d.mean),
            **({"ci95": [math.exp(d.low), math.exp(d.high)]} if d.n > 1 else {}),
            "n": d.n,
            "p_holm": adjusted[name],
        }
    # Context, not in the rule: ||G - G'|| / ||G|| removes the gradient's size, which BN changes.
    relative = {name.split("/")[0]: t.diff for name, t in compare(list(recs.values()), ("rel",))[0].items()}
    for layer, d in relative.items():
        numbers[f"ratio_bn_over_none/{layer}/relative (not in rule)"] = {
            "mean": math.exp(d.mean),
            **({"ci95": [math.exp(d.low), math.exp(d.high)]} if d.n > 1 else {}),
            "n": d.n,
        }
    for norm in NORMS:
        vals = [run_ics(per_run[norm][s], "head", "l2") for s in per_run[norm]]
        numbers[f"head_l2_{norm}"] = stats.estimate(vals).to_json()
        accs = [per_run[norm][s]["test_acc"][-1] for s in per_run[norm]]
        numbers[f"test_acc_{norm}"] = stats.estimate(accs).to_json()
    numbers["failed_runs"] = failed
    ratios = ", ".join(
        f"{LAYER_NAMES[n.split('/')[0]]} {MEASURE_NAMES[n.split('/')[1]]} "
        f"{text.number(numbers[f'ratio_bn_over_none/{n}']['mean'], '×')}"
        for n in tests
    )
    n_lower = sum(adjusted[n] < ALPHA and tests[n].diff.mean < 0 for n in tests)
    n_higher = sum(adjusted[n] < ALPHA and tests[n].diff.mean > 0 for n in tests)
    numbers["significantly_lower"], numbers["significantly_higher"] = n_lower, n_higher
    summary = (
        f"On MNIST-1D's CNN trained with SGD (lr {BASE.lr:g}, momentum {BASE.momentum:g}) over "
        f"{len(seeds)} paired seeds, the ratio BN / no-BN of the mean gradient ICS over training was: "
        f"{ratios} (below 1: less shift with BN). {n_lower} of {len(tests)} comparisons show BN "
        f"significantly lower and {n_higher} significantly higher (Holm-adjusted p < {ALPHA}). Relative to "
        f"the gradient's size (‖G − G′‖ / ‖G‖, not part of the rule) the ratios were "
        f"{', '.join(f'{LAYER_NAMES[la]} {math.exp(d.mean):.2f}×' for la, d in relative.items())}."
    )
    if failed:
        summary += f" {len(failed)} run(s) failed or diverged and are left out."
    plan = QUICK if ctx.quick else FULL
    setup = {
        "data": "mnist1d",
        "model": "cnn",
        "norms": list(NORMS),
        "optimizer": "sgd",
        "lr": BASE.lr,
        "momentum": BASE.momentum,
        "batch_size": BASE.batch_size,
        "steps": plan["steps"],
        "ics_every": plan["eval_every"],
        "layers": list(LAYERS),
        "update": "the optimizer's actual step-t update (SGD with momentum)",
        "seeds": sorted({c.seed for c in configs}),
        "quick": ctx.quick,
    }
    data: dict[str, Any] = {"layers": list(LAYERS), "curves": {}}
    for norm in NORMS:
        if not per_run[norm]:
            continue
        any_series = next(iter(per_run[norm].values()))
        data["curves"][norm] = {"step": any_series["step"]}
        for layer in LAYERS:
            for measure in MEASURES:
                arr = np.array([per_run[norm][s][metric(layer, measure)] for s in per_run[norm]], dtype=float)
                data["curves"][norm][metric(layer, measure)] = np.nanmean(arr, axis=0).tolist()
    fig = FigureSpec(
        "ics_vs_steps",
        "Gradient-measured internal covariate shift during training, with and without BN",
        data,
        draw_ics,
        "Mean over seeds of ‖G − G′‖ (left, log scale) and cos(G, G′) (right) per layer: how much a "
        "layer's gradient changes when the layers before it take their step. Solid: BN; dashed: no BN.",
    )
    claim = spec.result(
        __name__,
        verdict=result,
        summary=summary,
        setup=setup,
        numbers=numbers,
        figures=[fig],
        rows=rows,
        labels=_labels(),
        finding=finding(numbers, n_lower, n_higher, len(tests))
        if seeds
        else "No pair of runs finished, so nothing was measured.",
    )
    return spec.settle(__name__, claim, recs, rule, stab)


def draw_ics(data: dict):
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 2, figsize=(7, 3.4))
    styles = {"bn": "-", "none": "--"}
    for norm, curves in data["curves"].items():
        for i, layer in enumerate(data["layers"]):
            for ax, measure in zip(axes, MEASURES):
                ax.plot(curves["step"], curves[metric(layer, measure)], styles.get(norm, ":"), color=f"C{i}")
    axes[0].set_ylabel("‖G − G′‖")
    axes[0].set_yscale("log")
    log_ticks(axes[0])
    axes[1].set_ylabel("cos(G, G′)")
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    handles = [
        Line2D([], [], color=f"C{i}", label=LAYER_NAMES.get(layer, layer)) for i, layer in enumerate(data["layers"])
    ]
    handles += [Line2D([], [], color="k", ls=styles[n], label=text.name(n)) for n in ("bn", "none")]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False, ncol=5)
    return fig
