"""Activation probes of seeds trained together (bnlab.train.group_probes): each member records the
series train() records for the same config alone, within a stated float tolerance; a member's
values do not depend on its companions or slot (bit for bit); a diverged member records no more."""

from __future__ import annotations

import dataclasses
import logging
import math

import pytest
import torch

import bnlab.data as bdata
import bnlab.experiments.probes  # noqa: F401 -- registers the experiments' probes
import one_model_probe  # noqa: F401 -- registers one_model, a probe that runs on one model only
from bnlab.experiments import c01_bn_trains_faster as c1
from bnlab.nn.norm_act import BatchNormAct2d
from bnlab.train import RunConfig, train
from bnlab.train import seeds as seeds_module
from bnlab.train.group_probes import GroupProbes
from bnlab.train.grouped import group
from bnlab.train.probes import ActivationPercentiles
from bnlab.train.seeds import train_group, train_seeds, why_not_grouped

# A probe reads activations of the step's training forward, which grouped and single runs compute
# with the same sums in another order (tests/test_seeds.py). Over these 40-step runs (seeds 0, 5,
# 7) the measured gaps in the probe values are at most 3.2e-6 (C1's MLP at lr 0.5, BN) and 6e-7
# (the CNN); the tolerance is 1e-5, absolute and relative, as for the parameters in test_seeds.py.
# (At C1's lr 2.0 with BN the runs themselves drift apart -- 6e-4 in the parameters of seed 7
# after 40 steps -- as test_seeds.py describes for SGD near its largest stable rate; train() alone
# with 1 vs 2 threads drifts as far there: 2e-4 in the parameters, 2.8e-4 in the probe values.)
ACT_TOL = {"rtol": 1e-5, "atol": 1e-5}

CNN_PROBES = (
    "act_pct:blocks.1.act:3",
    "act_pct_fixed:blocks.1.act:3",
    "act_pct:blocks.0.norm",
    "act_moments:blocks.2.act",
)


@pytest.fixture(scope="module")
def ds():
    return bdata.load("mnist1d")


def _c1(norm: str, seeds, **kw) -> list[RunConfig]:
    """C1's config (MLP, sigmoid, batch 60, units 0-7 of the last hidden sigmoid's input probed)."""
    base = dict(norm=norm, lr=0.5, steps=40, eval_every=10)
    base.update(kw)
    return [dataclasses.replace(c1.BASE, seed=s, **base) for s in seeds]


def _cnn(seeds, **kw) -> list[RunConfig]:
    base = dict(model="cnn", norm="bn", lr=0.05, steps=40, eval_every=10, eval_samples=500, probes=CNN_PROBES)
    base.update(kw)
    return [RunConfig(seed=s, **base) for s in seeds]


def _probe_series(result) -> dict[str, list[float]]:
    return {
        k: v for k, v in result.series.items() if k.startswith(("act_pct/", "act_pct_fixed/", "act_mean/", "act_std/"))
    }


def _assert_probes_match(got, alone) -> None:
    want = _probe_series(alone)
    assert want and _probe_series(got).keys() == want.keys()
    assert got.series["step"] == alone.series["step"]
    for name, values in want.items():
        torch.testing.assert_close(
            torch.tensor(_probe_series(got)[name], dtype=torch.float64),
            torch.tensor(values, dtype=torch.float64),
            **ACT_TOL,
            msg=name,
        )


@pytest.mark.parametrize("norm", ["bn", "none"])
def test_c1_member_probe_series_match_train_alone(ds, norm):
    configs = _c1(norm, (0, 5, 7))
    assert why_not_grouped(configs, ds) is None
    together = train_seeds(configs, ds, threads=1)
    for c, got in zip(configs, together):
        alone = train(c, ds, threads=1)
        assert len(_probe_series(alone)) == 3 * len(c1.PROBES) == 3 * 2 * len(c1.UNITS)
        _assert_probes_match(got, alone)


# BN after tanh, not after ReLU: ReLU before BN amplifies last-bit differences (test_seeds.py),
# 2e-2 in the parameters of seed 7 within these 40 steps.
@pytest.mark.parametrize(
    "setting",
    [
        {"probes": CNN_PROBES},
        {"placement": "after", "act": "tanh", "probes": ("act_pct:blocks.0.norm:2", "act_moments:blocks.1.act")},
    ],
    ids=["bn_relu", "tanh_bn"],
)
def test_cnn_member_probe_series_match_train_alone(ds, setting):
    """Percentiles of one channel of a ReLU's input (the BN + ReLU block then unfused), of a norm's
    whole input, and the moments of an activation's input; with BN before and after the activation."""
    configs = _cnn((0, 5, 7), **setting)
    assert why_not_grouped(configs, ds) is None
    together = train_seeds(configs, ds, threads=1)
    for c, got in zip(configs, together):
        _assert_probes_match(got, train(c, ds, threads=1))


