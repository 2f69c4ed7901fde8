"""The sweep engine sends groups: the seeds of a setting trained together, each stored under its own
key, progress counted in runs, and a seed's stored result the same bits whichever group trained it."""

from __future__ import annotations

import dataclasses

import pytest

from bnlab.train import RunConfig, cluster, train
from bnlab.train.seeds import GROUP_WIDTH, train_seeds
from bnlab.train.store import Store
from bnlab.train.sweep import plan_groups, run_sweep

CNN = RunConfig(model="cnn", norm="bn", lr=0.05, steps=20, eval_every=10, eval_samples=300)
MLP = RunConfig(model="mlp", norm="bn", act="sigmoid", lr=0.5, steps=20, eval_every=10, eval_samples=300)


def _no_time(series):
    return {k: v for k, v in series.items() if k != "time_s"}


def _seeds(base, seeds):
    return [dataclasses.replace(base, seed=s) for s in seeds]


def test_plan_groups_gathers_the_seeds_of_each_setting():
    configs = _seeds(CNN, range(GROUP_WIDTH + 2)) + _seeds(MLP, (4, 5)) + _seeds(CNN, (20,))
    units = plan_groups(configs)
    assert [[c.seed for c in u] for u in units] == [
        list(range(GROUP_WIDTH)),
        [GROUP_WIDTH, GROUP_WIDTH + 1, 20],
        [4, 5],
    ]
    assert all(len({dataclasses.replace(c, seed=0) for c in u}) == 1 for u in units)
    assert plan_groups(configs, group_seeds=False) == [[c] for c in configs]


def test_plan_groups_splits_what_cannot_be_grouped_and_puts_the_dearest_first():
    alone = _seeds(dataclasses.replace(CNN, norm="frozen_bn"), (0, 1, 2))  # frozen BN trains one seed at a time
    long = _seeds(dataclasses.replace(CNN, steps=CNN.steps * 10, lr=CNN.lr / 2), (0, 1))  # not CNN's training
    units = plan_groups(_seeds(CNN, (0, 1)) + alone + long)
    assert units[0] == long  # ten times the steps: first
    assert units[1] == _seeds(CNN, (0, 1))  # a group of seeds: about three single runs
    assert units[2:] == [[c] for c in alone]  # one unit per seed, so that workers share them
    cheap = _seeds(dataclasses.replace(CNN, steps=1), (0,))
    assert plan_groups(cheap + alone, group_seeds=False) == [[c] for c in alone + cheap]


def test_a_sweep_trains_each_setting_as_a_group_and_stores_every_seed(tmp_path, monkeypatch):
    from bnlab.train import seeds as seeds_module

    groups = []
    real = seeds_module.train_seeds

    def spy(configs, *args, **kw):
        groups.append([c.seed for c in configs])
        return real(configs, *args, **kw)

    monkeypatch.setattr(seeds_module, "train_seeds", spy)
    configs = _seeds(CNN, (0, 1, 2)) + _seeds(MLP, (0, 1))
    seen = []
    results = run_sweep(configs, tmp_path / "s.db", progress=seen.append)
    assert groups == [[0, 1, 2], [0, 1]]
    assert [p.done for p in seen] == [1, 2, 3, 4, 5] and seen[-1].total == 5  # runs, as before
    together = train_seeds(configs[:3], threads=1) + train_seeds(configs[3:], threads=1)
    for c, r, t in zip(configs, results, together):
        assert r.config == c and _no_time(r.series) == _no_time(t.series)
    with Store(tmp_path / "s.db") as store:
        assert store.counts() == {"finished": 5}
        assert store.done(configs) == {c.key() for c in configs}


def test_a_stored_seed_is_the_same_whatever_group_trained_it(tmp_path):
    """Seed 2 trained with seeds 0 and 1, alone, or with 5 others found partly done: the same bits."""
    one = run_sweep(_seeds(MLP, (0, 1, 2)), tmp_path / "a.db")[2]
    two = run_sweep(_seeds(MLP, (2,)), tmp_path / "b.db")[0]
    run_sweep(_seeds(MLP, (5, 6)), tmp_path / "c.db")
    three = run_sweep(_seeds(MLP, (5, 6, 7, 2, 8)), tmp_path / "c.db")[3]  # 5, 6 found done: 7, 2, 8 run
    for r in (two, three):
        assert _no_time(r.series) == _no_time(one.series)
        assert (r.status, r.steps_done) == (one.status, one.steps_done)


def test_without_grouping_a_sweep_runs_the_single_seed_trainer(tmp_path):
    configs = _seeds(MLP, (0, 1))
    results = run_sweep(configs, tmp_path / "s.db", group_seeds=False)
    for c, r in zip(configs, results):
        assert _no_time(r.series) == _no_time(train(c, threads=1).series)
        assert "seed_group" not in r.env


def test_dask_tasks_carry_groups_and_give_the_bits_of_this_process(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    submitted = []
    real = cluster.submit

    def spy(client, configs, *args):
        submitted.append([c.seed for c in configs])
        return real(client, configs, *args)

    monkeypatch.setattr(cluster, "submit", spy)
    configs = _seeds(MLP, (0, 1, 2)) + _seeds(CNN, (3, 4))
    seen = []
    results = run_sweep(configs, tmp_path / "d.db", jobs=2, progress=seen.append)
    assert sorted(submitted) == [[0, 1, 2], [3, 4]]
    assert [p.done for p in seen] == [1, 2, 3, 4, 5]
    here = run_sweep(configs, tmp_path / "h.db")
    for r, h in zip(results, here):
        assert _no_time(r.series) == _no_time(h.series)
        assert r.env["worker"].startswith("tcp://127.0.0.1:")
