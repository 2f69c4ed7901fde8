"""C1: BN trains faster and steadies the input distribution of each layer (Ioffe & Szegedy 2015, §4.1).

Ioffe's fully connected net -- 3 hidden layers of 100 sigmoid units, BN before each sigmoid -- on
MNIST-1D, plain SGD (no momentum) with batch 60 at a few constant learning rates, with and without
BN, paired by seed. The built-in ``act_pct_fixed`` probe records the 15th/50th/85th percentiles of
sigmoid inputs of the last hidden layer (units 0-7 of ``blocks.2.act``) at each metric step on a fixed
sample of inputs -- the run's 1000 training-accuracy examples, the same at every step, in train mode
(their own batch statistics); the paper's Fig. 1b/c shows one such unit (the figure here: unit 0).
``act_pct`` records the same percentiles on each metric step's training batch (60 examples), which
the rule read until it was found to measure the batch's sampling noise (``RULE_HISTORY``); they are
still reported.

Drift of a unit's percentile band: over the metric steps after the first phase, each percentile's
range (max - min), averaged over the three percentiles and divided by the mean band width (p85 - p15).
Dividing by the width makes it scale-free: a net whose sigmoid inputs are merely small would
otherwise look steady. A run's drift is the mean over the units of their drifts: the layer's
inputs rather than one of them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ..train.config import RunConfig
from . import series_tools as st
from . import spec, text
from .plotting import legend_below, percent_axis
from .result import ClaimResult, FigureSpec, Label
from .spec import Margin, Part, RuleVersion, Seeds
from .stats import effect, estimate, paired

ID = "C1"
NAME = "bn-trains-faster"
TITLE = "BN reaches a target accuracy in fewer steps and keeps a layer's input distribution steadier"
QUESTION = "Does BN make training faster, and does it keep each layer's input distribution steady?"
CLAIM = (
    "On MNIST, a 3x100 sigmoid MLP with BN (batch 60, 50k steps) reaches higher test accuracy faster than "
    "without, and the 15th/50th/85th percentiles of a last-layer sigmoid input stay steady with BN while "
    "they drift without it (Fig. 1)."
)
SOURCE = "Ioffe & Szegedy 2015, §4.1, Fig. 1 (arXiv:1502.03167)"

# ---- the sweep -----------------------------------------------------------------------------------
NORMS = ("none", "bn")
UNITS = tuple(range(8))  # the last hidden sigmoid's inputs whose drift is measured (averaged over them)
UNIT = 0  # the unit the figure shows, as the paper's Fig. 1 shows one
# Where the percentiles are taken: the fixed sample (the rule's) and each metric step's training batch.
SAMPLES = {"fixed": "act_pct_fixed", "batch": "act_pct"}
PROBES = tuple(f"{probe}:blocks.2.act:{u}" for probe in SAMPLES.values() for u in UNITS)


def pct(unit: int, q: int, sample: str = "fixed") -> str:
    """The series name of unit ``unit``'s ``q``-th percentile on ``sample`` ("fixed" or "batch")."""
    return f"{SAMPLES[sample]}/blocks.2.act:{unit}/p{q}"


PCT = {q: pct(UNIT, q) for q in (15, 50, 85)}
FULL: dict[str, Any] = dict(lrs=(0.5, 2.0, 8.0), steps=3000, eval_every=100)
QUICK: dict[str, Any] = dict(lrs=(0.5, 2.0), steps=150, eval_every=50)
BASE = RunConfig(
    data="mnist1d",
    model="mlp",
    act="sigmoid",
    placement="before",
    optimizer="sgd",
    momentum=0.0,
    batch_size=60,
    eval_samples=1000,
    probes=PROBES,
)

