"""C3: BN allows much higher learning rates (Ioffe & Szegedy 2015, §4.2; Bjorck et al. 2018).

MNIST-1D's reference CNN with and without BN (conv-BN-ReLU), SGD with momentum 0.9 at a constant
learning rate on a half-decade log grid 3e-2..1, several seeds. The trainer stops a run that
diverges (a non-finite loss, or one above 100x the first step's loss). For each norm we find the
largest learning rate at which the run "trains" -- no seed diverges and the seeds reach, on average,
the test accuracy whose steps the second part counts -- and compare the two; and at each norm's best
rate (highest mean final test accuracy among the rates that train) the number of steps to that
accuracy, paired by seed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..train.config import RunConfig
from . import series_tools as st
from . import spec, text
from .plotting import percent_axis
from .result import ClaimResult, FigureSpec, Label
from .spec import Margin, Part, RuleVersion, Seeds
from .stats import effect, estimate, paired

ID = "C3"
NAME = "higher-learning-rates"
TITLE = "BN trains at learning rates at least 5× higher and reaches 80% accuracy in fewer steps"
QUESTION = "Does BN let me train with much higher learning rates?"
CLAIM = (
    "With BN, Inception trains at 5x and 30x the baseline's learning rate: BN-x5 reaches the baseline's "
    "72.2% in 14x fewer steps (2.1M vs 31.0M), while the baseline at 5x diverges; a CIFAR-10 ResNet-110 "
    "trains at lr 0.1 with BN but needs 0.0001 without."
)
SOURCE = "Ioffe & Szegedy 2015, §4.2 (arXiv:1502.03167); Bjorck et al. 2018 (arXiv:1806.02375)"

# ---- the sweep -----------------------------------------------------------------------------------
NORMS = ("none", "bn")
# The grid starts at 3e-2: the rule reads only the largest rate that trains and each norm's best rate, and both
# norms' best rate has been 0.1 in every full edition, so 3e-2 brackets it from below. Re-applying the rule to
# the stored runs of a full edition (16 seeds) without 1e-2 gave the same verdicts, parts and stabilities (99.2%,
# 100%), as it had without 1e-3 and 3e-3 before; each rate dropped was a sixth of the claim's cost or more.
# The grid ends at 1.0, one rate above the largest that trains for either norm (0.3, BN): 3.0 trained for neither
# norm in any full edition, so the rule could not read it (a rate that trains above one that does not is not a
# "largest rate" the grid can show), and its runs cost the full 2000 steps all the same (runs that do not train
# mostly stay at chance rather than diverge). Re-applying the rule without 3.0 to the last edition's 16 seeds gave
# the same verdicts and stabilities at 8 and 16 seeds (96.2% and 99.2%).
FULL: dict[str, Any] = dict(lrs=(3e-2, 0.1, 0.3, 1.0), steps=2000, eval_every=100)
QUICK: dict[str, Any] = dict(lrs=(1e-2, 3.0), steps=100, eval_every=50)
BASE = RunConfig(
    data="mnist1d", model="cnn", optimizer="sgd", momentum=0.9, batch_size=100, eval_samples=1000
)  # eval on the whole test set (1000) and the first 1000 train examples

# ---- the verdict rule (fixed before running) ---------------------------------------------------
CHANCE = 0.1  # 10 classes
ACC_THRESHOLD = 0.80  # the fixed test accuracy whose steps we count (well below the CNN's ~94%)
# A rate "trains" if no seed diverges and the seeds' mean final test accuracy reaches the same target: the claim's
# own yardstick (BN at 5x "reaches the baseline's 72.2%"), read on the mean so that no single seed decides it.
TRAINS_MEAN_ACC = ACC_THRESHOLD
LR_RATIO_MIN = 5.0  # "clearly higher": BN's largest training rate >= 5x no-BN's (2 grid steps of ~3.16x)
# The smallest difference in steps that matters, fixed on principle before the runs:
STEPS_MARGIN = Margin(
    0.10,
    "",
    "a tenth of no BN's own steps to the target: a layer that saves less than a tenth of the training time is "
    "not one a practitioner would choose for speed",
    "10% of no BN's steps to the target",
)
RULE_VERSION = "2026-12-08"
RULE = (
    f"A learning rate 'trains' for a norm if no seed diverges and the seeds' mean final test accuracy is at least "
    f"{TRAINS_MEAN_ACC:.0%} (the target the second part counts the steps to). Two parts. Higher learning rate: "
    f"reproduced if BN's largest training rate is at least {LR_RATIO_MIN:g}x no-BN's, not reproduced if it is not "
    f"higher, inconclusive in between (a ratio this grid cannot resolve). Fewer steps: at each norm's best rate "
    f"(highest mean final test accuracy among its training rates) the steps to {ACC_THRESHOLD:.0%} test accuracy, "
    f"the 95% CI of the per-seed difference BN - no-BN (a run that never reaches it counts as its last step + one "
    f"eval interval): reproduced if it lies below 0, not reproduced if it lies within ±{STEPS_MARGIN.size:.0%} of no"
    f" BN's mean steps to the target (no difference that matters) or above 0, inconclusive otherwise. The claim is "
    f"reproduced if both parts are, not reproduced if either is not, inconclusive otherwise."
)
RULE_HISTORY = (
    RuleVersion(
        "2026-12-08",
        f"As now, but a learning rate 'trained' for a norm if every seed finished without diverging and ended "
        f"with test accuracy >= {2 * CHANCE:.0%} (twice chance).",
        "twice chance sat inside the spread of no BN's final accuracy at lr 0.3 (9% to 63% over 16 seeds), so "
        "whether no BN 'trained' there, and with it the ratio of the largest rates, hung on the few seeds under "
        "20%: on the same kind of machine with torch's kernels capped at AVX2 (other last bits, hence other "
        "trajectories) 2 of 16 seeds were under it where 7 of 16 had been, and the part held its verdict in 75% "
        "of resamples instead of 100%. A rate at which the seeds do not reach, on average, the accuracy the "
        "claim itself counts (BN at 5x 'reaches the baseline's 72.2%') is not one a practitioner would train at; "
        "with the mean at that target no rate of either norm sits near the line (no BN at 0.3: 26% and 30% on "
        "average on the two instruction sets, at 0.1: 92%; BN at 0.3: 94% and 95%, at 1.0: 23% and 21%).",
    ),
    RuleVersion(
        "2026-12-06",
        "As now, but the fewer-steps margin was a tenth of the run's length (200 of 2000 steps) instead of a tenth "
        "of no BN's steps to the target.",
        "the run's length is a choice of the experiment, not a property of training speed: a run twice as long "
        "doubled the margin for the same speed-up. With BN at about 260 steps and no BN at about 370 (30% fewer), "
        "the 200-step margin sat at the measured difference, so the part flipped between 'reproduced' and 'no "
        "difference that matters' from one resample to the next (66% stable at 10 seeds). A tenth of the "
        "baseline's own steps measures the speed-up itself.",
    ),
    RuleVersion(
        "2026-12-06",
        f"A learning rate 'trains' as now. Reproduced if BN's largest training rate is at least 5x no-BN's AND, at "
        f"each norm's best rate, BN reaches {ACC_THRESHOLD:.0%} test accuracy in fewer steps: the 95% CI of the "
        f"per-seed difference (BN - no-BN) lies below 0. Not reproduced if BN's largest training rate is not higher "
        f"than no-BN's, or BN is slower with the CI above 0. Inconclusive otherwise.",
        "each part is now judged and shown on its own, and the steps carry a margin so that 'no difference "
        "that matters' is a finding rather than a permanent inconclusive",
    ),
)
# A seed is 10 runs, each setting's seeds trained in groups of 8 (bnlab.train.seeds.GROUP_WIDTH): rounds of 8 seeds
# fill whole groups (rounds of 6 and 4 left 2 and 4 of every 8 members as filler). A round of 8 is ~200 s of run time
# on a 2-core AMD Zen 4 (AVX-512), the dearest of the lab: two rounds, the fewest that can confirm a verdict.
SEEDS = Seeds(start=8, step=8, cap=16, cluster_cap=32)


def sweep(quick: bool, seeds: int | None = None) -> list[RunConfig]:
    cfg = QUICK if quick else FULL
    n_seeds = seeds or (SEEDS.quick if quick else SEEDS.start)
    base = dataclasses.replace(BASE, steps=cfg["steps"], eval_every=cfg["eval_every"])
    return [
        dataclasses.replace(base, norm=norm, lr=lr, seed=seed)
        for norm in NORMS
        for lr in cfg["lrs"]
        for seed in range(n_seeds)
    ]


def higher_lr(lr_ratio: float) -> str:
    """The first part on the ratio of largest training rates (BN / no-BN; inf when only BN trains, NaN
    when BN never trains)."""
    if math.isnan(lr_ratio) or lr_ratio <= 1.0:
        return "not reproduced"
    return "reproduced" if lr_ratio >= LR_RATIO_MIN else "inconclusive"


def fewer_steps(steps_diff, none_steps: float) -> str:
    """The second part on the Estimate of the per-seed steps-to-threshold difference BN - no-BN;
    ``none_steps``: no BN's mean steps to the threshold (the margin is a fraction of it)."""
    return effect(steps_diff, STEPS_MARGIN.size * none_steps, -1)


