"""C3 (higher learning rates): the verdict rule on synthetic numbers, the analysis on constructed runs."""

import math

import pytest

from bnlab.experiments import c03_higher_lr as c3
from bnlab.experiments import registry
from bnlab.experiments.stats import estimate

from fake_runs import check_well_formed, fake_run


NONE_STEPS = 2000.0  # no BN's mean steps to 80%: the steps margin is 10% of it, 200 steps
FASTER = estimate([-500.0, -400.0, -450.0])


def test_higher_lr_part_needs_5x_and_fails_when_bn_trains_no_higher():
    assert c3.higher_lr(10.0) == "reproduced"
    assert c3.higher_lr(math.inf) == "reproduced"  # only BN trains
    assert c3.higher_lr(1.0) == "not reproduced"
    assert c3.higher_lr(math.nan) == "not reproduced"  # BN never trains
    assert c3.higher_lr(3.16) == "inconclusive"  # one grid step: the grid cannot resolve 5x


def test_fewer_steps_part_reads_the_interval_against_its_margin():
    assert c3.fewer_steps(FASTER, NONE_STEPS) == "reproduced"
    assert c3.fewer_steps(estimate([300.0, 400.0, 350.0]), NONE_STEPS) == "not reproduced"  # slower
    assert c3.fewer_steps(estimate([-500.0, 400.0, -50.0]), NONE_STEPS) == "inconclusive"
    # CI about [-45, 45] steps, inside ±200: no difference that matters
    assert c3.fewer_steps(estimate([-20.0, 30.0, 10.0, -10.0, 0.0, 5.0]), NONE_STEPS) == "not reproduced"


def test_the_steps_margin_is_a_tenth_of_no_bns_steps():
    # BN about 110 steps faster than no BN's 370 (30% fewer): beyond the margin of 37 steps, whatever the
    # runs' length; the same difference against no BN's 2000 steps is within its margin of 200
    diff = estimate([-80.0, -150.0, -100.0, -120.0, -90.0, -130.0, -110.0, -100.0])
    assert c3.fewer_steps(diff, 370.0) == "reproduced"
    assert c3.fewer_steps(diff, 2000.0) == "not reproduced"
    recs = [
        {
            **{("bn", lr): {"finished": True, "acc": 0.95, "steps": 260.0 + 10 * s, "cap": 2100} for lr in (0.1, 1.0)},
            **{
                ("none", lr): {"finished": lr < 1, "acc": 0.93, "steps": 370.0 + 5 * s, "cap": 2100}
                for lr in (0.1, 1.0)
            },
        }
        for s in range(6)
    ]
    assert c3.steps_rule(recs) == "reproduced"


def test_a_rate_trains_if_no_seed_diverges_and_the_seeds_reach_the_target_on_average():
    accs = {  # final test accuracy per seed; None: the seed diverged
        ("bn", 0.1): [0.95] * 8,
        ("bn", 0.3): [0.95] * 7 + [0.70],  # one seed under the target: the mean (0.92) still reaches it
        ("bn", 1.0): [0.93] * 7 + [None],  # a seed diverged: this rate does not train
        ("none", 0.1): [0.92] * 8,
        ("none", 0.3): [0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6],  # every seed above twice chance, mean 0.43
        ("none", 1.0): [0.1] * 8,
    }
    recs = [
        {
            key: {
                "finished": a[s] is not None,
                "acc": math.nan if a[s] is None else a[s],
                "steps": 300.0,
                "cap": 2100,
            }
            for key, a in accs.items()
        }
        for s in range(8)
    ]
    c = c3.compare(recs, 2100)
    assert c["curves"]["bn"]["trains"] == [True, True, False]
    assert c["curves"]["none"]["trains"] == [True, False, False]
    assert c["max_lr"] == {"bn": 0.3, "none": 0.1}
    assert c["ratio"] == pytest.approx(3.0)
    assert c3.lr_rule(recs) == "inconclusive"  # 3x: one grid step, the claim needs 5x


def _fake_sweep(ctx, bn_max_lr, none_max_lr):
    runs = []
    for c in c3.sweep(ctx.quick, ctx.seeds):
        top = bn_max_lr if c.norm == "bn" else none_max_lr
        speed = 200 if c.norm == "bn" else 1000  # steps to 80%
        if c.lr > top:
            runs.append(fake_run(c, lambda s: 0.1, diverged_at=7))
        else:
            runs.append(fake_run(c, lambda s, k=speed, j=c.seed: min(0.95, 0.5 + 0.3 * s / k) - 0.01 * j))
    return runs


def test_analyze_finds_the_largest_training_rates_and_reproduces():
    ctx = registry.Context(quick=False)
    result = c3.analyze(_fake_sweep(ctx, bn_max_lr=1.0, none_max_lr=0.1), ctx)
    check_well_formed(result)
    assert result.numbers["max_training_lr_bn"] == 1.0
    assert result.numbers["max_training_lr_none"] == 0.1
    assert result.numbers["lr_ratio"] == pytest.approx(10.0)
    assert result.verdict == "reproduced"
    assert {p.key: p.verdict for p in result.parts} == {"higher-lr": "reproduced", "fewer-steps": "reproduced"}


def test_analyze_reports_failed_runs_and_equal_rates_as_not_reproduced():
    ctx = registry.Context(quick=False)
    runs = _fake_sweep(ctx, bn_max_lr=0.3, none_max_lr=0.3)
    runs[0] = None
    result = c3.analyze(runs, ctx)
    check_well_formed(result)
    assert result.setup["failed_runs"] == 1
    assert result.verdict == "not reproduced"


@pytest.mark.slow
def test_quick_sweep_runs_end_to_end(tmp_path):
    result = registry.run("C3", registry.Context(quick=True, jobs=1, store=tmp_path / "runs.sqlite"))
    check_well_formed(result)
    assert len(result.rows) == len(c3.sweep(True, None))
