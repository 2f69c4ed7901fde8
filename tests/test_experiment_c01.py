"""C1 (BN trains faster, steadier inputs): the drift measure, the verdict rule, the analysis on constructed runs."""

import math

import pytest

from bnlab.experiments import c01_bn_trains_faster as c1
from bnlab.experiments import registry
from bnlab.experiments.stats import estimate

from fake_runs import check_well_formed, fake_run

FASTER = estimate([-800.0, -700.0, -900.0])


def every_unit(by_q, samples=tuple(c1.SAMPLES)):
    """The same percentile series {q: f(step)} for every unit the drift averages over, on each of ``samples``."""
    return {c1.pct(u, q, sample): f for sample in samples for u in c1.UNITS for q, f in by_q.items()}


STEADIER = estimate([-1.0, -0.8, -1.2])


def test_drift_is_the_late_percentile_range_over_the_band_width():
    # Percentiles rise linearly by 0.01/step, band width 2: over the last 80% of steps 100..1000
    # (metric steps 300..1000, the first 2 of 10 are the first phase) each percentile moves 7.
    cfg = c1.sweep(False, 1)[0]
    cfg = type(cfg)(**{**cfg.to_dict(), "steps": 1000, "eval_every": 100})
    run = fake_run(
        cfg,
        lambda s: 0.5,
        extra=every_unit({15: lambda s: 0.01 * s - 1, 50: lambda s: 0.01 * s, 85: lambda s: 0.01 * s + 1}),
    )
    assert c1.drift(run) == pytest.approx(7.0 / 2.0, rel=1e-12)


def test_drift_is_the_mean_over_the_units():
    # unit u's percentiles rise by 0.01 * u per step (band width 2): its drift is 7 * u / 2; a unit
    # missing from the series makes the run's drift NaN rather than a mean over fewer units
    cfg = c1.sweep(False, 1)[0]
    cfg = type(cfg)(**{**cfg.to_dict(), "steps": 1000, "eval_every": 100})
    extra = {
        c1.pct(u, q): (lambda s, o=o, u=u: 0.01 * u * s + o) for u in c1.UNITS for q, o in ((15, -1), (50, 0), (85, 1))
    }
    run = fake_run(cfg, lambda s: 0.5, extra=extra)
    assert c1.unit_drift(run, 3) == pytest.approx(7.0 * 3 / 2.0, rel=1e-12)
    assert c1.drift(run) == pytest.approx(sum(7.0 * u / 2.0 for u in c1.UNITS) / len(c1.UNITS), rel=1e-12)
    del extra[c1.pct(5, 50)]
    assert math.isnan(c1.drift(fake_run(cfg, lambda s: 0.5, extra=extra)))


def test_the_runs_probe_every_unit_the_drift_averages_over():
    assert len(c1.UNITS) == 8
    for cfg in c1.sweep(False, 1) + c1.sweep(True, 1):
        assert cfg.probes == tuple(f"act_pct_fixed:blocks.2.act:{u}" for u in c1.UNITS) + tuple(
            f"act_pct:blocks.2.act:{u}" for u in c1.UNITS
        )


def test_the_rule_reads_the_fixed_sample_and_the_batch_drift_is_reported_apart():
    # fixed sample: a still band; each training batch: percentiles rising 0.01/step (band width 2)
    cfg = c1.sweep(False, 1)[0]
    cfg = type(cfg)(**{**cfg.to_dict(), "steps": 1000, "eval_every": 100})
    extra = {
        **every_unit({q: (lambda s, q=q: q / 10) for q in (15, 50, 85)}, samples=("fixed",)),
        **every_unit({q: (lambda s, o=o: 0.01 * s + o) for q, o in ((15, -1), (50, 0), (85, 1))}, samples=("batch",)),
    }
    run = fake_run(cfg, lambda s: 0.5, extra=extra)
    assert c1.drift(run) == 0.0
    assert c1.drift(run, sample="batch") == pytest.approx(7.0 / 2.0, rel=1e-12)
    m = c1.measure(run, cap=1100)
    assert (m["drift"], m["drift_batch"]) == (0.0, pytest.approx(3.5, rel=1e-12))


def test_drift_of_a_still_band_is_zero():
    cfg = c1.sweep(False, 1)[0]
    run = fake_run(cfg, lambda s: 0.5, extra=every_unit({q: (lambda s, q=q: q / 10) for q in (15, 50, 85)}))
    assert c1.drift(run) == 0.0


LENGTH = 3000.0  # a full run's steps: the speed margin is 10% of it, 300 steps


def test_faster_part_reproduced_when_bn_needs_fewer_steps_at_the_same_rate():
    assert c1.faster(FASTER, best_acc_gap=0.1, best_steps_gap=500.0, length=LENGTH) == "reproduced"


def test_faster_part_not_reproduced_when_no_bn_at_its_best_rate_matches_bn():
    assert c1.faster(FASTER, best_acc_gap=0.005, best_steps_gap=-100.0, length=LENGTH) == "not reproduced"
    slower = estimate([300.0, 200.0, 250.0])
    assert c1.faster(slower, best_acc_gap=0.1, best_steps_gap=500.0, length=LENGTH) == "not reproduced"


def test_faster_part_not_reproduced_when_the_difference_is_within_the_margin():
    # CI about [-60, 60] steps, inside ±300: no difference that matters, a finding rather than "inconclusive"
    same = estimate([-20.0, 30.0, 10.0, -10.0, 0.0, 5.0])
    assert c1.faster(same, best_acc_gap=0.1, best_steps_gap=500.0, length=LENGTH) == "not reproduced"


