"""Does stopping the seed rounds early inflate the stability? A simulation of bnlab's stopping rule.

A verdict rule of the lab's kind (:func:`bnlab.experiments.stats.effect`: a paired difference judged
against 0 and a margin of 1) on seeds drawn from a normal distribution whose mean puts the verdict near
a line. The experiment runs seed rounds (the plan below) and stops at the first look where the two-stage
bootstrap's stability reaches the look's threshold. For every simulated experiment that reports a
stable verdict, the *true* probability that a fresh experiment with as many seeds gives the same verdict
is computed by Monte Carlo from the known distribution. Compared: a fixed number of seeds (the cap),
rounds that stop at the usual threshold at every look, rounds that stop at an interim look only at a
stricter threshold, and rounds that stop only when two looks in a row are stable with the same verdict
(``stability.confirmed``: what the registry does).

    python scripts/stopping_rule.py [--experiments 200] [--means 0.6,1.0,1.4]
"""

from __future__ import annotations

import argparse

import numpy as np

from bnlab.experiments import stability, stats

PLAN = (5, 9, 13, 17, 21)  # C1's plan
SD = 1.5  # per-seed spread of the difference, in margins
MARGIN = 1.0


def rule(values) -> str:
    return stats.effect(stats.estimate(list(values)), MARGIN, -1)


def true_agreement(verdict: str, mean: float, n: int, rng: np.random.Generator, sets: int = 4000) -> float:
    """P(a fresh experiment of n seeds gives ``verdict``), by Monte Carlo on the true distribution."""
    draws = rng.normal(-mean, SD, size=(sets, n))
    return float(np.mean([rule(row) == verdict for row in draws]))


def run(mean: float, thresholds: list[float], looks: tuple[int, ...], rng: np.random.Generator, confirm=False):
    """One experiment: (reported stable?, verdict, seeds at the stop). ``confirm``: an interim look stops only
    if the previous look was stable with the same verdict too."""
    values = list(rng.normal(-mean, SD, size=looks[-1]))
    before = None
    for i, n in enumerate(looks):
        recs = dict(enumerate(values[:n]))
        with stability.interim_look():
            s = stability.assess(recs, rule, resamples=200)
        stable = s.share >= thresholds[i]
        last = i == len(looks) - 1
        if stable and (last or not confirm or before == s.verdict):
            return True, s.verdict, n
        before = s.verdict if s.share >= stability.THRESHOLD else None
    return False, s.verdict, looks[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--means", default="0.5,1.0,1.5,2.5", help="true effects, in margins (1.0: on the margin)")
    parser.add_argument("--designs", default="", help="comma-separated design numbers to run (default: all)")
    args = parser.parse_args()
    k = len(PLAN)
    split = 1 - (1 - stability.THRESHOLD) / k  # the 10% allowance split over the looks (Bonferroni)
    designs = {
        "fixed at the cap": ((PLAN[-1],), [stability.THRESHOLD]),
        "rounds, 90% at every look": (PLAN, [stability.THRESHOLD] * k),
        f"rounds, {split:.0%} at interim looks": (PLAN, [split] * (k - 1) + [stability.THRESHOLD]),
        "rounds, 90% at two looks in a row": (PLAN, [stability.THRESHOLD] * k, True),
        "rounds, 99% at interim looks": (PLAN, [0.99] * (k - 1) + [stability.THRESHOLD]),
    }
    if args.designs:
        keep = {int(i) for i in args.designs.split(",")}
        designs = {k: v for i, (k, v) in enumerate(designs.items()) if i in keep}
    print(f"plan {PLAN}, per-seed sd {SD} margins, {args.experiments} experiments per cell")
    print("design | true effect | reported stable | mean true agreement of those | share of those below 90%")
    for mean in (float(m) for m in args.means.split(",")):
        for name, (looks, thresholds, *confirm) in designs.items():
            rng = np.random.default_rng(7)
            agree = []
            for _ in range(args.experiments):
                stable, verdict, n = run(mean, thresholds, looks, rng, bool(confirm))
                if stable:
                    agree.append(true_agreement(verdict, mean, n, rng, sets=1000))
            a = np.array(agree)
            print(
                f"{name} | {mean:g} | {len(a) / args.experiments:.0%} | "
                f"{a.mean() if a.size else float('nan'):.3f} | {np.mean(a < 0.9) if a.size else float('nan'):.0%}"
            )


if __name__ == "__main__":
    main()