def _draw(data):
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(7, 3.6))
    lrs = data["curves"][data["norms"][0]]["lr"]
    lanes = {}  # rates that do not train: an x in a lane of its own under the 0% line, one per norm
    for i, (norm, color) in enumerate(zip(data["norms"], ("tab:gray", "tab:blue"))):
        d = data["curves"][norm]
        ax.errorbar(
            d["lr"],
            [100 * m if m is not None else math.nan for m in d["mean"]],
            yerr=[100 * c if c is not None else 0 for c in d["ci"]],
            fmt="o-",
            color=color,
            capsize=2,
            label=text.name(norm),
        )
        lanes[norm] = -5 - 5 * i
        bad = [lr for lr, ok in zip(d["lr"], d["trains"]) if not ok]
        ax.plot(bad, [lanes[norm]] * len(bad), "x", color=color, ms=7, mew=2)
        if d["max_lr"] is not None:
            ax.axvline(d["max_lr"], color=color, ls="--", lw=1.5)
    ax.set_xscale("log")
    ax.set_xlim(min(lrs) / 2, max(lrs) * 2)  # lines at the first or last rate stay off the axes' edges
    ax.axhline(0, color="0.8", lw=0.8)
    ax.set_ylim(-13, 102)
    ax.set_yticks(range(0, 101, 20))
    percent_axis(ax, limits=None)
    ax.set_xlabel("learning rate (SGD, momentum 0.9)")
    ax.set_ylabel("final test accuracy")
    fig.tight_layout()
    extra = [
        Line2D([], [], color="k", marker="x", ls="", mew=2, label="does not train (under 0%)"),
        Line2D([], [], color="k", ls="--", label="largest rate that trains"),
    ]
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(
        handles + extra,
        labels + [h.get_label() for h in extra],
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        frameon=False,
        ncol=4,
    )
    return fig


