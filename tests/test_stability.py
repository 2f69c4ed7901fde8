"""The stability of a verdict: a bootstrap over seeds of the whole rule, checked against exact
enumeration and against the analytic power of a t-test; what the report then says."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from scipy import stats as st

from bnlab.experiments import stability
from bnlab.experiments.result import ClaimResult
from bnlab.experiments.stats import paired


def mean_above(threshold):
    def rule(records):
        return "reproduced" if np.mean(records) > threshold else "inconclusive"

    return rule


def test_share_matches_exact_enumeration_of_every_two_stage_resample():
    values = [0.0, 1.0, 2.0, 5.0]  # mean 2
    rule = mean_above(1.8)
    picks = list(itertools.product(range(4), repeat=4))
    # every population drawn from the 4 values, and every fresh set drawn from that population
    exact = sum(rule([values[pop[i]] for i in fresh]) == "reproduced" for pop in picks for fresh in picks) / 4**8
    one_stage = sum(rule([values[i] for i in pick]) == "reproduced" for pick in picks) / 4**4
    got = stability.assess(dict(enumerate(values)), rule, resamples=20000)
    assert got.verdict == "reproduced"
    assert got.share == pytest.approx(exact, abs=0.01)  # 20000 draws: standard error 0.0035
    assert exact < one_stage - 0.03  # the second stage widens what a fresh set may show


def test_draws_with_the_same_seeds_share_one_evaluation_and_count_as_often_as_drawn():
    values = [0.3, 1.1, 1.9, 2.2, 4.0]
    calls = []

    def rule(records):
        calls.append(sorted(records))
        return "reproduced" if np.mean(records) > 1.85 else "inconclusive"  # no set's mean ties 1.85

    got = stability._draws(values, rule, 5, 500, np.random.default_rng(3))
    rng = np.random.default_rng(3)  # the same two stages, one rule call per fresh set
    population = rng.integers(0, 5, size=(500, 5))
    picks = np.take_along_axis(population, rng.integers(0, 5, size=(500, 5)), axis=1)
    want = {}
    for row in picks:
        v = "reproduced" if np.mean([values[i] for i in row]) > 1.85 else "inconclusive"
        want[v] = want.get(v, 0) + 1
    assert dict(got) == want
    distinct = {tuple(sorted(row)) for row in picks.tolist()}
    assert len(calls) == len(distinct) <= math.comb(5 + 5 - 1, 5)  # 126 multisets of 5 from 5


def test_a_seed_keeps_its_settings_together_so_pairs_stay_paired():
    # b = a + 1 on every seed, but the seeds differ by much more than 1: only a paired rule sees it.
    a = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    records = {s: (x, x + 1.0) for s, x in enumerate(a)}

    def rule(recs):
        d = paired([r[1] for r in recs], [r[0] for r in recs]).diff
        return "reproduced" if d.n > 1 and d.low > 0 else "inconclusive"

    assert stability.assess(records, rule).share == 1.0


def test_a_clear_effect_is_stable_and_a_coin_flip_is_underpowered():
    rng = np.random.default_rng(1)

    def rule(recs):
        t = paired(recs, [0.0] * len(recs))
        return "reproduced" if t.diff.mean > 0 and t.p_t < 0.05 else "inconclusive"

    clear = stability.assess(dict(enumerate(rng.normal(1.0, 0.3, 10))), rule)
    assert clear.verdict == "reproduced" and clear.share > 0.99 and clear.stable and clear.reported == "reproduced"
    # a sample whose t statistic sits exactly at the 5% critical value: a coin flip
    z = st.norm.ppf((np.arange(10) + 0.5) / 10)
    at_edge = st.t.ppf(0.975, 9) / math.sqrt(10) + (z - z.mean()) / z.std(ddof=1)
    flip = stability.assess(dict(enumerate(at_edge)), rule)
    assert 0.3 < flip.share < 0.7 and not flip.stable and flip.reported == "underpowered"
    assert sum(flip.outcomes.values()) == flip.resamples


def test_projected_seeds_follow_the_predictive_power_of_the_t_test():
    # A sample with effect size exactly d = 0.8 (mean / sd): how many seeds make "mean > 0 at p < 0.05"
    # come out in 90% of fresh sets? The effect itself is known only from these 8 seeds, so a fresh
    # set of m seeds has a mean about N(d, 1/8 + 1/m) (sd units): the predictive power. The power at
    # the measured effect (noncentral t, as if d were the truth) is the one-stage answer, lower.
    n, d = 8, 0.8
    z = st.norm.ppf((np.arange(n) + 0.5) / n)
    sample = d + (z - z.mean()) / z.std(ddof=1)

    def rule(recs):
        t = paired(recs, [0.0] * len(recs))
        return "reproduced" if t.diff.mean > 0 and t.p_t < 0.05 else "inconclusive"

    def plug_in_power(m):
        crit = st.t.ppf(0.975, m - 1)
        return st.nct.sf(crit, m - 1, d * math.sqrt(m))

    def predictive_power(m):
        crit = st.t.ppf(0.975, m - 1)
        return st.norm.cdf((d * math.sqrt(m) - crit) / math.sqrt(1 + m / n))

    plug_in = next(m for m in range(2, 200) if plug_in_power(m) >= stability.THRESHOLD)  # 19
    predictive = next(m for m in range(2, 200) if predictive_power(m) >= stability.THRESHOLD)  # 44
    got = stability.assess(dict(enumerate(sample)), rule)
    assert not got.stable and got.needed_verdict == "reproduced"
    # Fresh sets drawn from 8 values hold repeats, which a t-test counts as independent: the bootstrap
    # lands below the predictive answer, and the grid steps by 25% -- but well above the plug-in one.
    assert plug_in * 1.4 <= got.needed <= predictive * 1.35, (got.needed, plug_in, predictive)
    assert predictive / 1.6 <= got.needed


def test_too_few_seeds_are_underpowered_whatever_the_share():
    got = stability.assess({0: 5.0, 1: 6.0}, mean_above(1.0))
    assert got.share == 1.0 and not got.stable and got.reported == "underpowered"
    assert "too few to tell" in stability.describe(got)


def test_a_rule_must_return_a_verdict():
    with pytest.raises(ValueError, match="expected the rule to return one of"):
        stability.assess({0: 1.0, 1: 2.0, 2: 3.0}, lambda recs: "maybe")


def test_the_bootstrap_is_seeded():
    records = dict(enumerate(np.random.default_rng(3).normal(0.2, 1.0, 9)))
    assert stability.assess(records, mean_above(0.2)) == stability.assess(records, mean_above(0.2))


def test_settle_reports_underpowered_and_keeps_the_rules_verdict():
    def result():
        return ClaimResult(
            id="CX",
            name="x",
            question="?",
            claim="-",
            source="-",
            rule="-",
            verdict="reproduced",
            summary="-",
            setup={},
            numbers={},
        )

    shaky = stability.Stability(
        "reproduced", 0.6, 8, 500, {"reproduced": 300, "inconclusive": 200}, "bootstrap", 20, "reproduced"
    )
    r = stability.settle(result(), shaky)
    assert (r.verdict, r.rule_verdict) == ("underpowered", "reproduced")
    j = r.to_json()
    assert j["verdict"] == "underpowered" and j["rule_verdict"] == "reproduced"
    assert j["stability"]["share"] == 0.6 and j["stability"]["threshold"] == stability.THRESHOLD
    assert j["stability"]["needed_seeds"] == 20
    assert stability.describe(shaky) == (
        "the rule gave reproduced in only 60% of resamples (needs 90%); about 20 "
        "seeds per setting would settle it (reproduced)"
    )
    solid = stability.Stability("reproduced", 0.97, 8, 500, {"reproduced": 485, "inconclusive": 15}, "bootstrap")
    r = stability.settle(result(), solid)
    assert r.verdict == "reproduced" and stability.describe(solid) == "stable in 97% of resamples"
    assert stability.Stability.from_json(solid.to_json()) == solid


def test_a_computed_claims_stability_is_its_verdict_on_fresh_inputs():
    s = stability.computed(["reproduced"] * 9 + ["not reproduced"], "exact")
    assert s.share == 0.9 and s.stable and s.seeds == 10
    assert stability.describe(s) == "the same on 9 of 10 fresh random inputs"


def test_a_look_is_confirmed_by_the_same_stable_verdicts_at_the_look_before():
    def stab(verdict, share, seeds=8):
        return stability.Stability(verdict, share, seeds, 500, {verdict: int(500 * share)}, "fake")

    ok = [stab("reproduced", 0.95), stab("not reproduced", 1.0)]
    assert stability.confirmed(ok, [stab("reproduced", 0.92), stab("not reproduced", 0.99)])
    assert not stability.confirmed(None, ok)  # the first look cannot confirm itself
    assert not stability.confirmed(ok, [stab("reproduced", 0.95), stab("not reproduced", 0.85)])  # now unstable
    assert not stability.confirmed([stab("reproduced", 0.95), stab("not reproduced", 0.8)], ok)  # unstable before
    assert not stability.confirmed(ok, [stab("inconclusive", 0.95), stab("not reproduced", 1.0)])  # verdict moved
    assert not stability.confirmed(ok, ok[:1])


def test_an_interim_look_skips_the_projection_and_nothing_else():
    recs = {s: 0.25 + 0.3 * (-1) ** s for s in range(6)}  # a noisy mean: unstable at 6 seeds, projected

    def rule(rs):
        e = paired(list(rs), [0.0] * len(rs)).diff
        return "reproduced" if e.low > 0 else "not reproduced" if e.high < 0 else "inconclusive"

    final = stability.assess(recs, rule)
    with stability.interim_look():
        interim = stability.assess(recs, rule)
    assert final.share < stability.THRESHOLD and final.needed is not None
    assert interim.needed is None and interim.needed_verdict is None
    assert dataclasses.replace(interim, needed=final.needed, needed_verdict=final.needed_verdict) == final
    assert stability.assess(recs, rule) == final  # the switch is reset on leaving the block
