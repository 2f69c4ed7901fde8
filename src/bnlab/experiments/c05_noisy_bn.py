"""C5: "noisy BN" -- injected covariate shift after each BN barely hurts (Santurkar et al. 2018, §2.1).

MNIST-1D's reference CNN (conv-norm-ReLU) with BN, with BN followed by Santurkar's random per-step
affine distortion (``noisy_bn``, :mod:`bnlab.models.noisy_bn`), and without a norm; same SGD
settings, paired by seed (same data order and initial conv/linear weights). Final test accuracy and
final training loss (in eval mode on the first 1000 training examples, so noisy BN's noise, which
is off in eval, does not inflate it) are compared per seed.
"""

from __future__ import annotations

import dataclasses
import math

from ..train.config import RunConfig
from . import series_tools as st
from . import spec, text
from .plotting import legend_below, log_ticks, percent_axis
from .result import ClaimResult, FigureSpec, Label
from .spec import Part, Seeds
from .stats import estimate, holm, paired

ID = "C5"
NAME = "noisy-bn"
TITLE = "Noisy BN (random shifts injected after every BN) trains as well as BN and better than no BN"
QUESTION = "If I inject covariate shift after BN, does it still help?"
CLAIM = (
    "Adding random per-step shifts and scales after each BN layer (μ_t ~ U(-0.5, 0.5), σ_t ~ U(1, 1.25), "
    "per element m ~ U(μ_t±0.1), s ~ N(σ_t, 0.1)) barely changes training: on CIFAR-10 VGG, noisy BN trains "
    "nearly as well as BN (83%) and better than no BN (80%)."
)
SOURCE = "Santurkar et al. 2018, How Does Batch Normalization Help Optimization?, §2.1, Fig. 2 (arXiv:1805.11604)"

# ---- the sweep -----------------------------------------------------------------------------------
NORMS = ("bn", "noisy_bn", "none")
FULL = dict(steps=1500, eval_every=150)
QUICK = dict(steps=80, eval_every=40)
BASE = RunConfig(data="mnist1d", model="cnn", optimizer="sgd", lr=0.1, momentum=0.9, batch_size=100, eval_samples=1000)

# ---- the verdict rule (fixed before running) ---------------------------------------------------
ACC_MARGIN = 0.01  # "within seed noise" also when |mean accuracy difference| < 1 point ...
LOSS_MARGIN = 0.02  # ... or |mean training-loss difference| < 0.02 nats
ALPHA = 0.05  # Holm-adjusted paired t-test level for "beats no BN" (two comparisons)
RULE = (
    f"Noisy BN is within seed noise of BN if, for final test accuracy and for final training loss "
    f"(eval mode), the 95% CI of the per-seed difference noisy - BN contains 0 or its mean is smaller than "
    f"{ACC_MARGIN * 100:g} point / {LOSS_MARGIN:g} nats. BN and noisy BN each beat no BN if their per-seed "
    f"test-accuracy gain over no BN is positive with a Holm-adjusted (2 comparisons) paired t-test "
    f"p < {ALPHA:g}. Reproduced if noisy BN is within noise of BN on both metrics and both beat no BN. Not "
    f"reproduced if noisy BN is outside seed noise and worse than BN on either metric, or if BN or noisy BN "
    f"does no better than no BN on average. Inconclusive otherwise."
)


# Seeds in rounds of 8, a whole group (bnlab.train.seeds.GROUP_WIDTH; the three settings train in groups, noisy BN
# too), to 16. 8 seeds first: with 6 a full run's verdict was stable in 83% of resamples only; with 8, 98%. But
# the part that the report's answer on what BN buys quotes (BN beats no BN) sat near its line at 8: stable in 100%
# of resamples in one edition and in 73% in the next, whose runs differed only in the last bits of the seed groups'
# first-layer bias gradient (SGD with momentum at lr 0.1 carries such differences into other trajectories), with
# about 15 seeds projected; a second round of 8 (about 60 s of run time) settles it there. The third part (noisy
# BN beats no BN, whose effect is about zero) does not settle at any count a rule of significance can reach, so
# the claim stops at the cap.
SEEDS = Seeds(start=8, step=8, cap=16, cluster_cap=32)