# ---- the verdict rule (fixed before running) ---------------------------------------------------
TARGET_ACC = 0.50  # well below the MNIST-1D MLP reference (68%), so both nets may reach it
FIRST_PHASE = 0.2  # "after the first phase": drift is measured over the last 80% of the metric steps
MATCH_MARGIN = 0.01  # no-BN "matches" BN if its best final accuracy is within 1 point ...
# The smallest differences that matter, fixed on principle before the runs (never from stored results):
SPEED_MARGIN = Margin(
    0.10,
    "",
    "a tenth of the run's length in steps: a change in training time smaller than that is not one a "
    "practitioner would choose a layer for (300 of 3000 steps, 3 evaluation intervals)",
    "10% of the run's length",
)
DRIFT_MARGIN = Margin(
    0.10,
    "",
    "a tenth of the percentile band's width: a layer whose input percentiles move by less than a tenth of "
    "their spread sees the same distribution for every purpose the claim is about",
    "0.1 of the band's width",
)
RULE_VERSION = "2026-12-06"
RULE = (
    f"Steps to target = first metric step with test accuracy >= {TARGET_ACC:.0%} (never: last step + one eval "
    f"interval). Drift = mean over p15/p50/p85 of (max - min) after the first {FIRST_PHASE:.0%} of training, "
    f"divided by the mean band width p85 - p15, for each of the last hidden layer's first {len(UNITS)} sigmoid "
    f"inputs, averaged over them; the percentiles are those of a fixed sample of inputs (the run's "
    f"{BASE.eval_samples} training-accuracy examples, train mode) at each metric step. The same-rate "
    f"comparison uses no-BN's best rate (highest "
    f"mean final test accuracy), the rate most favourable to the baseline. Two parts, each judged on the 95% CI "
    f"of the per-seed difference BN - no BN at the same rate. Faster: not reproduced if no BN at its own best "
    f"rate matches BN at BN's best rate (mean final test accuracy within {MATCH_MARGIN * 100:g} point or higher "
    f"AND mean steps to target no more than BN's); else reproduced if the steps' CI lies below 0, not reproduced "
    f"if it lies within ±{SPEED_MARGIN.size:.0%} of the run's length (no difference that matters) or above 0, "
    f"inconclusive otherwise. Steadier: the same on the drift with the margin ±{DRIFT_MARGIN.size:g} band widths. "
    f"The claim is reproduced if both parts are, not reproduced if either is not, inconclusive otherwise."
)
RULE_HISTORY = (
    RuleVersion(
        "2026-12-06",
        "As now, but the percentiles were those of each metric step's training batch (60 examples) instead of "
        "a fixed sample of inputs.",
        "a batch's percentiles carry the batch's own sampling noise, and BN removes it by construction: it "
        "normalizes each batch by that batch's mean and variance, so on batches BN's band looked steadier (0.47 "
        "vs 0.55 of its width in the edition of that day, 56 seeds; the part 'underpowered', needing about 120 "
        "seeds). The claim is about how training moves a layer's input distribution, which a fixed sample "
        "measures without the batch's noise: pilot runs of this rule (16 seeds, lr 2) gave 0.38 with BN and "
        "0.34 without, where the same runs' batches gave 0.46 and 0.51. The pilot came before the change, and "
        "the change reverses the earlier rule's leaning: it was made for what the claim measures, not for a "
        "verdict. The batch drift is still reported.",
    ),
    RuleVersion(
        "2026-12-06",
        "As now, but the drift of one sigmoid input (unit 0 of the last hidden layer) instead of the mean over "
        "the first 8.",
        "the claim is about a layer's input distribution, of which one unit is a sample: the mean over 8 units "
        "measures the layer. It did not make the part much cheaper to settle: the seed-to-seed spread of the "
        "drift difference fell only from 0.14 to 0.13 of a band's width (it is between runs, not between "
        "units), so the part still needs about 50 seeds, which the grouped trainer makes affordable. The margin "
        "is unchanged.",
    ),
    RuleVersion(
        "2026-12-06",
        "Steps to target and drift as now. Not reproduced if no BN at its own best rate matches BN at BN's best "
        "rate: mean final test accuracy within 1 point (or higher) AND mean steps to target no more than BN's. "
        "Otherwise reproduced if, at the same rate, the 95% CIs of the per-seed differences BN - no BN lie below 0 "
        "for both steps to target and drift; not reproduced if either CI lies above 0; inconclusive otherwise.",
        "a rule that needs a significant difference can never settle a difference that is truly zero: the drift "
        "part hovered at 0 and left the claim inconclusive at any number of seeds. The margins make 'no "
        "difference larger than the margin' a finding, and each part is judged and shown on its own.",
    ),
)
# A seed is 6 runs, trained in groups of 8 with their probes (bnlab.train.group_probes): a round of 8 seeds is
# ~50 s of run time (2-core AVX-512). On the fixed sample the drift difference varies by about 0.13 of a band's
# width from seed to seed (16 pilot seeds), as on the batches: about 20 to 40 seeds settle a difference near 0
# against the 0.1 margin. Rounds of 8, up to 56.
SEEDS = Seeds(start=8, step=8, cap=56, cluster_cap=96)


