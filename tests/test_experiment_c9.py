"""C9 (Batch Renorm vs BN on small / non-i.i.d. batches): the verdict rule and the analysis on fake runs."""

import json
import math

import matplotlib
import pytest

from bnlab.experiments import c09_batch_renorm as c9
from bnlab.experiments import registry, stats
from bnlab.train.result import RunResult
from fake_runs import check_well_formed

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def est(mean, half=0.01, n=5):
    return stats.Estimate(mean, half, n, half)


def test_verdict_reproduced_when_brn_wins_in_one_setting():
    assert c9.verdict([est(0.0, 0.01), est(0.05)], [0.9, 0.001]) == "reproduced"


def test_verdict_not_reproduced_when_brn_is_nowhere_meaningfully_better():
    assert c9.verdict([est(-0.02), est(-0.004, 0.005)], [0.01, 0.5]) == "not reproduced"


def test_verdict_inconclusive_when_a_ci_reaches_a_meaningful_gain():
    assert c9.verdict([est(0.01, 0.02), est(-0.02)], [0.3, 0.01]) == "inconclusive"
    assert c9.verdict([est(0.01, math.nan, 1), est(0.0)], [1.0, 1.0]) == "inconclusive"


def test_holm_correction_can_withhold_a_win():
    # p = 0.04 alone would pass; Holm over two settings doubles the smaller p.
    p = stats.holm([0.04, 0.5])
    assert c9.verdict([est(0.02, 0.019), est(0.0, 0.02)], p) == "inconclusive"


def _fake_runs(configs):
    runs = []
    for c in configs:
        acc = 0.80 + (0.04 if c.norm == "brn" and c.batch_classes else 0.0) + 0.01 * c.seed * (c.seed % 2)
        runs.append(RunResult(c, "finished", {"step": [float(c.steps)], "test_acc": [acc]}, c.steps))
    return runs


def test_analyze_fake_runs_gives_a_complete_result():
    configs = c9.sweep(True, 5)
    runs = _fake_runs(configs)
    runs[0] = None
    result = c9.analyze(runs, registry.Context(quick=True, seeds=5))
    check_well_formed(result)
    assert result.verdict == "reproduced"  # BRN +4 pp on every seed in the non-i.i.d. setting
    assert result.numbers["failed_runs"] == 1
    json.dumps(result.to_json())
    assert len(result.rows) == len(configs)
    stored = json.loads(json.dumps(result.to_json()))["figures"]
    for spec, data in zip(result.figures, stored):
        plt.close(spec.draw(data["data"]))


def test_sweep_pairs_bn_and_brn_with_the_warmup_and_non_iid_batches():
    configs = c9.sweep(False, None)
    assert len({c.seed for c in configs}) >= 5
    assert {c.batch_classes for c in configs} == {0, 2}
    for c in configs:
        if c.norm == "brn":
            assert c.norm_kw["warmup_steps"] == round(c9.WARMUP_FRAC * c.steps)
            assert (c.norm_kw["r_max"], c.norm_kw["d_max"]) == (3.0, 5.0)


@pytest.mark.slow
def test_quick_sweep_runs_end_to_end(tmp_path):
    result = registry.run("C9", registry.Context(quick=True, jobs=1, store=tmp_path / "runs.sqlite"))
    assert result.numbers["failed_runs"] == 0