def sweep(quick: bool, seeds: int | None = None) -> list[RunConfig]:
    cfg = QUICK if quick else FULL
    base = dataclasses.replace(BASE, steps=cfg["steps"], eval_every=cfg["eval_every"])
    n_seeds = seeds or (SEEDS.quick if quick else SEEDS.start)
    return [dataclasses.replace(base, norm=norm, seed=seed) for norm in NORMS for seed in range(n_seeds)]


def within_noise(diff, margin: float) -> bool:
    """``diff`` (an Estimate) is seed noise: its CI contains 0 or its mean is below ``margin``."""
    if abs(diff.mean) < margin:
        return True
    return math.isnan(diff.ci) or diff.low <= 0 <= diff.high


def verdict(acc_diff, loss_diff, gain_bn, gain_noisy, p_bn: float, p_noisy: float) -> str:
    """acc_diff / loss_diff: Estimates of noisy - BN (accuracy, loss); gain_*: Estimates of X - none in
    test accuracy; p_*: their Holm-adjusted paired p-values."""
    acc_ok, loss_ok = within_noise(acc_diff, ACC_MARGIN), within_noise(loss_diff, LOSS_MARGIN)
    noisy_worse = (not acc_ok and acc_diff.mean < 0) or (not loss_ok and loss_diff.mean > 0)
    if noisy_worse or gain_bn.mean <= 0 or gain_noisy.mean <= 0:
        return "not reproduced"
    beats = all(g.mean > 0 and not math.isnan(p) and p < ALPHA for g, p in ((gain_bn, p_bn), (gain_noisy, p_noisy)))
    if acc_ok and loss_ok and beats:
        return "reproduced"
    return "inconclusive"


_NAMES = {"noisy_bn": "noisy BN", "bn": "BN", "none": "no BN"}


def _draw(data):
    import matplotlib.pyplot as plt

    panels = [("bands", "training loss (eval mode, 1000 examples)")]
    if data.get("acc_bands"):
        panels.append(("acc_bands", "test accuracy"))
    fig, axes = plt.subplots(1, len(panels), figsize=(7, 3.4), squeeze=False)
    for ax, (key, ylabel) in zip(axes[0], panels):
        scale = 100 if key == "acc_bands" else 1
        for norm, color in zip(data["norms"], ("tab:blue", "tab:orange", "tab:gray")):
            b = data[key][norm]
            ax.plot(b["step"], [scale * v for v in b["mean"]], color=color, label=_NAMES.get(norm, norm))
            ax.fill_between(
                b["step"], [scale * v for v in b["low"]], [scale * v for v in b["high"]], color=color, alpha=0.2, lw=0
            )
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if key == "bands":
            ax.set_yscale("log")
            log_ticks(ax)
        else:
            percent_axis(ax, limits=None)
    fig.tight_layout()
    legend_below(fig, axes=[axes[0][0]], title="line: mean over seeds; band: lowest to highest seed")
    return fig


LABELS = {
    "test_acc": Label("Final test accuracy", "%"),
    "noisy_minus_bn_test_acc": Label("Test accuracy, noisy BN − BN (paired by seed)", "points"),
    "noisy_minus_bn_train_loss": Label("Training loss, noisy BN − BN (paired by seed)", "nats"),
    "bn_minus_none_test_acc": Label("Test accuracy, BN − no BN (paired by seed)", "points"),
    "noisy_minus_none_test_acc": Label("Test accuracy, noisy BN − no BN (paired by seed)", "points"),
    "failed_runs": Label("Runs that failed", "count", detail=True),
}


