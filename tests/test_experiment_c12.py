"""C12 (training only gamma/beta): the verdict rule on synthetic numbers, analyze on constructed runs,
and (slow) the quick sweep end to end."""

import json

import matplotlib
import pytest

from bnlab.experiments import c12_only_bn_params as c12
from bnlab.experiments import registry, stats
from fake_runs import check_well_formed
from fake_runs import run_with_series as fake_run

matplotlib.use("Agg")


@pytest.mark.parametrize(
    "norm_acc,random_acc,expected",
    [
        ([0.60, 0.62, 0.58, 0.61, 0.59], [0.30, 0.33, 0.29, 0.31, 0.35], "reproduced"),
        ([0.12, 0.10, 0.11, 0.13, 0.12], [0.30, 0.33, 0.29, 0.31, 0.35], "not reproduced"),  # CI below 2x chance
        ([0.60, 0.62, 0.58, 0.61, 0.59], [0.70, 0.72, 0.69, 0.71, 0.75], "not reproduced"),  # random subset better
        ([0.60, 0.62, 0.58, 0.61, 0.59], [0.61, 0.58, 0.62, 0.57, 0.60], "inconclusive"),  # no paired difference
        ([0.15, 0.45, 0.25, 0.35, 0.20], [0.10, 0.30, 0.20, 0.25, 0.15], "inconclusive"),  # CI straddles 2x chance
        # paired difference within ±1 point (CI about [-0.4, 0.5] points): no difference that matters
        ([0.600, 0.620, 0.580, 0.610, 0.590], [0.598, 0.623, 0.579, 0.607, 0.591], "not reproduced"),
    ],
)
def test_verdict_on_synthetic_accuracies(norm_acc, random_acc, expected):
    assert c12.verdict(stats.estimate(norm_acc), stats.paired(norm_acc, random_acc)) == expected


def test_analyze_constructed_runs_gives_a_complete_result():
    configs = c12.sweep(quick=False, seeds=None)
    acc = {"norm": 0.55, "random": 0.25, "all": 0.9}
    runs = [fake_run(c, {}, test_acc=acc[c.trainable] + 0.01 * c.seed) for c in configs]
    runs[-1] = None  # a failed run is reported, not fatal
    ctx = registry.Context(quick=False)
    result = c12.analyze(runs, ctx)
    check_well_formed(result)
    assert result.verdict == "reproduced"
    assert {p.key: p.verdict for p in result.parts} == {"above-chance": "reproduced", "beats-random": "reproduced"}
    seeds = sorted({c.seed for c in configs if c.trainable == "norm"})
    assert result.numbers["test_acc_norm"]["mean"] == pytest.approx(0.55 + 0.01 * sum(seeds) / len(seeds))
    assert result.numbers["failed_runs"] and "failed" in result.summary
    json.dumps(result.to_json())
    assert len(result.rows) == len(configs)
    for fig in result.figures:
        fig.draw(fig.data)


def test_sweep_pairs_settings_by_seed_with_equal_trainable_counts():
    configs = c12.sweep(quick=True, seeds=3)
    assert [(c.trainable, c.seed) for c in configs] == [(t, s) for t in c12.SETTINGS for s in range(3)]
    assert {c.trainable_k for c in configs if c.trainable == "random"} == {c12.BN_PARAMS}
    assert sum(c.steps for c in configs) <= 1500 * 2  # quick stays small (3 seeds here instead of 2)


@pytest.mark.slow
def test_quick_sweep_end_to_end(tmp_path):
    result = registry.run("C12", registry.Context(quick=True, store=tmp_path / "runs.sqlite"))
    assert result.rule_verdict in ("reproduced", "not reproduced", "inconclusive")
    assert result.verdict == (result.rule_verdict if result.stability.stable else "underpowered")
    assert not result.numbers["failed_runs"]
    rows = [r for r in result.rows if r["trainable"] == "norm"]
    assert all(r["trainable_params"] == c12.BN_PARAMS for r in rows)
