"""C13: re-estimating BN's statistics on shifted data recovers much of the accuracy the shift costs.

Li et al. 2016 (AdaBN) replace the source running statistics with the target data's; Nado et al.
2020 and Schneider et al. 2020 normalize with each test batch's statistics; TENT's reference code
(Wang et al. 2021, github.com/DequanWang/tent) reports for CIFAR-10-C at severity 5 with a
WRN-28-10: 43.5% mean error without adaptation, 20.4% with test-batch statistics ("norm").

Small analogue (:mod:`bnlab.experiments.shift_runs`): the MNIST-1D CNN with BN, trained on clean
data, then tested on ``mnist1d-c`` -- six corruptions (three of the generator's knobs: noise, shear,
amplitude spread; three sensor ones: gain, offset, contrast) at five severities -- without
adaptation, with test-batch statistics (batches of 100) and with AdaBN (statistics of the whole
unlabeled test set, then eval mode). Paired by seed: every method works on the same trained model.
The small-batch measurements say where re-estimating hurts: clean data, batches of a few samples,
statistics from a few samples.
"""

from __future__ import annotations

import math
from typing import Any

from . import shift_runs as S
from . import spec, stability, stats, text
from .plotting import legend_below, percent_axis
from .probes import shift_eval as probe
from .result import ClaimResult, FigureSpec

ID = "C13"
NAME = "adapt-bn-statistics"
TITLE = "Re-estimating BN's statistics on the shifted data (AdaBN) wins back more than half of the accuracy lost"
QUESTION = "My model does worse on shifted data: does re-estimating BN's statistics on that data win the accuracy back?"
CLAIM = (
    "Re-estimating batch norm's statistics on unlabeled data of the new domain (AdaBN; test-time batch "
    "statistics) recovers much of the accuracy lost to covariate shift, with no labels and no training: "
    "on CIFAR-10-C at severity 5 a WRN-28-10's mean error falls from 43.5% to 20.4%."
)
SOURCE = (
    "Li et al. 2016, AdaBN (arXiv:1603.04779); Nado et al. 2020 (arXiv:2006.10963); Schneider et al. "
    "2020 (arXiv:2006.16971); Wang et al. 2021, TENT, ICLR (arXiv:2006.10726), reference code's "
    "CIFAR-10-C table ('norm' row)"
)

# ---- the verdict rule (stated before the runs) ---------------------------------------------------
MUCH = 50.0  # "much of": at least half of the error the shift adds
RULE = (
    f"At severity {S.TOP}, per seed, the mean test error over the {len(S.CORRUPTIONS)} corruptions without "
    f"adaptation (E_src) and with AdaBN (E_ada), and the clean test error without adaptation (E_clean); "
    f"the share recovered is (E_src − E_ada) / (E_src − E_clean). Paired by seed, 95% t-intervals. "
    f"Reproduced if the interval of E_ada − E_src lies below 0 and the interval of the share recovered "
    f"lies above {MUCH:g}%. Not reproduced if the interval of E_ada − E_src lies at or above 0, or the "
    f"share's interval lies below {MUCH:g}%. Inconclusive otherwise. Test-batch statistics are reported "
    "the same way, outside the verdict."
)


def verdict(change: stats.Estimate, share: stats.Estimate) -> str:
    """``change``: E_ada − E_src in points (negative: AdaBN better); ``share``: the share recovered in %."""
    if math.isnan(change.ci) or math.isnan(share.ci):
        return "inconclusive"
    if change.low >= 0 or share.high < MUCH:
        return "not reproduced"
    if change.high < 0 and share.low > MUCH:
        return "reproduced"
    return "inconclusive"


sweep = S.sweep
SMALL_KEY = f"Small batches and few samples (first {probe.SUBSET} test examples)"


