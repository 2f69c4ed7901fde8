"""C6 (gradient ICS) and C7 (landscape smoothness): the verdict rules on synthetic numbers, analyze on
constructed runs, and (slow) the quick sweeps end to end."""

import json

import matplotlib
import numpy as np
import pytest

from bnlab.experiments import c06_ics_gradients as c6
from bnlab.experiments import c07_landscape as c7
from bnlab.experiments import registry, stats
from fake_runs import check_well_formed
from fake_runs import run_with_series as fake_run

matplotlib.use("Agg")


# Fixed per-seed deviations (mean 0, sd ~1): the synthetic differences are shift + noise * _SPREAD.
_SPREAD = np.array([-1.2, 1.1, -0.6, 0.9, -1.4, 0.5, 1.3, -0.6])


def _log_ratio_tests(names, shift, noise):
    """Paired tests of log(BN) vs log(no-BN) with log(BN) - log(no-BN) = shift + noise * _SPREAD."""
    base = np.linspace(-1.0, 1.0, _SPREAD.size)
    tests = {}
    for i, name in enumerate(names):
        tests[name] = stats.paired(base + shift + noise * np.roll(_SPREAD, i), base)
    adjusted = dict(zip(tests, stats.holm([t.p_t for t in tests.values()])))
    return tests, adjusted


C6_NAMES = [f"{layer}/{m}" for layer in c6.LAYERS for m in c6.MEASURES]


@pytest.mark.parametrize(
    "shift,noise,expected",
    [
        (0.3, 0.1, "reproduced"),  # BN's ICS clearly higher, as the paper reports
        (0.0, 0.05, "reproduced"),  # equal within a tight CI: not lower
        (-0.7, 0.1, "not reproduced"),  # BN halves the ICS, consistently
        (-0.2, 1.5, "inconclusive"),  # lower on average, CI too wide to exclude a 2x reduction
    ],
)
def test_c6_verdict_on_synthetic_log_ratios(shift, noise, expected):
    tests, adjusted = _log_ratio_tests(C6_NAMES, shift, noise)
    assert c6.verdict(tests, adjusted) == expected


def _c6_series(norm, seed, n=5):
    scale = 2.0 if norm == "bn" else 1.0  # BN's ICS twice the baseline's: "reproduced"
    rng = np.random.default_rng(seed)
    out = {}
    for layer in c6.LAYERS:
        l2 = scale * (0.1 + 0.01 * rng.random(n))
        out[f"ics/{layer}/l2"] = l2.tolist()
        out[f"ics/{layer}/cos"] = (1 - scale * 0.05 * (1 + 0.1 * rng.random(n))).tolist()
        out[f"ics/{layer}/rel"] = (l2 / 0.5).tolist()
    return out


def test_c6_analyze_constructed_runs_gives_a_complete_result():
    configs = c6.sweep(quick=False, seeds=None)
    runs = [fake_run(c, _c6_series(c.norm, c.seed)) for c in configs]
    runs[0] = None
    result = c6.analyze(runs, registry.Context(quick=False))
    check_well_formed(result)
    assert result.verdict == "reproduced"
    for name in C6_NAMES:
        assert result.numbers[f"ratio_bn_over_none/{name}"]["mean"] == pytest.approx(2.0, rel=0.1)
    assert result.numbers["failed_runs"] and result.setup["seeds"] == list(range(c6.FULL["seeds"]))
    json.dumps(result.to_json())
    assert len(result.rows) == len(configs)
    for fig in result.figures:
        fig.draw(fig.data)


@pytest.mark.parametrize(
    "shift,frac,expected",
    [
        (-0.5, 0.9, "reproduced"),
        (0.5, 0.1, "not reproduced"),  # BN rougher on every metric
        (-0.5, 0.2, "not reproduced"),  # lower on average but at only a fifth of the steps
        (-0.02, 0.55, "inconclusive"),
    ],
)
def test_c7_verdict_on_synthetic_numbers(shift, frac, expected):
    tests, adjusted = _log_ratio_tests(list(c7.METRICS), shift, 0.1 if abs(shift) > 0.1 else 0.5)
    rng = np.random.default_rng(1)
    fractions = {m: stats.estimate(np.clip(frac + 0.03 * rng.normal(size=8), 0, 1)) for m in c7.METRICS}
    assert c7.verdict(tests, adjusted, fractions) == expected


def test_c7_a_metric_within_ten_percent_is_not_reproduced_rather_than_inconclusive():
    # log ratio -0.02 with little spread: CI inside ±log 1.1, no difference that matters on any metric
    tests, adjusted = _log_ratio_tests(list(c7.METRICS), -0.02, 0.01)
    fractions = {m: stats.estimate([0.4, 0.6, 0.5, 0.55, 0.45, 0.5, 0.6, 0.4]) for m in c7.METRICS}
    for m in c7.METRICS:
        assert c7.metric_verdict(tests[m], adjusted[m], fractions[m]) == "not reproduced"
    assert c7.verdict(tests, adjusted, fractions) == "not reproduced"


def _c7_series(norm, seed, n=6):
    scale = 0.5 if norm == "bn" else 1.0  # BN halves every metric: "reproduced"
    rng = np.random.default_rng(seed)
    out = {}
    for key in ("loss_min", "loss_max", "loss_range", "grad_diff_min", "grad_diff_max", "beta"):
        out[f"landscape/{key}"] = (scale * (1 + 0.1 * rng.random(n))).tolist()
    return out


def test_c7_analyze_constructed_runs_gives_a_complete_result():
    configs = c7.sweep(quick=False, seeds=None)
    runs = [fake_run(c, _c7_series(c.norm, c.seed)) for c in configs]
    result = c7.analyze(runs, registry.Context(quick=False))
    check_well_formed(result)
    assert result.verdict == "reproduced"
    assert [p.verdict for p in result.parts] == ["reproduced"] * 3
    for m in c7.METRICS:
        assert result.numbers[f"ratio_bn_over_none/{m}"]["mean"] == pytest.approx(0.5, rel=0.1)
        assert result.numbers[f"fraction_steps_bn_lower/{m}"]["mean"] == 1.0
    json.dumps(result.to_json())
    assert len(result.rows) == len(configs)
    for fig in result.figures:
        fig.draw(fig.data)


@pytest.mark.slow
@pytest.mark.parametrize("claim", ["C6", "C7"])
def test_quick_sweep_end_to_end(claim, tmp_path):
    result = registry.run(claim, registry.Context(quick=True, store=tmp_path / "runs.sqlite"))
    assert result.rule_verdict in ("reproduced", "not reproduced", "inconclusive")
    assert result.verdict == (result.rule_verdict if result.stability.stable else "underpowered")
    assert not result.numbers["failed_runs"]
    json.dumps(result.to_json())