def test_steadier_part_reads_the_drift_difference_against_its_margin():
    assert c1.steadier(STEADIER) == "reproduced"
    assert c1.steadier(estimate([0.01, -0.02, 0.0, 0.015, -0.01])) == "not reproduced"  # within ±0.1
    assert c1.steadier(estimate([-1.0, 0.5, 0.2])) == "inconclusive"  # straddles 0 and the margin
    assert c1.steadier(estimate([-0.8])) == "inconclusive"  # one seed: no interval


def test_claim_needs_both_parts():
    recs = lambda steady: [  # noqa: E731 - three seeds, BN 800 steps faster, drift as given
        {
            **{
                ("bn", lr): {"length": LENGTH, "acc": 0.7, "steps": 500.0 + s, "drift": steady[s], "drift_batch": 0.1}
                for lr in (0.5, 2.0)
            },
            **{
                ("none", lr): {"length": LENGTH, "acc": 0.5, "steps": 1300.0, "drift": 0.5, "drift_batch": 0.9}
                for lr in (0.5, 2.0)
            },
        }
        for s in range(3)
    ]
    assert c1.faster_rule(recs([0.1, 0.12, 0.09])) == "reproduced"
    assert c1.rule(recs([0.1, 0.12, 0.09])) == "reproduced"
    assert c1.steadier_rule(recs([0.49, 0.5, 0.51])) == "not reproduced"
    assert c1.rule(recs([0.49, 0.5, 0.51])) == "not reproduced"


def _fake_sweep(ctx):
    runs = []
    for c in c1.sweep(ctx.quick, ctx.seeds):
        k = 300 if c.norm == "bn" else 3000  # steps to ~63% of the way to the plateau
        top = 0.7 if c.norm == "bn" else 0.55
        move = 0.0 if c.norm == "bn" else 0.002 * (1 + 0.1 * c.seed)  # no BN: the percentiles drift
        pct = every_unit({q: (lambda s, o=o, m=move: o + m * s) for q, o in ((15, -1.0), (50, 0.0), (85, 1.0))})
        runs.append(fake_run(c, lambda s, k=k, t=top, lr=c.lr: t * (1 - math.exp(-s / k)) - 0.01 * lr, extra=pct))
    return runs


def test_analyze_reproduces_on_runs_where_bn_is_faster_and_steady():
    ctx = registry.Context(quick=False)
    result = c1.analyze(_fake_sweep(ctx), ctx)
    check_well_formed(result)
    assert result.numbers["same_lr"] == min(c1.FULL["lrs"])  # no BN's best rate in these fake runs
    assert result.numbers["drift_bn"]["mean"] == 0.0
    assert result.verdict == "reproduced"
    assert [(p.key, p.verdict) for p in result.parts] == [("faster", "reproduced"), ("steadier", "reproduced")]
    assert result.rule_version == c1.RULE_VERSION and result.rule_history


def test_analyze_survives_failed_and_diverged_runs():
    ctx = registry.Context(quick=False)
    runs = _fake_sweep(ctx)
    runs[0] = None
    runs[-1] = fake_run(runs[-1].config, lambda s: 0.1, diverged_at=5)
    result = c1.analyze(runs, ctx)
    check_well_formed(result)
    assert result.setup["failed_runs"] == 1


@pytest.mark.slow
def test_quick_sweep_runs_end_to_end(tmp_path):
    result = registry.run("C1", registry.Context(quick=True, jobs=1, store=tmp_path / "runs.sqlite"))
    check_well_formed(result)
    assert len(result.rows) == len(c1.sweep(True, None))
    assert result.figures[1].data["percentiles"]  # the probe's series reached the figure


def test_probe_reads_unit_0_of_the_last_hidden_sigmoid_input():
    import torch

    from bnlab import models
    from bnlab.train.probes import make_probe

    torch.manual_seed(0)
    model = models.build("mlp", norm="bn", act="sigmoid", placement="before")
    x = torch.randn(60, 40)
    probe = make_probe(f"act_pct:blocks.2.act:{c1.UNIT}")
    probe.attach(model)
    probe.arm()
    model(x)
    got = probe.collect()
    probe.detach()
    h = x
    for block in model.blocks[:2]:
        h = torch.sigmoid(block.norm(block.op(h)))
    last = model.blocks[2]
    pre = last.norm(last.op(h))[:, c1.UNIT]  # independent path: the BN output feeding the sigmoid
    want = torch.quantile(pre.detach(), torch.tensor([0.15, 0.50, 0.85]))
    for q, w in zip((15, 50, 85), want.tolist()):
        assert got[c1.pct(c1.UNIT, q, "batch")] == pytest.approx(w, abs=1e-5)


def test_absolute_drift_is_in_the_inputs_own_units():
    cfg = c1.sweep(False, 1)[0]
    cfg = type(cfg)(**{**cfg.to_dict(), "steps": 1000, "eval_every": 100})
    run = fake_run(
        cfg,
        lambda s: 0.5,
        extra=every_unit({q: (lambda s, o=o: 0.01 * s + o) for q, o in ((15, -1.0), (50, 0.0), (85, 1.0))}),
    )
    assert c1.drift(run, relative=False) == pytest.approx(7.0, rel=1e-12)
