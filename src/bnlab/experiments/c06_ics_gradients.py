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

import numpy as np

from ..train.config import RunConfig
from . import stats
from .result import ClaimResult, FigureSpec

ID = "C6"
NAME = "ics-on-gradients"
QUESTION = "Does BN reduce internal covariate shift, measured as the change of a layer's gradient?"
CLAIM = ("Measured on gradients -- ||G - G'|| and cos(G, G') when the earlier layers take their update -- "
         "internal covariate shift is similar or even larger with BN (VGG on CIFAR-10, deep linear nets).")
SOURCE = "Santurkar et al. 2018, How Does Batch Normalization Help Optimization?, §2.2, Fig. 5 (arXiv:1805.11604)"

# ---- the sweep -----------------------------------------------------------------------------------
NORMS = ("none", "bn")
LAYERS = ("blocks.1.op", "blocks.2.op", "head")  # every weight layer but the first (it has no earlier layer)
# lr 0.02: a rate at which the baseline (no BN) trains stably; in a 300-step pilot at 0.05 one of two
# no-BN seeds stalled, which would measure an unstable baseline rather than covariate shift.
BASE = RunConfig(data="mnist1d", model="cnn", optimizer="sgd", lr=0.02, momentum=0.9, batch_size=100,
                 eval_samples=1000, probes=("ics",))
FULL = dict(steps=1500, eval_every=100, seeds=8)  # 15 ICS measurements per run
QUICK = dict(steps=200, eval_every=100, seeds=2)  # 2 metric steps: exercises every code path

