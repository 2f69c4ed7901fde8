"""Probes that read only the model they are handed, on seeds trained together
(bnlab.train.group_probes.MemberProbes): each member records the series and final metrics train()
records for the same config alone, within the group's float tolerance; its values do not depend on
its companions or slot (bit for bit); gradients written out of a group are the member's own."""

from __future__ import annotations

import copy
import dataclasses
import logging

import pytest
import torch
import torch.nn.functional as F

import bnlab.data as bdata
import bnlab.experiments.probes  # noqa: F401 -- registers the experiments' probes
import one_model_probe  # noqa: F401 -- registers one_model, a probe that runs on one model only
from bnlab.train import RunConfig, train
from bnlab.train.group_probes import MemberProbes
from bnlab.train.grouped import group, member_optimizer, ungroup
from bnlab.train.probes import make_probe
from bnlab.train.seeds import _build, group_step, train_group, train_seeds, why_not_grouped
from bnlab.train.trainer import build_optimizer

# Grouped and single runs compute the same sums in another order (tests/test_seeds.py: parameters
# within 1e-5 after 40 steps); the probes below read those parameters, so their values get the same
# tolerance. Accuracies count test examples: over these short runs none sits near a tie, so they are
# equal (a last-bit difference could move one example, 0.001, in a longer run).
TOL = {"rtol": 1e-5, "atol": 1e-5}
PROBES = ("grad_norm", "ics", "landscape", "precise_eval:mnist1d:100,1000")


@pytest.fixture(scope="module")
def ds():
    return bdata.load("mnist1d")


def _cnn(seeds, **kw) -> list[RunConfig]:
    base = dict(model="cnn", norm="bn", lr=0.05, steps=20, eval_every=10, eval_samples=500, probes=PROBES)
    base.update(kw)
    return [RunConfig(seed=s, **base) for s in seeds]


def _probed(result) -> dict[str, list[float]]:
    return {k: v for k, v in result.series.items() if k.startswith(("grad_norm/", "ics/", "landscape/", "precise/"))}


def _close(got, want, name) -> None:
    torch.testing.assert_close(
        torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(want, dtype=torch.float64), **TOL, msg=name
    )


def test_member_probes_match_train_alone(ds):
    configs = _cnn((0, 5, 7))
    assert why_not_grouped(configs, ds) is None
    together = train_seeds(configs, ds, threads=1)
    for c, got in zip(configs, together):
        alone = train(c, ds, threads=1)
        want = _probed(alone)
        assert {k.split("/")[0] for k in want} == {"grad_norm", "ics", "landscape", "precise"}
        assert _probed(got).keys() == want.keys() and got.series["step"] == alone.series["step"]
        for name, values in want.items():
            if name.startswith("precise/"):
                assert _probed(got)[name] == values, name
            else:
                _close(_probed(got)[name], values, name)


def test_final_metrics_of_a_finish_probe_match_train_alone(ds):
    """The shift probe measures the trained model in ``finish`` (TENT included: it adapts a copy)."""
    configs = _cnn((0, 3), probes=("shift_eval:mnist1d:5:main",), eval_every=20)
    together = train_seeds(configs, ds, threads=1)
    for c, got in zip(configs, together):
        alone = train(c, ds, threads=1)
        assert alone.final_metrics and got.final_metrics.keys() == alone.final_metrics.keys()
        for name, value in alone.final_metrics.items():
            assert got.final_metrics[name] == pytest.approx(value, abs=2e-3), name  # error rates of 1000 examples


def test_member_probe_values_in_any_group(ds):
    """A member's parameters are the same bits in any slot (tests/test_seeds.py), so what a probe reads of
    the model alone is too (PreciseBN's accuracies). Its gradients are, but for one: a convolution's bias
    before BN has a gradient that is zero up to rounding (BN removes any shift), and the grouped
    convolution's reduction for it rounds differently in different slots (1.3e-8 vs 1.5e-8 here, where the
    other gradients are ~1e-2); the probes that read gradients agree to that rounding."""
    groups = [(3,), (1, 3), (0, 2, 4, 3), (9, 0, 2, 4, 5, 6, 7, 3)]  # seed 3 in slots 0, 1, 3 and 7
    series = [_probed(train_seeds(_cnn(seeds, steps=10), ds, threads=1)[seeds.index(3)]) for seeds in groups]
    assert series[0]
    for s in series[1:]:
        assert s.keys() == series[0].keys()
        for name, values in s.items():
            if name.startswith("precise/"):
                assert values == series[0][name], name
            else:
                torch.testing.assert_close(values, series[0][name], rtol=1e-12, atol=1e-7, msg=name)


