"""C13 (AdaBN) and C14 (TENT): the probe against hand computations, the rules, the analyses."""

import copy
import json
import math

import matplotlib
import pytest
import torch
from torch import nn

from bnlab.data import shifted
from bnlab.experiments import c13_adapt_statistics as c13
from bnlab.experiments import c14_tent as c14
from bnlab.experiments import registry, stats
from bnlab.experiments import shift_runs as S
from bnlab.experiments.probes import shift_eval as probe
from bnlab.train.probes import make_probe
from bnlab.train.result import RunResult

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FRACTION = 1e-6  # the probe's errors are float32 fractions


def _fit(model, x, y, lr: float, steps: int):
    """``model`` after ``steps`` Adam steps on batches of 50 of (x, y), in eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for i in range(steps):
        idx = torch.arange(i * 50, i * 50 + 50) % x.shape[0]
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _toy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 8, 3), nn.BatchNorm1d(8), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    g = torch.Generator().manual_seed(1)
    y = torch.arange(300) % 3
    x = torch.randn(300, 2, 6, generator=g) + y[:, None, None]  # (N, 2, 6) signals
    return _fit(model, x, y, 0.05, 60), x * 1.7 + 0.8, y  # a shifted "test set"


def _err(logits, y):
    return float((logits.argmax(1) != y).double().mean())


def test_probe_measurements_match_hand_computations_and_leave_the_model_alone():
    model, x, y = _toy()
    before = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    got = probe.measure(model, x, y, "all")
    with torch.no_grad():
        src = model(x)
        # test-batch statistics by hand: each batch of 100 normalized by its own mean / biased variance
        h = model[0](x)  # (N, 8, 4)
        w, b = model[1].weight[:, None], model[1].bias[:, None]

        def head(z):
            return model[4](torch.relu(z * w + b).flatten(1))

        parts = []
        for hb in h.split(probe.BATCH):
            z = (hb - hb.mean((0, 2), keepdim=True)) / torch.sqrt(
                hb.var((0, 2), unbiased=False, keepdim=True) + model[1].eps
            )
            parts.append(head(z))
        tb = torch.cat(parts)
        # AdaBN by hand: the statistics of all 300 (whole set), then eval
        z = (h - h.mean((0, 2), keepdim=True)) / torch.sqrt(h.var((0, 2), unbiased=False, keepdim=True) + model[1].eps)
        ada = head(z)
    assert got["source"] == pytest.approx(_err(src, y), abs=FRACTION)
    assert got["test_batch"] == pytest.approx(_err(tb, y), abs=FRACTION)
    assert got["adabn"] == pytest.approx(_err(ada, y), abs=FRACTION)
    disagree = float((src.argmax(1) != tb.argmax(1)).double().mean())
    assert got["disagree"] == pytest.approx(disagree, abs=FRACTION)
    assert got["subset_source"] == pytest.approx(_err(src[: probe.SUBSET], y[: probe.SUBSET]), abs=FRACTION)
    assert got["source"] > got["adabn"]  # the toy shift is one AdaBN undoes
    expected = {f"{k}@{b}" for k in ("test_batch", "prior") for b in probe.SMALL_BATCHES}
    expected |= {f"adabn@{n}" for n in probe.FEW_SAMPLES} | {f"tent@{b}" for b in probe.TENT_BATCHES}
    assert expected <= set(got) and all(0 <= v <= 1 for v in got.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training and torch.equal(rng, torch.get_rng_state())
    assert set(probe.measure(model, x, y, "gap")) == {"source", "test_batch", "disagree"}


def _lab_cnn():
    """The lab's CNN with bnlab BN (which the probe runs as grouped copies), trained a little on a toy task,
    and a shifted "test set" of 230 signals of length 40."""
    from bnlab import models

    torch.manual_seed(0)
    model = models.build("cnn", norm="bn", placement="before", input_shape=(40,), num_classes=3)
    g = torch.Generator().manual_seed(1)
    y = torch.arange(300) % 3
    x = torch.randn(300, 40, generator=g) + y[:, None].float()
    return _fit(model, x, y, 0.02, 30), x[:230] * 1.5 + 0.5, y[:230]


@pytest.mark.parametrize("batch,prior", [(100, None), (8, None), (1, None), (16, probe.PRIOR), (4, probe.PRIOR)])
def test_grouped_test_batch_statistics_match_one_batch_at_a_time(batch, prior):
    """Whole batches as grouped copies (230 = whole batches plus a remainder) against TestBatchNorm on the
    model, one batch at a time."""
    from bnlab.adaptation import TestBatchNorm

    model, x, _ = _lab_cnn()
    assert probe._copies(model, 2) is not None  # the grouped path runs
    before = copy.deepcopy(model.state_dict())
    got = probe._test_batch(model, x, batch, prior)
    with torch.no_grad(), TestBatchNorm(model, prior):
        want = torch.cat([model(b) for b in x.split(batch)])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_grouped_tent_and_adabn_match_the_library_set_by_set():
    """TENT (online, Adam, from the source model for every set) and AdaBN on several sets at once, as grouped
    copies, against bnlab.adapt on each set alone; the model is left as it was."""
    from bnlab import adapt

    model, x, _ = _lab_cnn()
    xs = [x * s + o for s, o in ((1.0, 0.0), (0.7, -0.3), (1.4, 0.6))]
    before = copy.deepcopy(model.state_dict())
    for batch, lr in ((probe.BATCH, probe.TENT_LR), (8, probe.TENT_LR_PAPER)):
        got = probe._tent(model, xs, batch, lr)
        for xi, g in zip(xs, got):
            alone = adapt(copy.deepcopy(model), xi.split(batch), method="tent", lr=lr, keep_outputs=True)
            torch.testing.assert_close(g, torch.cat(alone.outputs), rtol=1e-4, atol=1e-4)
    for xi, g in zip(xs, probe._adabn(model, xs)):
        m = copy.deepcopy(model)
        adapt(m, xi.split(probe.BATCH), method="stats")
        with torch.no_grad():
            torch.testing.assert_close(g, m.eval()(xi), rtol=1e-4, atol=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


def test_grouped_measurements_equal_the_ungrouped_ones():
    """measure_sets on the lab's CNN (grouped copies) gives the errors the one-at-a-time path gives on the
    same model written as a plain Sequential (which cannot be grouped)."""
    model, x, y = _lab_cnn()
    plain = nn.Sequential(*[layer for block in model.blocks for layer in (block.op, block.norm, block.act)])
    plain.append(nn.Flatten())
    plain.append(model.head)
    assert probe._copies(plain, 2) is None
    sets = [(x, y, "all"), (x * 0.8, y, "main"), (x[:100], y[:100], "gap")]
    grouped = probe.measure_sets(model, sets)
    alone = probe.measure_sets(plain, [(s[0].view(-1, 1, 40), s[1], s[2]) for s in sets])
    assert [sorted(g) for g in grouped] == [sorted(a) for a in alone]
    for g, a in zip(grouped, alone):
        # errors are fractions of 230 or 100 examples: equal unless a near tie flips one prediction
        assert all(abs(g[k] - a[k]) <= 1 / 100 + FRACTION for k in g), {k: (g[k], a[k]) for k in g if g[k] != a[k]}


def test_probe_spec_is_parsed_and_checked():
    p = make_probe("shift_eval:mnist1d:1,5")
    assert p.severities == (1, 5) and p.small
    assert not make_probe("shift_eval:digits:5:main").small
    for bad in (
        "shift_eval",
        "shift_eval:mnist1d",
        "shift_eval:mnist1d:6",
        "shift_eval:cifar10:1",
        "shift_eval:mnist1d:1:fast",
    ):
        with pytest.raises(ValueError, match="expected shift_eval"):
            make_probe(bad)


def est(mean, half=1.0, n=8):
    return stats.Estimate(mean, half, n, half)


def test_c13_verdict_per_outcome():
    assert c13.verdict(est(-30), est(70, 10)) == "reproduced"
    assert c13.verdict(est(-30), est(55, 10)) == "inconclusive"  # the share's interval reaches below 50%
    assert c13.verdict(est(-30), est(35, 10)) == "not reproduced"  # less than half recovered
    assert c13.verdict(est(0.5, 0.4), est(70, 10)) == "not reproduced"  # AdaBN no better
    assert c13.verdict(est(-0.5, 1.0), est(70, 10)) == "inconclusive"
    assert c13.verdict(est(-30, math.nan, 1), est(70, 10)) == "inconclusive"


def test_c14_verdict_per_outcome():
    assert c14.verdict(est(-1.8, 0.5)) == "reproduced"
    assert c14.verdict(est(1.0, 0.5)) == "not reproduced"
    assert c14.verdict(est(-0.2, 0.5)) == "not reproduced"  # within ±1 point: no difference that matters
    assert c14.verdict(est(-0.8, 1.0)) == "inconclusive"  # reaches past the margin and across 0
    assert c14.verdict(est(0.2, math.nan, 1)) == "inconclusive"


def _fake_runs(configs, quick):
    """Stored-run stand-ins: a clean error of 6%, source error growing with severity, AdaBN taking
    back 70% of it, TENT one point better than test-batch statistics; seed noise."""
    runs = []
    p = S.plan(quick)
    for c in configs:
        m = {}
        noise = 0.002 * c.seed

        def put(corruption, s, src):
            lost = src - 0.06
            vals = {
                "source": src,
                "test_batch": src - 0.65 * lost,
                "adabn": src - 0.7 * lost + noise,
                "disagree": 0.5 * lost,
            }
            vals["tent"] = vals["test_batch"] - 0.01 - noise
            vals["tent_lr_paper"] = vals["test_batch"] - 0.002
            vals["subset_source"] = src
            for b in probe.SMALL_BATCHES:
                vals[f"test_batch@{b}"] = min(1.0, vals["test_batch"] + 0.5 / b)
                vals[f"prior@{b}"] = src - 0.1
            for n in probe.FEW_SAMPLES:
                vals[f"adabn@{n}"] = vals["adabn"] + 0.2 / n
            for b in probe.TENT_BATCHES:
                vals[f"tent@{b}"] = vals["tent"] + 0.05
            m.update({f"shift/{corruption}/{s}/{k}": v for k, v in vals.items()})

        put("clean", 0, 0.06 + noise)
        for i, corruption in enumerate(S.CORRUPTIONS):
            for s in p["severities"]:
                put(corruption, s, 0.06 + 0.1 * s + 0.01 * i + noise)
        runs.append(RunResult(c, "finished", {"step": [float(c.steps)], "test_acc": [0.94]}, c.steps, final_metrics=m))
    return runs


@pytest.mark.parametrize("quick", [True, False])
def test_analyses_of_fake_runs_give_complete_readable_results(quick):
    configs = c13.sweep(quick, 6)
    assert configs == c14.sweep(quick, 6)  # one sweep for both claims
    runs = _fake_runs(configs, quick)
    runs[0] = None
    ctx = registry.Context(quick=quick, seeds=6)
    r13, r14 = c13.analyze(runs, ctx), c14.analyze(runs, ctx)
    assert r13.verdict == "reproduced" and r14.verdict == "reproduced"
    assert r13.numbers["Failed or diverged runs"] == 1 and r14.numbers["Failed or diverged runs"] == 1
    share = r13.numbers["Share of the lost accuracy AdaBN recovers at severity 5 (%)"]
    assert share["mean"] == pytest.approx(70, abs=1)
    for r in (r13, r14):
        text = json.dumps(r.to_json())
        assert "shift/" not in text and "test_batch" not in text and "adabn" not in text  # no internal keys
        stored = json.loads(text)["figures"]
        for spec, data in zip(r.figures, stored):
            plt.close(spec.draw(data["data"]))
        assert len(r.rows) == 5 * (1 + len(S.CORRUPTIONS) * len(S.plan(quick)["severities"]))
    assert ("Small batches and few samples (first 250 test examples)" in r13.numbers) == (not quick)
    table = S.markdown_table(runs[1:], S.plan(quick)["severities"])
    assert table.count("\n") == 1 + 1 + len(S.CORRUPTIONS) * len(S.plan(quick)["severities"]) + len(
        S.plan(quick)["severities"]
    )
    words = c13.answer(r13, r14)
    assert 'bnlab.adapt(model, new_data_loader, method="stats")' in words
    assert f"{S.estimate_of(r13.numbers['Mean error at severity 5 (%)']['AdaBN']).mean:.0f}%" in words


def test_registry_lists_c13_and_c14():
    assert registry.get("C13") is c13 and registry.get("c14") is c14
    assert [d for d in shifted.CORRUPTIONS] == ["mnist1d", "digits"]


@pytest.mark.slow
def test_quick_sweep_runs_end_to_end(tmp_path):
    ctx = registry.Context(quick=True, jobs=1, store=tmp_path / "runs.sqlite")
    r13 = registry.run("C13", ctx)
    r14 = registry.run("C14", ctx)
    assert r13.numbers["Failed or diverged runs"] == 0 and r14.numbers["Failed or diverged runs"] == 0