LABELS = {
    "max_training_lr_bn": Label("Largest learning rate that trains, BN", "lr"),
    "max_training_lr_none": Label("Largest learning rate that trains, no BN", "lr"),
    "lr_ratio": Label(f"Ratio of the largest rates, BN ÷ no BN (the claim needs {LR_RATIO_MIN:g}× or more)", "×"),
    "best_lr_bn": Label("Best learning rate, BN", "lr", detail=True),
    "best_lr_none": Label("Best learning rate, no BN", "lr", detail=True),
    "steps_to_threshold_bn": Label(f"Steps to {ACC_THRESHOLD:.0%} test accuracy at the best rate, BN", "steps"),
    "steps_to_threshold_none": Label(f"Steps to {ACC_THRESHOLD:.0%} test accuracy at the best rate, no BN", "steps"),
    "steps_diff_bn_minus_none": Label(f"Steps to {ACC_THRESHOLD:.0%}, BN − no BN (paired by seed)", "steps diff"),
    "final_test_acc_at_best_lr": Label("Final test accuracy at the best rate", "%"),
    "failed_runs": Label("Runs that failed", "count", detail=True),
}


def finding(n: dict, steps: int) -> str:
    def lr(v):
        return "none" if v is None else f"{v:g}"

    ratio = n["lr_ratio"]
    ratio_txt = (
        "only BN trains at any rate"
        if ratio == math.inf
        else "BN trains at none"
        if ratio is None or (isinstance(ratio, float) and math.isnan(ratio))
        else f"{ratio:.3g}×"
    )

    def reach(key):
        e = n[key]
        mean = e.get("mean")
        return "never" if mean is None or mean > steps else f"in {text.interval(e, 'steps')}"

    return (
        f"The largest learning rate that trained was {lr(n['max_training_lr_bn'])} with BN and "
        f"{lr(n['max_training_lr_none'])} without ({ratio_txt}; the claim needs {LR_RATIO_MIN:g}×); at each "
        f"one's best rate BN reached {ACC_THRESHOLD:.0%} {reach('steps_to_threshold_bn')} and no BN "
        f"{reach('steps_to_threshold_none')}."
    )