def test_gradients_written_out_of_a_group_are_the_members_own(ds):
    configs = _cnn((0, 1, 2), probes=())
    members = []
    for c in configs:
        torch.manual_seed(c.seed)
        members.append(_build(c, ((40,), 10)))
    alone = [_build(c, ((40,), 10)) for c in configs]
    for a, m in zip(alone, members):
        a.load_state_dict(m.state_dict())
    grouped = group(members)
    idx = torch.stack([torch.arange(j * 100, (j + 1) * 100) for j in range(3)])
    xb = ds.x_train[idx.view(-1)].view(3, 100, -1)
    yb = ds.y_train[idx.view(-1)].view(3, 100)
    logits = grouped(grouped.inputs(xb))
    F.cross_entropy(logits.reshape(300, -1), yb.view(-1), reduction="none").view(3, 100).mean(1).sum().backward()
    for j, a in enumerate(alone):
        F.cross_entropy(a(xb[j]), yb[j]).backward()
        out = ungroup(grouped, j, members[j], grads=True)
        for (name, p), q in zip(out.named_parameters(), a.parameters()):
            _close(p.grad, q.grad, name)
        assert ungroup(grouped, j, members[j]) is members[j]  # without grads, the gradients stay as written


def test_which_probes_run_per_member(ds, caplog):
    assert make_probe("grad_norm").per_member and not make_probe("act_pct:blocks.0.act").per_member
    assert make_probe("ics").per_member  # it steps the member's part of the group's optimizer
    assert not make_probe("one_model").per_member
    assert "'one_model'" in why_not_grouped(_cnn((0, 1), probes=("grad_norm", "one_model")), ds)
    probed = _cnn((0, 1), steps=10, probes=("grad_norm", "act_pct:blocks.1.act"))
    with caplog.at_level(logging.INFO, logger="bnlab"):
        out = train_group(probed, ds, threads=1)
    assert "one at a time" not in caplog.text
    assert all("grad_norm/total" in r.series and "act_pct/blocks.1.act/p50" in r.series for r in out)


def test_member_probes_without_any_are_empty(ds):
    members = []
    for s in (0, 1):
        torch.manual_seed(s)
        members.append(_build(dataclasses.replace(_cnn((s,))[0], probes=()), ((40,), 10)))
    probes = MemberProbes(("act_pct:blocks.0.act",), group(members), members)
    assert not probes
    probes.arm([0, 1])
    assert probes.collect() == {} and probes.finish(0, ds) == {}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_members_optimizer_steps_it_as_the_group_steps_it(ds, optimizer):
    """member_optimizer: the member's part of the group's optimizer state (SGD's momentum buffers, Adam's
    moments and step), so that its step moves the member as the group's step moves the member's slice; the
    group's optimizer is left as it was."""
    configs = _cnn((0, 1, 2), probes=(), optimizer=optimizer, lr=0.01, weight_decay=1e-3)
    members = []
    for c in configs:
        torch.manual_seed(c.seed)
        members.append(_build(c, ((40,), 10)))
    grouped = group(members)
    opt = build_optimizer(configs[0], list(grouped.parameters()))
    idx = torch.arange(300).view(3, 100)
    stepped = {}

    def each_member(batches, losses):
        before = copy.deepcopy(opt.state_dict())
        for j, m in enumerate(members):
            own = member_optimizer(grouped, j, m, opt)
            assert own.param_groups[0]["lr"] == opt.param_groups[0]["lr"] and own.state  # state after the first step
            own.step()
            stepped[j] = [p.detach().clone() for p in m.parameters()]
        after = opt.state_dict()
        assert before["param_groups"] == after["param_groups"]
        for key, state in before["state"].items():
            for name, value in state.items():
                assert torch.equal(after["state"][key][name], value), (key, name)

    for step in range(3):
        group_step(grouped, opt, ds.x_train, ds.y_train, idx + 300 * step, each_member if step == 2 else None)
    for j, m in enumerate(members):
        for (name, p), want in zip(ungroup(grouped, j, m).named_parameters(), stepped[j]):
            torch.testing.assert_close(p.detach(), want, rtol=0, atol=0, msg=name)


def test_a_members_optimizer_needs_one_parameter_group(ds):
    c = _cnn((0,), probes=())[0]
    torch.manual_seed(0)
    members = [_build(c, ((40,), 10)) for _ in range(2)]
    grouped = group(members)
    params = list(grouped.parameters())
    opt = torch.optim.SGD([{"params": params[:2]}, {"params": params[2:]}], lr=0.1)
    with pytest.raises(ValueError, match="expected an optimizer with one parameter group"):
        member_optimizer(grouped, 0, members[0], opt)
