"""C4 (BN placement): the per-activation outcome and verdict rules, the analysis on constructed runs."""

import pytest

from bnlab.experiments import c04_placement as c4
from bnlab.experiments import registry

from fake_runs import check_well_formed, fake_run


def test_outcome_needs_one_point_a_consistent_sign_and_a_significant_test():
    assert c4.outcome(0.02, wins=10, losses=0, p_holm=0.001) == "after better"
    assert c4.outcome(-0.02, wins=1, losses=9, p_holm=0.01) == "before better"
    assert c4.outcome(0.005, wins=10, losses=0, p_holm=0.001) == "no reliable difference"  # below 1 point
    assert c4.outcome(0.02, wins=6, losses=4, p_holm=0.001) == "no reliable difference"  # inconsistent sign
    assert c4.outcome(0.02, wins=9, losses=1, p_holm=0.2) == "uncertain"


def test_verdict_one_case_per_outcome():
    assert c4.verdict(["after better", "no reliable difference"]) == "reproduced"
    assert c4.verdict(["after better", "before better"]) == "not reproduced"
    assert c4.verdict(["no reliable difference", "no reliable difference"]) == "not reproduced"
    assert c4.verdict(["uncertain", "no reliable difference"]) == "inconclusive"


def _fake_sweep(ctx, relu_gain, tanh_gain):
    runs = []
    for c in c4.sweep(ctx.quick, ctx.seeds):
        gain = relu_gain if c.act == "relu" else tanh_gain
        acc = 0.9 + 0.002 * (c.seed % 3) + (gain + 0.001 * (c.seed % 2) if c.placement == "after" else 0.0)
        runs.append(fake_run(c, lambda s, a=acc: a * s / c.steps))
    return runs


def test_analyze_reproduces_a_consistent_advantage_of_after():
    ctx = registry.Context(quick=False)
    result = c4.analyze(_fake_sweep(ctx, relu_gain=0.03, tanh_gain=0.0), ctx)
    check_well_formed(result)
    assert result.numbers["relu_outcome"] == "after better"
    assert result.numbers["relu_after_minus_before"]["diff"]["mean"] == pytest.approx(0.0305, abs=1e-9)
    assert result.numbers["tanh_outcome"] == "no reliable difference"
    assert result.verdict == "reproduced"


def test_analyze_survives_a_failed_run():
    ctx = registry.Context(quick=False)
    runs = _fake_sweep(ctx, relu_gain=-0.03, tanh_gain=0.0)
    runs[3] = None
    result = c4.analyze(runs, ctx)
    check_well_formed(result)
    assert result.setup["failed_runs"] == 1
    assert result.verdict == "not reproduced"


@pytest.mark.slow
def test_quick_sweep_runs_end_to_end(tmp_path):
    result = registry.run("C4", registry.Context(quick=True, jobs=1, store=tmp_path / "runs.sqlite"))
    check_well_formed(result)
    assert len(result.rows) == len(c4.sweep(True, None))