def measure(run, cap: float) -> dict:
    """What one run contributes to the rule: whether it finished (neither failed nor diverged), its final
    accuracy (NaN if it did not) and its steps to ACC_THRESHOLD (NaN if it failed)."""
    if run is None:
        return {"finished": False, "acc": math.nan, "steps": math.nan}
    acc = math.nan if run.diverged else st.final(run, "test_acc")
    return {
        "finished": not run.diverged,
        "acc": acc,
        "steps": st.censored([st.steps_to(run, "test_acc", ACC_THRESHOLD)], cap)[0],
    }


def records(runs, configs) -> dict[int, dict]:
    """{seed: {(norm, lr): measure}}, each measure with the step count that stands for "never reached" (``cap``)."""
    cap = configs[0].steps + configs[0].eval_every
    return st.by_seed(configs, runs, lambda c: (c.norm, c.lr), lambda r: {**measure(r, cap), "cap": cap})


def compare(recs: list[dict], cap: float) -> dict:
    """The rule's quantities from per-seed records (any list of them, repeats allowed)."""
    lrs = sorted({lr for _, lr in recs[0]})
    max_lr, best_lr, curves = {}, {}, {}
    for norm in NORMS:
        means, cis, trains = [], [], []
        for lr in lrs:
            e = estimate([r[(norm, lr)]["acc"] for r in recs if not math.isnan(r[(norm, lr)]["acc"])])
            means.append(e.mean)
            cis.append(0.0 if math.isnan(e.ci) else e.ci)
            trains.append(all(r[(norm, lr)]["finished"] for r in recs) and e.mean >= TRAINS_MEAN_ACC)
        ok = [(lr, m) for lr, m, t in zip(lrs, means, trains) if t]
        max_lr[norm] = max((lr for lr, _ in ok), default=None)
        best_lr[norm] = max(ok, key=lambda p: p[1])[0] if ok else None
        curves[norm] = {"lr": lrs, "mean": means, "ci": cis, "trains": trains, "max_lr": max_lr[norm]}
    if max_lr["bn"] is None:
        ratio = math.nan
    elif max_lr["none"] is None:
        ratio = math.inf
    else:
        ratio = max_lr["bn"] / max_lr["none"]

    def steps(norm, r):  # a norm that trains at no rate never reaches the threshold
        return float(cap) if best_lr[norm] is None else r[(norm, best_lr[norm])]["steps"]

    pairs = [(steps("bn", r), steps("none", r)) for r in recs]
    pairs = [(a, b) for a, b in pairs if not (math.isnan(a) or math.isnan(b))]
    return {
        "max_lr": max_lr,
        "best_lr": best_lr,
        "curves": curves,
        "ratio": ratio,
        "bn_steps": [steps("bn", r) for r in recs if not math.isnan(steps("bn", r))],
        "none_steps": [steps("none", r) for r in recs if not math.isnan(steps("none", r))],
        "test": paired([a for a, _ in pairs], [b for _, b in pairs]),
    }


def _cap(recs: list[dict]) -> float:
    return next(iter(recs[0].values()))["cap"]


def lr_rule(recs: list[dict]) -> str:
    """The "higher learning rate" part of RULE on per-seed records."""
    return higher_lr(compare(recs, _cap(recs))["ratio"])


def steps_rule(recs: list[dict]) -> str:
    """The "fewer steps" part of RULE on per-seed records."""
    c = compare(recs, _cap(recs))
    return fewer_steps(c["test"].diff, estimate(c["none_steps"]).mean)


PARTS = (
    Part(
        "higher-lr",
        f"BN trains at learning rates at least {LR_RATIO_MIN:g}x higher",
        f"BN's largest training rate over no-BN's: at least {LR_RATIO_MIN:g}x.",
        lr_rule,
    ),
    Part(
        "fewer-steps",
        f"BN reaches {ACC_THRESHOLD:.0%} test accuracy in fewer steps",
        f"Steps to {ACC_THRESHOLD:.0%}, BN - no BN at each one's best rate (margin {STEPS_MARGIN.size:.0%} of no "
        f"BN's steps).",
        steps_rule,
        STEPS_MARGIN,
    ),
)


def rule(recs: list[dict]) -> str:
    """RULE on per-seed records: both parts."""
    return spec.all_of([lr_rule(recs), steps_rule(recs)])


