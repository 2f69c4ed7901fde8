"""Runs that differ only in what observes the training share one training (bnlab.train.views): one grouped
model trains each seed once, and every run gets the bits it gets when trained alone."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import bnlab.experiments.probes  # noqa: F401 -- registers the experiments' probes
from bnlab.train import RunConfig
from bnlab.train import seeds as seeds_module
from bnlab.train.seeds import same_but_seed, train_group, train_seeds, why_not_grouped
from bnlab.train.store import Store
from bnlab.train.sweep import plan_groups, run_sweep
from bnlab.train.views import trunk

CNN = RunConfig(model="cnn", norm="bn", lr=0.05, steps=40, eval_every=10, eval_samples=300)
# Views of CNN's training: a shorter run with other metric steps, and runs with each kind of probe that
# reads only the model it is handed (gradient norms, gradient ICS with its trial step of the member's part of
# the optimizer, the landscape, precise BN, the shift probe's finish); one names the CNN's own activation,
# which CNN leaves to the model.
VIEWS = (
    CNN,
    dataclasses.replace(CNN, steps=30, eval_every=15, probes=("grad_norm", "ics", "landscape")),
    dataclasses.replace(CNN, steps=25, eval_every=25, probes=("precise_eval:mnist1d:100,300",), act="relu"),
    dataclasses.replace(CNN, steps=20, eval_every=20, probes=("shift_eval:mnist1d:1,2",)),
)
SEEDS = ((0, 1, 2), (1, 2), (0, 2), (2, 5))  # the seeds of each view: not all views of every seed


def _seeds(base, seeds):
    return [dataclasses.replace(base, seed=s) for s in seeds]


def _bits(result):
    """A result without the times (the share of a training's time that it reports)."""
    d = result.to_dict()
    del d["wall_s"], d["train_s"]
    d["series"].pop("time_s", None)
    return d


def _alone(configs, **kw):
    """Each config's result from a group of its own view's seeds only."""
    out = {}
    for template in dict.fromkeys(same_but_seed(c) for c in configs):
        mine = [c for c in configs if same_but_seed(c) == template]
        out.update(zip((c.key() for c in mine), train_group(mine, **kw)))
    return [out[c.key()] for c in configs]


@pytest.fixture
def grouped_models(monkeypatch):
    """The seeds of every grouped model built (one list per training)."""
    built = []
    real = seeds_module.group

    def spy(members):
        built.append(len(members))
        return real(members)

    monkeypatch.setattr(seeds_module, "group", spy)
    return built


def test_views_of_one_training_train_once_and_each_gets_its_bits_alone(grouped_models):
    configs = [c for view, seeds in zip(VIEWS, SEEDS) for c in _seeds(view, seeds)]
    shared = train_seeds(configs)
    assert grouped_models == [seeds_module.GROUP_WIDTH]  # one training for the 9 runs of 4 seeds
    alone = _alone(configs)
    for c, r, a in zip(configs, shared, alone):
        assert r.config == c
        assert _bits(r) == _bits(a), f"{c.steps} steps, eval every {c.eval_every}, probes {c.probes}, seed {c.seed}"
    by_key = {c.key(): r for c, r in zip(configs, shared)}
    short = by_key[_seeds(VIEWS[1], (1,))[0].key()]
    assert short.steps_done == 30 and short.series["step"] == [15.0, 30.0]
    assert "grad_norm/total" in short.series and any(k.startswith("landscape") for k in short.series)
    assert by_key[_seeds(VIEWS[3], (5,))[0].key()].final_metrics  # the shift probe's finish, at step 20
    # the 4 seeds trained once: each run's time is its share of the one training
    assert sum(r.wall_s for r in shared) == pytest.approx(shared[0].wall_s * len(configs))


def test_diverging_seeds_stop_counting_in_each_view_as_they_do_alone():
    base = RunConfig(model="cnn", norm="none", lr=3.0, steps=60, eval_every=10, eval_samples=300)
    views = (base, dataclasses.replace(base, steps=45, eval_every=7, probes=("grad_norm",)))
    views += (dataclasses.replace(base, steps=50, eval_every=25),)
    configs = [c for v in views for c in _seeds(v, range(4))]
    shared = train_seeds(configs)
    alone = _alone(configs)
    assert {r.status for r in shared} == {"finished", "diverged"}  # this lr: seeds 1 and 2 diverge, 0 and 3 do not
    for c, r, a in zip(configs, shared, alone):
        assert _bits(r) == _bits(a), f"{c.steps} steps, eval every {c.eval_every}, seed {c.seed}"


def test_kept_models_are_each_views_model_at_its_own_last_step():
    configs = _seeds(CNN, (0, 1)) + _seeds(dataclasses.replace(CNN, steps=15, eval_every=5), (1,))
    shared = train_seeds(configs, keep_model=True)
    alone = _alone(configs, keep_model=True)
    for r, a in zip(shared, alone):
        got, want = r.model.state_dict(), a.model.state_dict()
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in got)
    assert shared[1].model is not shared[2].model  # seed 1 at 40 steps and at 15