def sweep(quick: bool, seeds: int | None = None) -> list[RunConfig]:
    cfg = QUICK if quick else FULL
    base = dataclasses.replace(BASE, steps=cfg["steps"], eval_every=cfg["eval_every"])
    n = seeds or (SEEDS.quick if quick else SEEDS.start)
    return [
        dataclasses.replace(base, norm=norm, lr=lr, seed=seed)
        for norm in NORMS
        for lr in cfg["lrs"]
        for seed in range(n)
    ]


def drift(run, relative: bool = True, sample: str = "fixed") -> float:
    """Drift of the sigmoid inputs' percentile bands after the first phase, the mean over :data:`UNITS` of
    :func:`unit_drift` (module docstring); NaN if any unit's is."""
    return float(np.mean([unit_drift(run, u, relative, sample) for u in UNITS]))


def unit_drift(run, unit: int, relative: bool = True, sample: str = "fixed") -> float:
    """Drift of one sigmoid input's percentile band after the first phase (module docstring), its
    percentiles taken on ``sample`` (:data:`SAMPLES`); with ``relative=False`` the mean percentile range
    in the input's own units (reported, not in the rule)."""
    series = [run.series.get(pct(unit, q, sample), []) for q in (15, 50, 85)]
    if len({len(v) for v in series}) != 1 or len(series[0]) < 2:  # a percentile missing, or one metric step
        return math.nan
    bands = np.array(series, dtype=float)  # (3, metric steps)
    late = bands[:, int(FIRST_PHASE * bands.shape[1]) :]
    late = late[:, ~np.isnan(late).any(axis=0)]
    width = float(np.mean(late[2] - late[0])) if late.shape[1] else math.nan
    if not late.shape[1] or not width > 0:
        return math.nan
    return float(np.mean(late.max(axis=1) - late.min(axis=1)) / (width if relative else 1.0))


def faster(speed_diff, best_acc_gap: float, best_steps_gap: float, length: float) -> str:
    """The "faster" part. speed_diff: Estimate of BN - no BN steps to target at the same rate;
    best_acc_gap: mean final accuracy of BN at its best rate minus no BN's at its best rate;
    best_steps_gap: mean steps to target of no BN (best rate) minus BN (best rate); length: the run's steps."""
    if best_acc_gap < MATCH_MARGIN and best_steps_gap <= 0:
        return "not reproduced"
    return effect(speed_diff, SPEED_MARGIN.size * length, -1)


def steadier(drift_diff) -> str:
    """The "steadier" part on the Estimate of BN - no BN drift at the same rate."""
    return effect(drift_diff, DRIFT_MARGIN.size, -1)


def _draw_acc(data):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    for label, color in zip(data["bands"], ("tab:gray", "tab:blue", "tab:cyan")):
        b = data["bands"][label]
        ax.plot(b["step"], [100 * v for v in b["mean"]], color=color, label=label)
        ax.fill_between(
            b["step"], [100 * v for v in b["low"]], [100 * v for v in b["high"]], color=color, alpha=0.2, lw=0
        )
    ax.axhline(100 * data["target"], color="k", ls=":", lw=1, label=f"target {100 * data['target']:.0f}%")
    ax.set_xlabel("step (batch 60)")
    ax.set_ylabel("test accuracy")
    percent_axis(ax)
    fig.tight_layout()
    legend_below(fig, title="line: mean over seeds; band: lowest to highest seed")
    return fig


