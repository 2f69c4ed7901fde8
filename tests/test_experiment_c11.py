"""C11 (EMA vs PreciseBN): the precise_eval probe against a hand computation, the rule, the analysis."""

import copy
import json
import math

import matplotlib
import pytest
import torch

from bnlab import nn as bnn
from bnlab.data.dataset import Dataset
from bnlab.experiments import c11_precise_bn as c11
from bnlab.experiments import registry, stats
from bnlab.experiments.probes.precise_eval import _PERM_SEED, PreciseEval
from bnlab.train.probes import StepContext, make_probe
from bnlab.train.result import RunResult
from fake_runs import check_well_formed

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _toy():
    g = torch.Generator().manual_seed(0)
    y_tr, y_te = torch.arange(60) % 3, torch.arange(30) % 3
    ds = Dataset(
        "toy",
        torch.randn(60, 5, generator=g) + y_tr[:, None],
        y_tr,
        torch.randn(30, 5, generator=g) + y_te[:, None],
        y_te,
        ("a", "b", "c"),
    )
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 4),
        bnn.BatchNorm1d(4),
        torch.nn.ReLU(),
        torch.nn.Linear(4, 4),
        bnn.BatchNorm1d(4),
        torch.nn.ReLU(),
        torch.nn.Linear(4, 3),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for i in range(20):  # a little training, so accuracies depend on the statistics
        idx = torch.randint(0, 60, (10,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(ds.x_train[idx]), ds.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ds, model


def _by_hand(model, ds, n, batch, step):
    """Accuracy after setting each BN layer's statistics to the mean / biased variance of its inputs
    over the first n samples of the permutation, collected in training-mode batches (hooks on a copy)."""
    m = copy.deepcopy(model)
    perm = torch.randperm(ds.x_train.shape[0], generator=torch.Generator().manual_seed(_PERM_SEED + step))
    x = ds.x_train[perm][:n]
    bns = [layer for layer in m if isinstance(layer, bnn.BatchNorm1d)]
    seen = {id(b): [] for b in bns}
    hooks = [b.register_forward_pre_hook(lambda mod, args: seen[id(mod)].append(args[0].detach())) for b in bns]
    for b in bns:
        b.momentum = 0.0
    with torch.no_grad():
        for i in range(0, n, batch):
            m(x[i : i + batch])
        for h in hooks:
            h.remove()
        for b in bns:
            inputs = torch.cat(seen[id(b)])  # (n, C)
            b.running_mean.copy_(inputs.mean(0))
            b.running_var.copy_(inputs.var(0, unbiased=False))
        m.eval()
        return int((m(ds.x_test).argmax(1) == ds.y_test).sum()) / ds.y_test.numel()


def test_probe_matches_a_hand_computation_and_leaves_the_model_unchanged():
    ds, model = _toy()
    probe = PreciseEval("toy", (10, 25, 60), dataset=ds)
    probe.attach(model)
    model.train()
    before = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    xb, yb = ds.x_train[:10], ds.y_train[:10]
    probe.arm()
    probe.after_backward(StepContext(7, model, None, xb, yb, torch.tensor(0.0), None))
    values = probe.collect()
    assert len({values[f"precise/test_acc/{n}"] for n in (10, 25, 60)} | {values["precise/ema_test_acc"]}) > 1
    for n in (10, 25, 60):
        assert values[f"precise/test_acc/{n}"] == pytest.approx(_by_hand(model, ds, n, 10, 7), abs=1e-9)
    model.eval()
    ema = int((model(ds.x_test).argmax(1) == ds.y_test).sum()) / ds.y_test.numel()
    model.train()
    assert values["precise/ema_test_acc"] == pytest.approx(ema, abs=1e-9)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(rng, torch.get_rng_state())


def test_probe_spec_is_parsed_and_checked():
    assert make_probe("precise_eval:mnist1d:100,300").sizes == (100, 300)
    for bad in ("precise_eval", "precise_eval:mnist1d", "precise_eval:mnist1d:0", "precise_eval:mnist1d:a"):
        with pytest.raises(ValueError, match="expected precise_eval"):
            make_probe(bad)


def est(mean, half=0.002, n=6):
    return stats.Estimate(mean, half, n, half)


def test_verdict_per_outcome():
    assert c11.verdict(est(0.01), True) == "reproduced"
    assert c11.verdict(est(-0.001, 0.003), True) == "reproduced"  # within the 0.5 pp tolerance
    assert c11.verdict(est(-0.02), True) == "not reproduced"
    assert c11.verdict(est(0.01), False) == "not reproduced"  # does not level off
    assert c11.verdict(est(-0.004, 0.005), True) == "inconclusive"
    assert c11.verdict(est(0.01, math.nan, 1), True) == "inconclusive"


def test_levels_off_uses_the_ci_or_the_tolerance():
    assert c11.levels_off(est(0.90), est(0.91, half=0.02))
    assert c11.levels_off(est(0.904), est(0.90, half=0.001))
    assert not c11.levels_off(est(0.85), est(0.90, half=0.01))


def _fake_runs(configs):
    runs = []
    for c in configs:
        acc = {n: 0.90 - 0.1 / n + 0.002 * c.seed for n in c11.SIZES}
        series = {
            "step": [float(c.steps)],
            "test_acc": [0.88],
            "precise/ema_test_acc": [0.88 + 0.001 * c.seed * c.seed],
        }
        series.update({f"precise/test_acc/{n}": [a] for n, a in acc.items()})
        runs.append(RunResult(c, "finished", series, c.steps))
    return runs


def test_analyze_fake_runs_gives_a_complete_result():
    configs = c11.sweep(True, 3)
    runs = _fake_runs(configs)
    runs[0] = None
    result = c11.analyze(runs, registry.Context(quick=True, seeds=3))
    check_well_formed(result)
    assert result.verdict == "reproduced"
    assert result.numbers["failed_runs"] == 1
    json.dumps(result.to_json())
    assert len(result.rows) == len(configs) - 1
    stored = json.loads(json.dumps(result.to_json()))["figures"]
    for spec, data in zip(result.figures, stored):
        plt.close(spec.draw(data["data"]))


@pytest.mark.slow
def test_quick_sweep_runs_end_to_end(tmp_path):
    result = registry.run("C11", registry.Context(quick=True, jobs=1, store=tmp_path / "runs.sqlite"))
    assert result.numbers["failed_runs"] == 0