def _small_batch_numbers(runs: list) -> dict:
    """Clean data and severity-5 mean: test-batch and prior at tiny batches, AdaBN from few samples."""
    out = {}
    for where, sets in (("clean data", ["clean"]), (f"severity {S.TOP}, mean of corruptions", list(S.CORRUPTIONS))):
        level = 0 if where == "clean data" else S.TOP

        def mean(key, level=level, sets=sets):
            return [sum(S.metric(r, c, level, key) for c in sets) / len(sets) for r in runs]

        block = {"no adaptation (%)": S.est(mean("subset_source"))}
        for b in probe.SMALL_BATCHES:
            block[f"test-batch statistics, batches of {b} (%)"] = S.est(mean(f"test_batch@{b}"))
        for b in probe.SMALL_BATCHES:
            block[f"with the source prior N={probe.PRIOR}, batches of {b} (%)"] = S.est(mean(f"prior@{b}"))
        for n in probe.FEW_SAMPLES:
            block[f"AdaBN from {n} samples (%)"] = S.est(mean(f"adabn@{n}"))
        out[where] = block
    return out


def records(runs, configs, quick: bool) -> dict:
    """{seed: (E_src, E_ada, share recovered or NaN)} at the top severity (None: not usable)."""
    top = max(S.plan(quick)["severities"])

    def measure(r):
        share = S.recovered([r], "adabn", top)
        return (S.values([r], "source", top)[0], S.values([r], "adabn", top)[0], share[0] if share else math.nan)

    return S.records(runs, configs, quick, measure)


def compare(recs: list) -> tuple[stats.Estimate, stats.Estimate, int]:
    """(E_ada − E_src paired by seed, the share recovered, usable seeds)."""
    good = [r for r in recs if r is not None]
    change = stats.paired([r[1] for r in good], [r[0] for r in good]).diff if len(good) >= 2 else stats.estimate([])
    return change, stats.estimate([r[2] for r in good if not math.isnan(r[2])]), len(good)


def rule(recs: list) -> str:
    """RULE on per-seed records."""
    change, share, n = compare(recs)
    return verdict(change, share) if n >= 2 else "inconclusive"