def _draw_pct(data):
    import matplotlib.pyplot as plt

    # One y scale for both panels: "steady" and "drifting" can only be judged by eye on the same axis.
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.4), sharey=True)
    for ax, (label, p) in zip(axes, data["percentiles"].items()):
        if p["step"]:
            ax.fill_between(
                p["step"],
                p["p15"],
                p["p85"],
                color="tab:blue",
                alpha=0.25,
                lw=0,
                label="15th to 85th percentile, fixed sample",
            )
            ax.plot(p["step"], p["p50"], color="tab:blue", label="median, fixed sample")
            for q in ("batch_p15", "batch_p85"):
                ax.plot(
                    p["step"],
                    p[q],
                    color="tab:orange",
                    lw=0.8,
                    ls="--",
                    label=None if q.endswith("85") else "15th and 85th percentile, each step's training batch",
                )
        ax.set_title(label)
        ax.set_xlabel("step")
    axes[0].set_ylabel("input of a last-layer sigmoid")
    fig.tight_layout()
    legend_below(fig)
    return fig


# How the page shows the numbers (keys of ClaimResult.numbers).
LABELS = {
    "target_acc": Label("Target test accuracy", "%", detail=True),
    "same_lr": Label("Learning rate of the same-rate comparison (no BN's best)", "lr"),
    "steps_to_target_bn": Label("Steps to the target with BN (same rate)", "steps"),
    "steps_to_target_none": Label("Steps to the target without BN (same rate)", "steps"),
    "steps_to_target_bn_minus_none": Label("Steps to the target, BN − no BN (paired by seed)", "steps diff"),
    "drift_bn": Label(
        "Drift of the sigmoid input's percentiles on a fixed sample, with BN (relative to the band's width)", "positive"
    ),
    "drift_none": Label(
        "Drift of the sigmoid input's percentiles on a fixed sample, without BN (relative)", "positive"
    ),
    "drift_bn_minus_none": Label("Drift, BN − no BN (paired by seed)"),
    "drift_batch_bn": Label(
        "Drift on each step's training batch with BN (the earlier rule's measure)", "positive", detail=True
    ),
    "drift_batch_none": Label("Drift on each step's training batch without BN", "positive", detail=True),
    "drift_batch_bn_minus_none": Label("Drift on the training batches, BN − no BN (paired by seed)", detail=True),
    "drift_abs_bn": Label("Drift with BN, in the input's own units", detail=True),
    "drift_abs_none": Label("Drift without BN, in the input's own units", detail=True),
    "best_lr": Label("Best learning rate (highest final accuracy)", "lr", detail=True),
    "best_final_test_acc": Label("Final test accuracy, each at its best learning rate", "%"),
    "best_acc_gap_bn_minus_none": Label("Final accuracy at the best rates, BN − no BN", "points", detail=True),
    "best_steps_gap_none_minus_bn": Label(
        "Steps to the target at the best rates, no BN − BN", "steps diff", detail=True
    ),
    "failed_runs": Label("Runs that failed or diverged", "count", detail=True),
}


def finding(numbers: dict, steps: int) -> str:
    """One sentence: how fast each reached the target, and how much the percentiles drifted."""
    target = f"{numbers['target_acc']:.0%}"
    speed = text.compare(numbers["steps_to_target_bn_minus_none"], "slower", "faster", "about as fast")
    steady = text.compare(numbers["drift_bn_minus_none"], "less steady", "steadier", "about as steady")

    def reach(key):
        e = numbers[key]
        return f"never within {steps} steps" if e.get("mean", 0) > steps else f"in {text.interval(e, 'steps')}"

    return (
        f"At the same learning rate ({numbers['same_lr']:g}) BN reached {target} test accuracy "
        f"{reach('steps_to_target_bn')} and no BN {reach('steps_to_target_none')}; on a fixed sample of inputs "
        f"the percentile band of a last-layer input moved by {text.interval(numbers['drift_bn'], 'positive')} of "
        f"its width with BN and {text.interval(numbers['drift_none'], 'positive')} without: with BN, {speed} and "
        f"{steady}. On each step's own training batch, which BN normalizes, the band moved by "
        f"{text.interval(numbers['drift_batch_bn'], 'positive')} and "
        f"{text.interval(numbers['drift_batch_none'], 'positive')}."
    )