def finding(n: dict) -> str:
    acc = n["test_acc"]
    cost = text.compare(
        n["noisy_minus_bn_test_acc"],
        "the injected shift raised accuracy",
        "the injected shift cost accuracy",
        "the injected shift cost no measurable accuracy",
    )
    gain = text.compare(
        n["noisy_minus_none_test_acc"],
        "noisy BN still beat no BN",
        "noisy BN lost to no BN",
        "noisy BN did no measurably better than no BN",
    )
    return (
        f"Final test accuracy: BN {text.interval(acc['bn'], '%')}, noisy BN "
        f"{text.interval(acc['noisy_bn'], '%')}, no BN {text.interval(acc['none'], '%')}; noisy BN − BN "
        f"{text.interval(n['noisy_minus_bn_test_acc'], 'points')}: {cost}, and {gain}."
    )


def records(runs, configs) -> dict[int, dict]:
    """{seed: {norm: (final test accuracy, final training loss)}} (None: failed or diverged)."""
    return st.by_seed(
        configs,
        runs,
        lambda c: c.norm,
        lambda r: None if r is None or r.diverged else (st.final(r, "test_acc"), st.final(r, "train_eval_loss")),
    )


def compare(recs: list[dict]) -> dict:
    """The rule's paired comparisons from per-seed records (any list of them, repeats allowed)."""

    def pair(i, a, b):
        both = [(r[a][i], r[b][i]) for r in recs if r[a] is not None and r[b] is not None]
        return paired([x for x, _ in both], [y for _, y in both])

    out = {
        "acc": pair(0, "noisy_bn", "bn"),
        "loss": pair(1, "noisy_bn", "bn"),
        "gain_bn": pair(0, "bn", "none"),
        "gain_noisy": pair(0, "noisy_bn", "none"),
    }
    out["p_bn"], out["p_noisy"] = holm(
        [1.0 if math.isnan(t.p_t) else t.p_t for t in (out["gain_bn"], out["gain_noisy"])]
    )
    return out


def rule(recs: list[dict]) -> str:
    """RULE on per-seed records."""
    c = compare(recs)
    return verdict(c["acc"].diff, c["loss"].diff, c["gain_bn"].diff, c["gain_noisy"].diff, c["p_bn"], c["p_noisy"])


def harmless(acc_diff, loss_diff) -> str:
    """The part "the noise costs nothing": noisy BN within seed noise of BN on both metrics."""
    acc_ok, loss_ok = within_noise(acc_diff, ACC_MARGIN), within_noise(loss_diff, LOSS_MARGIN)
    if (not acc_ok and acc_diff.mean < 0) or (not loss_ok and loss_diff.mean > 0):
        return "not reproduced"
    return "reproduced" if acc_ok and loss_ok else "inconclusive"


def beats_none(gain, p: float) -> str:
    """The parts "X beats no BN": the gain in test accuracy and its Holm-adjusted p."""
    if gain.mean <= 0:
        return "not reproduced"
    return "reproduced" if not math.isnan(p) and p < ALPHA else "inconclusive"


def _harmless_rule(recs: list[dict]) -> str:
    c = compare(recs)
    return harmless(c["acc"].diff, c["loss"].diff)


def _bn_rule(recs: list[dict]) -> str:
    c = compare(recs)
    return beats_none(c["gain_bn"].diff, c["p_bn"])


def _noisy_rule(recs: list[dict]) -> str:
    c = compare(recs)
    return beats_none(c["gain_noisy"].diff, c["p_noisy"])


# The rule read part by part (the claim holds when all three do: the same rule as RULE).
PARTS = (
    Part(
        "harmless",
        "Noisy BN trains as well as BN",
        f"Noisy BN - BN within seed noise on test accuracy ({ACC_MARGIN * 100:g} point) and training loss "
        f"({LOSS_MARGIN:g} nats).",
        _harmless_rule,
    ),
    Part(
        "bn-beats-none",
        "BN beats no BN",
        f"BN - no BN test accuracy, paired by seed: positive with Holm-adjusted p < {ALPHA:g}.",
        _bn_rule,
    ),
    Part(
        "noisy-beats-none",
        "Noisy BN beats no BN",
        f"Noisy BN - no BN test accuracy, paired by seed: positive with Holm-adjusted p < {ALPHA:g}.",
        _noisy_rule,
    ),
)


