"""C10 (ghost BN and the large-batch gap): the verdict rule and the analysis on fake runs."""

import json
import math

import matplotlib
import pytest

from bnlab.experiments import c10_ghost_bn as c10
from bnlab.experiments import registry, stats
from bnlab.train.result import RunResult
from fake_runs import check_well_formed

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def est(mean, half=0.01, n=3):
    return stats.Estimate(mean, half, n, half)


def test_verdict_per_outcome():
    gap = est(0.05)  # large batches 5 points worse: a gap to narrow
    assert c10.verdict(est(0.03), gap) == "reproduced"
    assert c10.verdict(est(-0.03), gap) == "not reproduced"
    assert c10.verdict(est(0.0, 0.004), gap) == "not reproduced"  # confidently below a 0.5 pp narrowing
    assert c10.verdict(est(0.005, 0.02), gap) == "inconclusive"
    assert c10.verdict(est(0.03, math.nan, 1), gap) == "inconclusive"


def test_no_gap_means_nothing_to_narrow():
    """Large batches no worse than small ones: ghost BN's gain cannot count as narrowing a gap."""
    assert c10.verdict(est(0.03), est(-0.02)) == "inconclusive"
    assert c10.verdict(est(0.03), est(0.0, 0.005)) == "inconclusive"


def _fake_runs(configs):
    acc = {(32, "bn"): 0.90, (None, "bn"): 0.84, (None, "ghost_bn"): 0.88}
    runs = []
    for c in configs:
        a = acc[(32 if c.batch_size == 32 else None, c.norm)] + 0.003 * c.seed
        n = c.steps // c.eval_every
        series = {
            "step": [float(c.eval_every * (i + 1)) for i in range(n)],
            "test_acc": [a * (i + 1) / n for i in range(n)],
        }
        runs.append(RunResult(c, "finished", series, c.steps))
    return runs


def test_analyze_fake_runs_gives_a_complete_result():
    configs = c10.sweep(True, 3)
    runs = _fake_runs(configs)
    result = c10.analyze(runs, registry.Context(quick=True, seeds=3))
    check_well_formed(result)
    assert result.verdict == "reproduced"
    assert result.numbers["narrowing"]["mean"] == pytest.approx(0.04)
    json.dumps(result.to_json())
    assert len(result.rows) == len(configs)
    stored = json.loads(json.dumps(result.to_json()))["figures"]
    for spec, data in zip(result.figures, stored):
        plt.close(spec.draw(data["data"]))
    runs[1] = None
    assert c10.analyze(runs, registry.Context(quick=True, seeds=3)).numbers["failed_runs"] == 1


def test_sweep_has_equal_updates_and_sqrt_lr_scaling():
    configs = c10.sweep(False, None)
    assert len({c.steps for c in configs}) == 1
    large = [c for c in configs if c.batch_size >= 1024]
    assert large and all(c.lr == pytest.approx(c10.BASE_LR * math.sqrt(c.batch_size / 32)) for c in large)
    assert any(c.norm == "ghost_bn" and c.norm_kw == {"virtual_batch_size": 32} for c in large)


@pytest.mark.slow
def test_quick_sweep_runs_end_to_end(tmp_path):
    result = registry.run("C10", registry.Context(quick=True, jobs=1, store=tmp_path / "runs.sqlite"))
    assert result.numbers["failed_runs"] == 0