def measure(run, cap: float) -> dict | None:
    """What one run contributes to the rule (None: failed or diverged, left out)."""
    if run is None or run.diverged:
        return None
    return {
        "acc": st.final(run, "test_acc"),
        "steps": st.censored([st.steps_to(run, "test_acc", TARGET_ACC)], cap)[0],
        "drift": drift(run),
        "drift_abs": drift(run, False),
        "drift_batch": drift(run, sample="batch"),
    }


def records(runs, configs) -> dict[int, dict]:
    """{seed: {(norm, lr): measure}}: everything one seed measured."""
    cap, length = configs[0].steps + configs[0].eval_every, configs[0].steps

    def measured(r):  # each measure carries the run's length in steps: the speed margin scales with it
        m = measure(r, cap)
        return None if m is None else {**m, "length": length}

    return st.by_seed(configs, runs, lambda c: (c.norm, c.lr), measured)


def compare(recs: list[dict]) -> dict:
    """The rule's quantities from per-seed records (any list of them, repeats allowed)."""
    lrs = sorted({lr for _, lr in recs[0]})

    def ok(norm, lr):
        return [r[(norm, lr)] for r in recs if r[(norm, lr)] is not None]

    def mean_final(norm, lr):
        accs = [m["acc"] for m in ok(norm, lr)]
        return float(np.mean(accs)) if accs else -math.inf

    def mean_steps(norm, lr):
        steps = [m["steps"] for m in ok(norm, lr)]
        return float(np.mean(steps)) if steps else math.inf

    best = {n: max(lrs, key=lambda lr: mean_final(n, lr)) for n in NORMS}
    same = best["none"]
    pairs = [
        (r[("bn", same)], r[("none", same)])
        for r in recs
        if r[("bn", same)] is not None and r[("none", same)] is not None
    ]

    def measured(key):  # the pairs where both runs have the measure
        return [(a, b) for a, b in pairs if not (math.isnan(a[key]) or math.isnan(b[key]))]

    dpairs, bpairs = measured("drift"), measured("drift_batch")
    return {
        "best": best,
        "same_lr": same,
        "speed": paired([a["steps"] for a, _ in pairs], [b["steps"] for _, b in pairs]),
        "drift": paired([a["drift"] for a, _ in dpairs], [b["drift"] for _, b in dpairs]),
        "drift_batch": paired([a["drift_batch"] for a, _ in bpairs], [b["drift_batch"] for _, b in bpairs]),
        "acc_gap": mean_final("bn", best["bn"]) - mean_final("none", best["none"]),
        "steps_gap": mean_steps("none", best["none"]) - mean_steps("bn", best["bn"]),
        "dpairs": dpairs,
        "bpairs": bpairs,
        "ok": ok,
    }


def _length(recs: list[dict]) -> float:
    return next(m["length"] for r in recs for m in r.values() if m is not None)


def faster_rule(recs: list[dict]) -> str:
    """The "faster" part of RULE on per-seed records."""
    c = compare(recs)
    return faster(c["speed"].diff, c["acc_gap"], c["steps_gap"], _length(recs))


def steadier_rule(recs: list[dict]) -> str:
    """The "steadier" part of RULE on per-seed records."""
    return steadier(compare(recs)["drift"].diff)