def analyze(runs, ctx) -> ClaimResult:
    configs = sweep(ctx.quick, ctx.seeds)
    groups = st.group(runs, configs, key=lambda c: c.norm)
    seeds = sorted({c.seed for c in configs})
    failed = sum(r is None for r in runs)
    recs = records(runs, configs)
    c = compare(list(recs.values()))
    acc_diff, loss_diff, gain_bn, gain_noisy = c["acc"], c["loss"], c["gain_bn"], c["gain_noisy"]
    p_bn, p_noisy, v = c["p_bn"], c["p_noisy"], rule(list(recs.values()))
    acc = {n: {s: r[n][0] for s, r in recs.items() if r[n] is not None} for n in NORMS}
    means = {n: estimate(list(acc[n].values())) for n in NORMS}
    summary = (
        f"MNIST-1D CNN, SGD lr {BASE.lr:g} (momentum {BASE.momentum:g}), {configs[0].steps} steps, {len(seeds)} "
        f"seeds. Final test accuracy: BN {text.interval(means['bn'], '%')}, "
        f"noisy BN {text.interval(means['noisy_bn'], '%')}, "
        f"no BN {text.interval(means['none'], '%')}. Noisy − BN per seed: "
        f"{text.interval(acc_diff.diff, 'points')} of accuracy and {text.interval(loss_diff.diff, 'nats')} of "
        f"training loss. Gain over no BN: BN {text.interval(gain_bn.diff, 'points')} (Holm p = {p_bn:.2g}), "
        f"noisy BN {text.interval(gain_noisy.diff, 'points')} (Holm p = {p_noisy:.2g})."
        + (f" {failed} run(s) failed and were left out." if failed else "")
    )
    rows = []
    for cfg, r in zip(configs, runs):
        row = {"norm": cfg.norm, "seed": cfg.seed, "status": "failed" if r is None else r.status}
        if r is not None:
            row.update(final_test_acc=st.final(r, "test_acc"), final_train_eval_loss=st.final(r, "train_eval_loss"))
        rows.append(row)
    bands = {n: st.mean_band([r for _, r in groups[n]], "train_eval_loss") for n in NORMS}
    acc_bands = {n: st.mean_band([r for _, r in groups[n]], "test_acc") for n in NORMS}
    result = spec.result(
        __name__,
        verdict=v,
        summary=summary,
        setup={
            "data": "mnist1d",
            "model": "cnn (conv-norm-relu)",
            "norms": list(NORMS),
            "optimizer": f"sgd lr {BASE.lr:g}, momentum {BASE.momentum:g}",
            "batch_size": BASE.batch_size,
            "steps": configs[0].steps,
            "seeds": seeds,
            "quick": ctx.quick,
            "failed_runs": failed,
        },
        numbers={
            "test_acc": {n: means[n].to_json() for n in NORMS},
            "noisy_minus_bn_test_acc": acc_diff.to_json(),
            "noisy_minus_bn_train_loss": loss_diff.to_json(),
            "bn_minus_none_test_acc": {**gain_bn.to_json(), "p_holm": p_bn},
            "noisy_minus_none_test_acc": {**gain_noisy.to_json(), "p_holm": p_noisy},
            "failed_runs": failed,
        },
        figures=[
            FigureSpec(
                "train_loss",
                "Training loss and test accuracy: BN, noisy BN, no BN",
                {"norms": list(NORMS), "bands": bands, "acc_bands": acc_bands},
                _draw,
                "Left: training loss in eval mode on 1000 training examples (log scale); right: "
                "test accuracy. Mean over seeds with the lowest-to-highest band.",
            )
        ],
        rows=rows,
        labels=LABELS,
    )
    result.finding = finding(result.numbers)
    return spec.settle(__name__, result, recs, rule)