def test_trunk_keeps_what_decides_the_training():
    assert len({trunk(c) for c in VIEWS}) == 1
    assert trunk(CNN) == trunk(dataclasses.replace(CNN, seed=7))
    assert trunk(dataclasses.replace(CNN, act="relu")) == trunk(CNN)  # the CNN's own activation, named
    differ = [
        dataclasses.replace(CNN, lr=0.1),
        dataclasses.replace(CNN, tag="again"),  # a tag separates runs on purpose
        dataclasses.replace(CNN, eval_samples=200),  # other evaluations
        dataclasses.replace(CNN, diverge_factor=10.0),
        dataclasses.replace(CNN, act="tanh"),
        dataclasses.replace(CNN, model="mlp"),  # whose own activation is the sigmoid
    ]
    assert all(trunk(c) != trunk(CNN) for c in differ)
    mlp = dataclasses.replace(CNN, model="mlp")
    assert trunk(dataclasses.replace(mlp, act="sigmoid")) == trunk(mlp) != trunk(dataclasses.replace(mlp, act="relu"))
    # the learning rate of a decaying schedule depends on the run's length
    cosine = dataclasses.replace(CNN, schedule="cosine")
    assert trunk(cosine) != trunk(dataclasses.replace(cosine, steps=20))
    assert trunk(cosine) == trunk(dataclasses.replace(cosine, eval_every=20))
    # probes on the grouped model (hooks on its forward) share nothing
    probed = dataclasses.replace(CNN, probes=("act_pct:blocks.1.act",))
    assert trunk(probed) == dataclasses.replace(probed, seed=0, act="relu")
    assert trunk(dataclasses.replace(probed, eval_every=20)) != trunk(probed)
    reason = why_not_grouped([CNN, dataclasses.replace(CNN, lr=0.1)])
    assert reason is not None and "differ in more than the seed" in reason
    assert why_not_grouped([CNN, CNN]) == "a config appears twice"


def test_the_labs_ics_runs_are_views_of_its_landscape_runs():
    """C6's gradient-ICS runs are C7's landscape runs (the same trainings, other probes): seeds 0-4 of C7's."""
    from bnlab.experiments import c06_ics_gradients as c6
    from bnlab.experiments import c07_landscape as c7

    ics, landscape = c6.sweep(False, None), c7.sweep(False, 8)
    assert {trunk(c) for c in ics} == {trunk(c) for c in landscape} and len({trunk(c) for c in ics}) == 2
    assert {c.seed for c in ics} < {c.seed for c in landscape}
    units = plan_groups(ics + landscape)
    assert len(units) == 2 and sorted(len(u) for u in units) == [13, 13]


def test_train_group_splits_by_seeds_and_keeps_the_order():
    configs = _seeds(dataclasses.replace(CNN, steps=12, eval_every=6), range(10))
    configs += _seeds(dataclasses.replace(CNN, steps=8, eval_every=8), (9, 3))
    results = train_group(configs)
    assert [r.config for r in results] == configs
    alone = _alone(configs)
    assert [_bits(r) for r in results] == [_bits(a) for a in alone]


def test_a_sweep_trains_the_views_as_one_unit_and_stores_each_run(tmp_path, grouped_models):
    configs = [c for view, seeds in zip(VIEWS[:2], SEEDS[:2]) for c in _seeds(view, seeds)]
    units = plan_groups(configs)
    assert units == [configs]
    with Store(tmp_path / "runs.sqlite") as db:
        run_sweep(configs, db, jobs=1)
        stored = [db.get(c) for c in configs]
    assert grouped_models == [seeds_module.GROUP_WIDTH]
    assert [_bits(r) for r in stored] == [_bits(a) for a in _alone(configs, threads=1)]  # the sweep's 1 thread


def test_a_probe_that_does_not_exist_is_left_to_its_run_to_refuse():
    bad = _seeds(dataclasses.replace(CNN, probes=("no_such_probe",)), (0, 1))
    assert trunk(bad[0]) == dataclasses.replace(bad[0], seed=0, act="relu")  # shares nothing
    assert plan_groups(bad + _seeds(CNN, (0,))) == [[CNN], [bad[0]], [bad[1]]]  # each bad run alone