# ---- the verdict rule (stated before the runs) ---------------------------------------------------
MEASURES = ("l2", "cos")  # the paper's two: raw ||G - G'|| and the cosine (as 1 - cos, an ICS: lower = less shift)
ALPHA = 0.05  # paired t-test by seed on log(BN / no-BN), Holm-adjusted over layers x measures
REDUCTION = 0.5  # a ratio BN/no-BN of 0.5 (BN halves ICS) is the smallest reduction we must be able to exclude
RULE = (f"Per seed and layer ({', '.join(LAYERS)}): the mean over training's metric steps of ||G - G'|| and of "
        f"1 - cos(G, G'), with BN and without; the paired (by seed) log ratio BN/no-BN, mean ± 95% CI, "
        f"two-sided paired t-test Holm-adjusted over the {len(LAYERS) * len(MEASURES)} layer x measure tests. "
        f"Not reproduced if BN's ICS is significantly lower on any of them (ratio < 1, adjusted p < {ALPHA}). "
        f"Inconclusive if none is, but some ratio is below 1 with a CI that cannot exclude a "
        f"{1 / REDUCTION:g}x reduction (CI lower end < {REDUCTION:g}). Reproduced otherwise: BN's ICS not "
        f"lower than the baseline's.")


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
        row.update({f"mean_{m}_{l}": run_ics(run.series, l, m) for l in LAYERS for m in MEASURES})
        rows.append(row)
    seeds = sorted(set(per_run["none"]) & set(per_run["bn"]))
    tests, numbers = {}, {}
    for layer in LAYERS:
        for measure in MEASURES:
            name = f"{layer}/{measure}"
            bn = [math.log(run_ics(per_run["bn"][s], layer, measure)) for s in seeds]
            base = [math.log(run_ics(per_run["none"][s], layer, measure)) for s in seeds]
            tests[name] = stats.paired(bn, base)
    adjusted = dict(zip(tests, stats.holm([t.p_t if not math.isnan(t.p_t) else 1.0 for t in tests.values()])))
    result = verdict(tests, adjusted) if len(seeds) >= 2 else "inconclusive"
    for name, t in tests.items():
        d = t.diff
        numbers[f"ratio_bn_over_none/{name}"] = {
            "mean": math.exp(d.mean), **({"ci95": [math.exp(d.low), math.exp(d.high)]} if d.n > 1 else {}),
            "n": d.n, "p_holm": adjusted[name]}
    # Context, not in the rule: ||G - G'|| / ||G|| removes the gradient's size, which BN changes.
    relative = {layer: stats.paired([math.log(run_ics(per_run["bn"][s], layer, "rel")) for s in seeds],
                                    [math.log(run_ics(per_run["none"][s], layer, "rel")) for s in seeds]).diff
                for layer in LAYERS}
    for layer, d in relative.items():
        numbers[f"ratio_bn_over_none/{layer}/relative (not in rule)"] = {
            "mean": math.exp(d.mean), **({"ci95": [math.exp(d.low), math.exp(d.high)]} if d.n > 1 else {}), "n": d.n}
    for norm in NORMS:
        vals = [run_ics(per_run[norm][s], "head", "l2") for s in per_run[norm]]
        numbers[f"head_l2_{norm}"] = stats.estimate(vals).to_json()
        accs = [per_run[norm][s]["test_acc"][-1] for s in per_run[norm]]
        numbers[f"test_acc_{norm}"] = stats.estimate(accs).to_json()
    numbers["failed_runs"] = failed
    ratios = ", ".join(f"{n} {numbers[f'ratio_bn_over_none/{n}']['mean']:.2f}" for n in tests)
    summary = (f"On MNIST-1D's CNN trained with SGD (lr {BASE.lr:g}, momentum {BASE.momentum:g}) over "
               f"{len(seeds)} paired seeds, the ratio BN / no-BN of the mean gradient ICS over training was: "
               f"{ratios} (l2: ||G - G'||, cos: 1 - cos(G, G'); below 1 means BN has less shift). "
               f"{sum(adjusted[n] < ALPHA and tests[n].diff.mean < 0 for n in tests)} of {len(tests)} comparisons "
               f"show BN significantly lower and {sum(adjusted[n] < ALPHA and tests[n].diff.mean > 0 for n in tests)} "
               f"significantly higher (Holm-adjusted p < {ALPHA}). Relative to the gradient's size "
               f"(||G - G'|| / ||G||, not part of the rule) the ratios were "
               f"{', '.join(f'{l} {math.exp(d.mean):.2f}' for l, d in relative.items())}. Verdict: {result}.")
    if failed:
        summary += f" {len(failed)} run(s) failed or diverged and are left out."
    plan = QUICK if ctx.quick else FULL
    setup = {"data": "mnist1d", "model": "cnn", "norms": list(NORMS), "optimizer": "sgd", "lr": BASE.lr,
             "momentum": BASE.momentum, "batch_size": BASE.batch_size, "steps": plan["steps"],
             "ics_every": plan["eval_every"], "layers": list(LAYERS),
             "update": "the optimizer's actual step-t update (SGD with momentum)",
             "seeds": sorted({c.seed for c in configs}), "quick": ctx.quick}
    data = {"layers": list(LAYERS), "curves": {}}
    for norm in NORMS:
        if not per_run[norm]:
            continue
        any_series = next(iter(per_run[norm].values()))
        data["curves"][norm] = {"step": any_series["step"]}
        for layer in LAYERS:
            for measure in MEASURES:
                arr = np.array([per_run[norm][s][metric(layer, measure)] for s in per_run[norm]], dtype=float)
                data["curves"][norm][metric(layer, measure)] = np.nanmean(arr, axis=0).tolist()
    fig = FigureSpec("ics_vs_steps", "Gradient ICS vs steps, with and without BN", data, draw_ics,
                     "Mean over seeds of ||G - G'|| (left) and cos(G, G') (right) per layer; solid: BN, dashed: no BN.")
    return ClaimResult(ID, NAME, QUESTION, CLAIM, SOURCE, RULE, result, summary, setup, numbers, [fig], rows)


def draw_ics(data: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7, 3.4))
    styles = {"bn": "-", "none": "--"}
    for norm, curves in data["curves"].items():
        for i, layer in enumerate(data["layers"]):
            for ax, measure in zip(axes, MEASURES):
                ax.plot(curves["step"], curves[metric(layer, measure)], styles.get(norm, ":"), color=f"C{i}",
                        label=f"{layer} ({'BN' if norm == 'bn' else 'no BN'})")
    axes[0].set_ylabel("||G - G'||₂")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("cos(G, G')")
    for ax in axes:
        ax.set_xlabel("step")
    axes[1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return fig