def analyze(runs, ctx) -> ClaimResult:
    p = S.plan(ctx.quick)
    configs = sweep(ctx.quick, ctx.seeds)
    good, bad = S.usable(runs, ctx.quick)
    failed = len(configs) - len(good)
    top = max(p["severities"])
    src, ada, tb = (S.values(good, m, top) for m in ("source", "adabn", "test_batch"))
    clean = [S.metric(r, "clean", 0, "source") for r in good]
    recs = records(runs, configs, ctx.quick)
    stab = stability.assess(recs, rule)
    change, share, _ = compare(list(recs.values()))
    share_tb = stats.estimate(S.recovered(good, "test_batch", top))
    v = stab.verdict
    clean_ada = stats.paired([S.metric(r, "clean", 0, "adabn") for r in good], clean).diff
    clean_tb = stats.paired([S.metric(r, "clean", 0, "test_batch") for r in good], clean).diff
    worse = [
        S.CORRUPTION_LABELS[c]
        for c in S.CORRUPTIONS
        if stats.paired(S.values(good, "adabn", top, c), S.values(good, "source", top, c)).diff.low > 0
    ]
    by_corruption = {S.CORRUPTION_LABELS[c]: stats.estimate(S.recovered(good, "adabn", top, c)) for c in S.CORRUPTIONS}
    numbers: dict[str, Any] = {
        "Clean test error, no adaptation (%)": S.est(clean),
        f"Mean error at severity {top} (%)": {S.METHODS[m]: S.est(S.values(good, m, top)) for m in S.MAIN_METHODS},
        f"AdaBN minus no adaptation at severity {top} (points)": change.to_json(),
        f"Share of the lost accuracy AdaBN recovers at severity {top} (%)": share.to_json(),
        f"Share recovered by test-batch statistics at severity {top} (%)": share_tb.to_json(),
        f"Share AdaBN recovers at severity {top}, by corruption (%)": {
            k: e.to_json() for k, e in by_corruption.items()
        },
        f"Error at severity {top} by corruption (%)": S.corruption_table(good, top),
        "Mean error by severity (%)": S.severity_table(good, p["severities"]),
        "Clean data: AdaBN minus no adaptation (points)": clean_ada.to_json(),
        "Clean data: test-batch statistics minus no adaptation (points)": clean_tb.to_json(),
        "Failed or diverged runs": failed,
    }
    small = p["small"] and good and not math.isnan(S.metric(good[0], "clean", 0, "test_batch@1"))
    if small:
        numbers[SMALL_KEY] = _small_batch_numbers(good)
    summary = (
        f"Trained on clean MNIST-1D, the CNN with BN errs on {text.interval(stats.estimate(clean), 'pct')} of the "
        f"clean test set and on {text.interval(stats.estimate(src), 'pct')} of the shifted sets at severity {top} "
        f"(mean of {len(S.CORRUPTIONS)} corruptions, {len(good)} seeds). With AdaBN's re-estimated statistics the "
        f"error is {text.interval(stats.estimate(ada), 'pct')}, with test-batch statistics "
        f"{text.interval(stats.estimate(tb), 'pct')}: AdaBN takes back {text.interval(share, 'share')} of the error "
        f"the shift added (test-batch statistics {text.interval(share_tb, 'share')}). By corruption: "
        f"{_shares(by_corruption)}"
        + (f"; it is worse than no adaptation on {_and(worse)}" if worse else "")
        + f". On clean data AdaBN changes the error by {S.signed(clean_ada, 1)}."
    )
    if small:
        summary += " " + _small_batch_sentence(numbers[SMALL_KEY], top)
    if failed:
        summary += f" {failed} run(s) failed, diverged or are incomplete and are left out."
    setup = {
        "data": "mnist1d (train clean), mnist1d-c (test shifted)",
        "model": "cnn (conv-BN-ReLU x3)",
        "optimizer": "adam",
        "lr": S.BASE.lr,
        "batch_size": S.BASE.batch_size,
        "steps": p["steps"],
        "corruptions": [S.CORRUPTION_LABELS[c] for c in S.CORRUPTIONS],
        "severities": list(p["severities"]),
        "test batch": probe.BATCH,
        "AdaBN": "population statistics of the whole shifted test set",
        "TENT": f"online, Adam lr {probe.TENT_LR:g}, one step per batch of {probe.BATCH}",
        "seeds": sorted(c.seed for c in configs),
        "quick": ctx.quick,
    }
    figs = [
        FigureSpec(
            "error_by_severity",
            "Mean test error over the corruptions, by severity",
            {"table": S.severity_table(good, p["severities"]), "clean": stats.estimate(clean).mean},
            draw_by_severity,
            "Mean and 95% CI over seeds; dashed: clean data without adaptation.",
        ),
        FigureSpec(
            "error_by_corruption",
            f"Test error at severity {top}, by corruption",
            {"table": S.corruption_table(good, top), "clean": stats.estimate(clean).mean, "severity": top},
            S.draw_by_corruption,
            "Mean and 95% CI over seeds (TENT's table, as a figure).",
        ),
    ]
    if small:
        figs.append(
            FigureSpec(
                "small_batches",
                "Where re-estimating hurts: tiny test batches",
                {"table": numbers[SMALL_KEY], "batches": list(probe.SMALL_BATCHES), "prior": probe.PRIOR},
                draw_small_batches,
                "Mean and 95% CI over seeds; dashed: no adaptation.",
            )
        )
    finding = (
        (
            f"At severity {top} the mean error went from {text.interval(stats.estimate(src), 'pct')} without "
            f"adaptation to {text.interval(stats.estimate(ada), 'pct')} with AdaBN (clean data: "
            f"{text.interval(stats.estimate(clean), 'pct')}): AdaBN won back {text.interval(share, 'share')} of "
            f"the error the shift added."
        )
        if good
        else "No run finished, so nothing was measured."
    )
    claim = spec.result(
        __name__,
        verdict=v,
        summary=summary,
        setup=setup,
        numbers=numbers,
        figures=figs,
        rows=S.rows(good, p["severities"]),
        finding=finding,
        labels=S.labels(numbers),
    )
    return spec.settle(__name__, claim, recs, rule, stab)