def test_only_blocks_whose_act_is_read_are_unfused(ds):
    members = []
    for s in (0, 1):
        torch.manual_seed(s)
        members.append(seeds_module._build(_cnn((s,))[0], ((40,), 10)))
    grouped = group(members)
    assert all(isinstance(b.norm, BatchNormAct2d) and b.norm.act == "relu" for b in grouped.blocks)
    GroupProbes(("act_pct:blocks.1.act:3", "act_pct:blocks.2.norm"), grouped, members[0])
    acts = [(b.norm.act, type(b.act).__name__) for b in grouped.blocks]
    assert acts == [("relu", "Identity"), ("identity", "ReLU"), ("relu", "Identity")]


@pytest.mark.parametrize("setting", ["c1_bn", "cnn"])
def test_member_probe_values_are_the_same_in_any_group(ds, setting):
    groups = [(3,), (1, 3), (0, 2, 4, 3), (9, 0, 2, 4, 5, 6, 7, 3)]  # seed 3 in slots 0, 1, 3 and 7
    make = (lambda s: _c1("bn", s, steps=20)) if setting == "c1_bn" else (lambda s: _cnn(s, steps=20))
    series = [_probe_series(train_seeds(make(seeds), ds, threads=1)[seeds.index(3)]) for seeds in groups]
    assert series[0]
    for s in series[1:]:
        assert s == series[0]


def test_diverged_member_records_no_more_probe_values(ds, monkeypatch):
    configs = _c1("bn", (0, 1, 2), probes=(c1.PROBES[0],))  # the fixed sample's: read before the training step
    clean = train_seeds(configs, ds, threads=1)
    real_group, real_measure = seeds_module.group, ActivationPercentiles.measure
    calls = []

    def poisoned(members):
        grouped = real_group(members)
        with torch.no_grad():
            grouped.head.weight[1].fill_(float("inf"))  # member 1's loss is not finite from step 1
        return grouped

    def measure(self, x):
        calls.append(x.shape)
        return real_measure(self, x)

    monkeypatch.setattr(seeds_module, "group", poisoned)
    monkeypatch.setattr(ActivationPercentiles, "measure", measure)
    hurt = train_seeds(configs, ds, threads=1)
    # found at the first metric step (10): that step's row, as train() records it, then nothing
    assert hurt[1].status == "diverged" and hurt[1].steps_done == 1
    assert [len(v) for v in _probe_series(hurt[1]).values()] == [1, 1, 1]
    # 4 metric steps of the 2 healthy members, 1 of the diverged one; the 5 filling copies never
    assert len(calls) == 4 * 2 + 1
    for j in (0, 2):
        assert _probe_series(hurt[j]) == _probe_series(clean[j])


@pytest.mark.parametrize("eval_every", [20, 30])
def test_diverged_row_has_the_probe_values_train_records(ds, eval_every):
    """Divergence found at a metric step (20) records that step's probe values in the diverged row,
    found between metric steps (the check at step 25) none: as train() does."""
    configs = _c1("bn", (0, 1), lr=2000.0, steps=60, eval_every=eval_every, diverge_factor=3.0)
    together = train_seeds(configs, ds, threads=1)
    for c, got in zip(configs, together):
        alone = train(c, ds, threads=1)
        assert (got.status, got.diverged_step, got.series["step"]) == ("diverged", alone.diverged_step, [2.0])
        assert _probe_series(got).keys() == _probe_series(alone).keys()
        assert bool(_probe_series(got)) == (eval_every == 20)


def test_which_probes_are_grouped(ds, caplog):
    assert why_not_grouped(_cnn((0, 1), probes=("act_moments:blocks.0.act",)), ds) is None
    assert "'one_model'" in why_not_grouped(_cnn((0, 1), probes=("act_pct:blocks.0.act", "one_model")), ds)
    assert "'head'" in why_not_grouped(_cnn((0, 1), probes=("act_pct:head",)), ds)
    with pytest.raises(ValueError, match="expected a module path"):  # train()'s error
        train_seeds(_cnn((0, 1), probes=("act_pct:blocks.7.act",)), ds)
    probed = _c1("none", (0, 1), steps=20)
    with caplog.at_level(logging.INFO, logger="bnlab"):
        out = train_group(probed, ds, threads=1)
    assert "one at a time" not in caplog.text
    assert all(r.env["seed_group"] == seeds_module.GROUP_WIDTH for r in out)
    assert all(not math.isnan(v) for r in out for s in _probe_series(r).values() for v in s)
