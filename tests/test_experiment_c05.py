"""C5 (noisy BN): the verdict rule on synthetic numbers, the analysis on constructed runs."""

import numpy as np
import pytest

from bnlab.experiments import c05_noisy_bn as c5
from bnlab.experiments import registry
from bnlab.experiments.stats import estimate

from fake_runs import check_well_formed, fake_run

SMALL = estimate([0.001, -0.002, 0.0005, 0.0])  # within noise
GAIN = estimate([0.03, 0.04, 0.035, 0.03])


def test_verdict_reproduced_when_noisy_matches_bn_and_both_beat_no_norm():
    assert c5.verdict(SMALL, SMALL, GAIN, GAIN, 0.001, 0.001) == "reproduced"


def test_verdict_not_reproduced_when_noisy_is_clearly_worse_or_bn_does_not_help():
    worse = estimate([-0.03, -0.04, -0.035, -0.03])
    assert c5.verdict(worse, SMALL, GAIN, GAIN, 0.001, 0.001) == "not reproduced"
    assert c5.verdict(SMALL, estimate([0.1, 0.12, 0.11, 0.1]), GAIN, GAIN, 0.001, 0.001) == "not reproduced"
    assert c5.verdict(SMALL, SMALL, estimate([-0.01, 0.0, -0.02, 0.005]), GAIN, 0.9, 0.001) == "not reproduced"


def test_verdict_inconclusive_when_the_gain_over_no_norm_is_not_significant():
    assert c5.verdict(SMALL, SMALL, GAIN, estimate([0.05, -0.02, 0.03, 0.0]), 0.001, 0.4) == "inconclusive"


def test_within_noise_uses_the_margin_or_the_ci():
    assert c5.within_noise(estimate([0.005, 0.006, 0.004]), margin=0.01)  # mean below margin
    assert c5.within_noise(estimate([0.05, -0.04, 0.03]), margin=0.01)  # CI contains 0
    assert not c5.within_noise(estimate([0.05, 0.04, 0.045]), margin=0.01)


def _fake_sweep(ctx, noisy_drop):
    runs = []
    for c in c5.sweep(ctx.quick, ctx.seeds):
        acc = {"bn": 0.95, "noisy_bn": 0.95 - noisy_drop, "none": 0.90}[c.norm] + 0.003 * (c.seed % 3)
        runs.append(fake_run(c, lambda s, a=acc: a * s / c.steps, loss_curve=lambda s, a=acc: (1 - a) / s * 100))
    return runs


def test_analyze_reproduces_when_noisy_bn_is_as_good_as_bn():
    ctx = registry.Context(quick=False)
    result = c5.analyze(_fake_sweep(ctx, noisy_drop=0.0), ctx)
    check_well_formed(result)
    assert result.numbers["bn_minus_none_test_acc"]["diff"]["mean"] == pytest.approx(0.05)
    assert result.verdict == "reproduced"


def test_analyze_not_reproduced_when_noisy_bn_loses_three_points():
    ctx = registry.Context(quick=False)
    runs = _fake_sweep(ctx, noisy_drop=0.03)
    runs[-1] = None
    result = c5.analyze(runs, ctx)
    check_well_formed(result)
    assert result.setup["failed_runs"] == 1
    assert result.verdict == "not reproduced"


@pytest.mark.slow
def test_quick_sweep_runs_end_to_end(tmp_path):
    result = registry.run("C5", registry.Context(quick=True, jobs=1, store=tmp_path / "runs.sqlite"))
    check_well_formed(result)
    assert len(result.rows) == len(c5.sweep(True, None))


def test_the_parts_read_the_same_rule_as_the_claim():
    # every combination of synthetic per-seed records: the claim is reproduced / not reproduced exactly
    # when all parts are / any part is not (the parts decompose RULE, they do not change it)
    import itertools

    from bnlab.experiments import spec

    rng = np.random.default_rng(5)
    for noisy_shift, none_shift in itertools.product((0.0, -0.05, 0.03), (0.0, -0.1, 0.1)):
        recs = [
            {
                "bn": (0.9 + e, 0.2),
                "noisy_bn": (0.9 + noisy_shift + e + 0.004 * rng.normal(), 0.2 - noisy_shift),
                "none": (0.9 + none_shift + e + 0.01 * rng.normal(), 0.3),
            }
            for e in 0.01 * rng.normal(size=6)
        ]
        parts = [p.judge(recs) for p in c5.PARTS]
        assert c5.rule(recs) == spec.all_of(parts), (noisy_shift, none_shift, parts)