def analyze(runs, ctx) -> ClaimResult:
    configs = sweep(ctx.quick, ctx.seeds)
    groups = st.group(runs, configs, key=lambda c: (c.norm, c.lr))
    lrs = sorted({c.lr for c in configs})
    seeds = sorted({c.seed for c in configs})
    steps = configs[0].steps
    cap = steps + configs[0].eval_every  # "never reached" counts as one interval past the end
    failed = sum(r is None for r in runs)
    recs = records(runs, configs)
    c = compare(list(recs.values()), cap)
    curves, max_lr, best_lr, ratio, test = c["curves"], c["max_lr"], c["best_lr"], c["ratio"], c["test"]
    bn_steps, none_steps, v = c["bn_steps"], c["none_steps"], rule(list(recs.values()))

    def fmt_lr(lr):
        return "none" if lr is None else f"{lr:g}"

    ratio_txt = "n/a" if math.isnan(ratio) else ("∞ (only BN trains)" if math.isinf(ratio) else f"{ratio:.3g}x")
    summary = (
        f"On the MNIST-1D CNN with SGD (momentum 0.9, {steps} steps, {len(seeds)} seeds per rate), the largest "
        f"learning rate that trains is {fmt_lr(max_lr['bn'])} with BN and {fmt_lr(max_lr['none'])} without "
        f"(ratio {ratio_txt}; the claim needs >= {LR_RATIO_MIN:g}x). At each norm's best rate (BN "
        f"{fmt_lr(best_lr['bn'])}, no BN {fmt_lr(best_lr['none'])}) BN needs "
        f"{text.interval(estimate(bn_steps), 'steps')} to reach {ACC_THRESHOLD:.0%} test accuracy "
        f"and no BN {text.interval(estimate(none_steps), 'steps')}; "
        f"the per-seed difference is {text.interval(test.diff, 'steps diff')}."
        + (f" {failed} run(s) failed and were left out." if failed else "")
    )
    rows = []
    for cfg, r in zip(configs, runs):
        row = {"norm": cfg.norm, "lr": cfg.lr, "seed": cfg.seed, "status": "failed" if r is None else r.status}
        if r is not None:
            row.update(
                diverged_step=r.diverged_step,
                final_test_acc=st.final(r, "test_acc"),
                steps_to_threshold=st.steps_to(r, "test_acc", ACC_THRESHOLD),
            )
        rows.append(row)
    result = spec.result(
        __name__,
        verdict=v,
        summary=summary,
        setup={
            "data": "mnist1d",
            "model": "cnn (conv-norm-relu)",
            "norms": list(NORMS),
            "lrs": lrs,
            "optimizer": "sgd, momentum 0.9, constant lr",
            "batch_size": BASE.batch_size,
            "steps": steps,
            "eval_every": configs[0].eval_every,
            "seeds": seeds,
            "quick": ctx.quick,
            "acc_threshold": ACC_THRESHOLD,
            "trains_mean_acc": TRAINS_MEAN_ACC,
            "failed_runs": failed,
        },
        numbers={
            "max_training_lr_bn": max_lr["bn"],
            "max_training_lr_none": max_lr["none"],
            "lr_ratio": ratio,
            "best_lr_bn": best_lr["bn"],
            "best_lr_none": best_lr["none"],
            "steps_to_threshold_bn": estimate(bn_steps).to_json(),
            "steps_to_threshold_none": estimate(none_steps).to_json(),
            "steps_diff_bn_minus_none": test.to_json(),
            "final_test_acc_at_best_lr": {
                norm: estimate(
                    [st.final(r, "test_acc") for _, r in groups[(norm, best_lr[norm])] if r is not None]
                ).to_json()
                if best_lr[norm] is not None
                else None
                for norm in NORMS
            },
            "failed_runs": failed,
        },
        figures=[
            FigureSpec(
                "accuracy_vs_lr",
                "Final test accuracy vs learning rate",
                {"norms": list(NORMS), "curves": curves},
                _draw,
                "Mean final test accuracy over the seeds that finished (bars: 95% interval); an x "
                "under the 0% line marks a rate that does not train (a seed diverged, or the seeds "
                f"ended under {TRAINS_MEAN_ACC:.0%} on average); dashed lines mark each one's largest rate "
                "that trains.",
            )
        ],
        rows=rows,
        labels=LABELS,
    )
    result.finding = finding(result.numbers, steps)
    return spec.settle(__name__, result, recs, rule)