def _small_batch_sentence(table: dict, top: int) -> str:
    """Where re-estimating hurts, from the small-batch numbers (clean data and severity ``top``)."""
    clean, shifted = (table[k] for k in table)

    def pct(block, key):
        return f"{S.estimate_of(block[key]).mean:.0f}%"

    small, big = probe.SMALL_BATCHES[0], probe.SMALL_BATCHES[-1]
    tb = "test-batch statistics, batches of {} (%)"
    prior = f"with the source prior N={probe.PRIOR}, batches of {{}} (%)"
    few, more = probe.FEW_SAMPLES[1], probe.FEW_SAMPLES[-1]
    ada = "AdaBN from {} samples (%)"
    return (
        f"Where it hurts: test-batch statistics need batches -- on clean data batches of "
        f"{', '.join(str(b) for b in probe.SMALL_BATCHES)} give "
        f"{', '.join(pct(clean, tb.format(b)) for b in probe.SMALL_BATCHES)} error against "
        f"{pct(clean, 'no adaptation (%)')} without adaptation. Schneider et al.'s prior (N={probe.PRIOR}) "
        f"keeps clean data at {pct(clean, prior.format(small))} with batches of {small}, but at severity {top} "
        f"it leaves {pct(shifted, prior.format(small))} (batches of {small}) to {pct(shifted, prior.format(big))} "
        f"(batches of {big}) against {pct(shifted, tb.format(big))} without the prior and "
        f"{pct(shifted, 'no adaptation (%)')} without adaptation. AdaBN from {few} samples gives "
        f"{pct(clean, ada.format(few))} on clean data and {pct(shifted, ada.format(few))} at severity {top}, "
        f"from {more} samples {pct(clean, ada.format(more))} and {pct(shifted, ada.format(more))}."
    )


def _shares(by_corruption: dict) -> str:
    """'gain 100%, offset 99%, ...' from the most to the least recovered."""
    ranked = sorted(by_corruption.items(), key=lambda kv: -kv[1].mean if kv[1].n else math.inf)
    return ", ".join(f"{k} {e.mean:.0f}%" for k, e in ranked if e.n)