PARTS = (
    Part(
        "faster",
        "BN reaches the target accuracy in fewer steps",
        f"Faster: steps to {TARGET_ACC:.0%} test accuracy, BN - no BN at the same rate (margin "
        f"{SPEED_MARGIN.size:.0%} of the run's length); not reproduced if no BN at its best rate matches BN.",
        faster_rule,
        SPEED_MARGIN,
    ),
    Part(
        "steadier",
        "BN keeps the layer's input percentiles steadier",
        f"Steadier: drift of the percentile band on a fixed sample, BN - no BN at the same rate (margin "
        f"{DRIFT_MARGIN.size:g} of the band's width).",
        steadier_rule,
        DRIFT_MARGIN,
    ),
)


def rule(recs: list[dict]) -> str:
    """RULE on per-seed records: both parts."""
    return spec.all_of([faster_rule(recs), steadier_rule(recs)])


def analyze(runs, ctx) -> ClaimResult:
    configs = sweep(ctx.quick, ctx.seeds)
    groups = st.group(runs, configs, key=lambda c: (c.norm, c.lr))
    lrs = sorted({c.lr for c in configs})
    seeds = sorted({c.seed for c in configs})
    cap = configs[0].steps + configs[0].eval_every
    failed = sum(r is None for r in runs)
    recs = records(runs, configs)
    c = compare(list(recs.values()))
    best, same_lr, speed, drift_test, ok = c["best"], c["same_lr"], c["speed"], c["drift"], c["ok"]
    acc_gap, steps_gap, v = c["acc_gap"], c["steps_gap"], rule(list(recs.values()))
    s_bn = [m["steps"] for m in ok("bn", same_lr)]
    s_none = [m["steps"] for m in ok("none", same_lr)]
    d_bn = [a["drift"] for a, _ in c["dpairs"]]
    d_none = [b["drift"] for _, b in c["dpairs"]]
    db_bn = [a["drift_batch"] for a, _ in c["bpairs"]]
    db_none = [b["drift_batch"] for _, b in c["bpairs"]]
    best_acc = {n: estimate([m["acc"] for m in ok(n, best[n])]) for n in NORMS}
    summary = (
        f"3x100 sigmoid MLP on MNIST-1D, plain SGD, batch 60, {configs[0].steps} steps, {len(seeds)} seeds. At "
        f"learning rate {same_lr:g} (no BN's best), BN reaches {TARGET_ACC:.0%} test accuracy in "
        f"{text.interval(estimate(s_bn), 'steps')} vs "
        f"{text.interval(estimate(s_none), 'steps')} without (per-seed difference "
        f"{text.interval(speed.diff, 'steps diff')}; runs that never reach it count as {cap}), and the relative "
        f"drift of its sigmoid-input percentiles on a fixed sample of inputs is "
        f"{text.interval(estimate(d_bn), 'positive')} vs {text.interval(estimate(d_none), 'positive')} (difference "
        f"{text.interval(drift_test.diff)}); on each step's own training batch "
        f"{text.interval(estimate(db_bn), 'positive')} vs {text.interval(estimate(db_none), 'positive')} "
        f"(difference {text.interval(c['drift_batch'].diff)}), where BN normalizes the batch it is measured on. "
        f"At their own best rates BN ends at {text.interval(best_acc['bn'], '%')} (lr {best['bn']:g}) and no BN "
        f"at {text.interval(best_acc['none'], '%')} (lr {best['none']:g})."
        + (f" {failed} run(s) failed or diverged and were left out." if failed else "")
    )

    def label(n, lr):
        return f"{'BN' if n == 'bn' else 'no BN'}, lr {lr:g}"

    acc_bands = {
        label("none", same_lr): st.mean_band([r for _, r in groups[("none", same_lr)]], "test_acc"),
        label("bn", same_lr): st.mean_band([r for _, r in groups[("bn", same_lr)]], "test_acc"),
    }
    if best["bn"] != same_lr:
        acc_bands[label("bn", best["bn"])] = st.mean_band([r for _, r in groups[("bn", best["bn"])]], "test_acc")
    bands = {}
    for n in NORMS:
        r = next((r for _, r in groups[(n, same_lr)] if r is not None), None)
        bands[label(n, same_lr) + f" (seed {seeds[0]})"] = (
            {
                "step": r.series["step"],
                **{f"p{q}": r.series[PCT[q]] for q in PCT},
                **{f"batch_p{q}": r.series[pct(UNIT, q, "batch")] for q in (15, 85)},
            }
            if r is not None
            else {"step": [], "p15": [], "p50": [], "p85": [], "batch_p15": [], "batch_p85": []}
        )
    rows = []
    for cfg, r in zip(configs, runs):
        row = {"norm": cfg.norm, "lr": cfg.lr, "seed": cfg.seed, "status": "failed" if r is None else r.status}
        if r is not None:
            row.update(
                final_test_acc=st.final(r, "test_acc"),
                steps_to_target=st.steps_to(r, "test_acc", TARGET_ACC),
                drift=drift(r),
                drift_batch=drift(r, sample="batch"),
            )
        rows.append(row)
    result = spec.result(
        __name__,
        verdict=v,
        summary=summary,
        setup={
            "data": "mnist1d",
            "model": "mlp 3x100 sigmoid, norm before the sigmoid",
            "norms": list(NORMS),
            "lrs": lrs,
            "optimizer": "sgd, no momentum, constant lr",
            "batch_size": BASE.batch_size,
            "steps": configs[0].steps,
            "eval_every": configs[0].eval_every,
            "probes": list(PROBES),
            "drift_units": list(UNITS),
            "seeds": seeds,
            "quick": ctx.quick,
            "target_acc": TARGET_ACC,
            "failed_runs": failed,
        },
        numbers={
            "target_acc": TARGET_ACC,
            "same_lr": same_lr,
            "best_lr": best,
            "steps_to_target_bn": estimate(s_bn).to_json(),
            "steps_to_target_none": estimate(s_none).to_json(),
            "steps_to_target_bn_minus_none": speed.to_json(),
            "drift_bn_minus_none": drift_test.to_json(),
            "drift_bn": estimate(d_bn).to_json(),
            "drift_none": estimate(d_none).to_json(),
            "drift_batch_bn": estimate(db_bn).to_json(),
            "drift_batch_none": estimate(db_none).to_json(),
            "drift_batch_bn_minus_none": c["drift_batch"].to_json(),
            "drift_abs_bn": estimate(
                [m["drift_abs"] for m in ok("bn", same_lr) if not math.isnan(m["drift_abs"])]
            ).to_json(),
            "drift_abs_none": estimate(
                [m["drift_abs"] for m in ok("none", same_lr) if not math.isnan(m["drift_abs"])]
            ).to_json(),
            "best_final_test_acc": {n: best_acc[n].to_json() for n in NORMS},
            "best_acc_gap_bn_minus_none": acc_gap,
            "best_steps_gap_none_minus_bn": steps_gap,
            "failed_runs": failed,
        },
        figures=[
            FigureSpec(
                "accuracy_vs_steps",
                "Test accuracy vs steps, with and without BN",
                {"bands": acc_bands, "target": TARGET_ACC},
                _draw_acc,
                "As Ioffe & Szegedy's Fig. 1a: test accuracy during training, mean over seeds with "
                "the lowest-to-highest band.",
            ),
            FigureSpec(
                "sigmoid_input_percentiles",
                "The 15th, 50th and 85th percentiles of a last-layer sigmoid input",
                {"percentiles": bands},
                _draw_pct,
                "As Ioffe & Szegedy's Fig. 1b/c: the distribution of one unit's input to the last hidden "
                "sigmoid during training, at the same learning rate, without (left) and with (right) BN, on one "
                "y scale; blue: on the fixed sample of inputs the rule reads, dashed: on each step's own "
                "training batch, whose sampling noise BN normalizes away.",
            ),
        ],
        rows=rows,
        labels=LABELS,
    )
    result.finding = finding(result.numbers, configs[0].steps)
    return spec.settle(__name__, result, recs, rule)