def answer(c13: ClaimResult, c14: ClaimResult | None = None) -> str:
    """The plain-words answer to "My model does worse on new data -- can batch norm help?", with this
    run's numbers, a recommendation and the bnlab code (for the report's answers section)."""
    n = c13.numbers
    top = next(k for k in n if k.startswith("Mean error at severity"))
    sev = top.split("severity ")[1].split(" ")[0]
    table = n[top]
    src, ada, tb = (S.estimate_of(table[S.METHODS[m]]) for m in ("source", "adabn", "test_batch"))
    clean = S.estimate_of(n["Clean test error, no adaptation (%)"])
    shares = {k: S.estimate_of(v) for k, v in n[f"Share AdaBN recovers at severity {sev}, by corruption (%)"].items()}
    most = [k for k, e in shares.items() if e.mean >= 75]
    little = [k for k, e in shares.items() if e.mean < 25]
    parts = ([f"nearly all of the loss under {_and(most)}"] if most else []) + (
        [f"less than a quarter under {_and(little)}"] if little else []
    )
    text = (
        f"Often, if the new data differ in their statistics: re-estimating batch norm's statistics on unlabeled "
        f"new data (AdaBN) took our MNIST-1D CNN's error on shifted data (severity {sev}, mean of {len(shares)} "
        f"corruptions) from {src.mean:.0f}% to {ada.mean:.0f}% (clean data: {clean.mean:.0f}%)"
        + (f", winning back {' but '.join(parts)}" if parts else "")
    )
    if c14 is not None and c14.numbers.get(top):
        tent = S.estimate_of(c14.numbers[top][S.METHODS["tent"]])
        effect = {
            "reproduced": "lowered it further",
            "not reproduced": "did not lower it",
            "inconclusive": "added nothing measurable",
            "underpowered": "gave no settled answer with these seeds",
        }[c14.verdict]
        text += f"; TENT's extra γ/β training {effect} ({tent.mean:.0f}%)"
    text += "."
    few = n.get(SMALL_KEY)
    k = probe.FEW_SAMPLES[-1]
    tiny = probe.SMALL_BATCHES[2]
    sample_note = batch_note = ""
    if few:
        clean_blk, shifted_blk = (few[key] for key in few)
        sample_note = f" ({k} gave {S.estimate_of(shifted_blk[f'AdaBN from {k} samples (%)']).mean:.0f}%)"
        at_tiny = S.estimate_of(clean_blk[f"test-batch statistics, batches of {tiny} (%)"]).mean
        batch_note = f" (batches of {tiny}: {at_tiny:.0f}% error on clean data)"
    text += (
        f' Use `bnlab.adapt(model, new_data_loader, method="stats")` with a few dozen unlabeled samples or '
        f"more{sample_note}, then predict in eval mode; do not normalize with the statistics of test batches "
        f"of a few samples{batch_note}."
    )
    if c13.verdict == "underpowered":
        text = "What the sources report; this run's seeds do not settle it (underpowered). " + text
    return text


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def draw_by_severity(data: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    levels = list(data["table"])
    xs = [int(s.split()[-1]) for s in levels]
    methods = list(next(iter(data["table"].values())))
    for j, method in enumerate(methods):
        cells = [data["table"][s][method] for s in levels]
        mean = [c.get("mean", math.nan) for c in cells]
        lo = [max(0.0, c.get("ci95", [m, m])[0]) for c, m in zip(cells, mean)]
        hi = [min(100.0, c.get("ci95", [m, m])[1]) for c, m in zip(cells, mean)]
        ax.errorbar(
            xs,
            mean,
            yerr=[[m - a for m, a in zip(mean, lo)], [b - m for m, b in zip(mean, hi)]],
            marker="o",
            capsize=3,
            color=f"C{j}",
            label=method,
        )
    ax.axhline(data["clean"], color="k", ls="--", lw=1, label="clean data")
    ax.set_xticks(xs)
    ax.set_xlabel("severity")
    ax.set_ylabel("test error")
    percent_axis(ax, limits=None)
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    legend_below(fig, ncol=5)
    return fig


def draw_small_batches(data: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    batches = data["batches"]
    for ax, (where, block) in zip(axes, data["table"].items()):
        for j, (prefix, label) in enumerate(
            (
                ("test-batch statistics, batches of", "test-batch statistics"),
                (f"with the source prior N={data['prior']}, batches of", f"with prior N={data['prior']}"),
            )
        ):
            cells = [block[f"{prefix} {b} (%)"] for b in batches]
            mean = [c.get("mean", math.nan) for c in cells]
            err = [
                [m - c.get("ci95", [m, m])[0] for c, m in zip(cells, mean)],
                [c.get("ci95", [m, m])[1] - m for c, m in zip(cells, mean)],
            ]
            ax.errorbar(batches, mean, yerr=err, marker="o", capsize=3, color=f"C{j + 1}", label=label)
        ax.axhline(block["no adaptation (%)"].get("mean", math.nan), color="k", ls="--", lw=1, label="no adaptation")
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("test batch size")
        ax.set_title(where)
    axes[0].set_ylabel("test error")
    percent_axis(axes[0], limits=None)
    fig.tight_layout()
    legend_below(fig, axes=[axes[0]])
    return fig
