"""run_all: one sweep for every experiment, the plan and per-experiment progress, stored runs
reused, measured per-experiment times."""

import dataclasses

from bnlab.experiments import ClaimResult, registry, stability
from bnlab.train import RunConfig

TINY = RunConfig(model="mlp", norm="bn", lr=0.1, steps=20, eval_every=20, eval_samples=100, batch_size=50)


class _Fake:
    """An experiment module: a sweep of tiny runs, an analysis that keeps what it was given."""

    def __init__(self, claim_id, seeds):
        self.ID = claim_id
        self.seeds = seeds

    def sweep(self, quick, seeds):
        return [dataclasses.replace(TINY, seed=s, tag=self.ID) for s in self.seeds]

    def analyze(self, runs, ctx):
        self.runs = runs
        return stability.settle(
            ClaimResult(
                id=self.ID,
                name="fake",
                question="?",
                claim="-",
                source="-",
                rule="-",
                verdict="inconclusive",
                summary="-",
                setup={},
                numbers={},
            ),
            stability.computed(["inconclusive"], "a fake"),
        )


class _Computed:
    ID = "CC"

    def run(self, ctx):
        return stability.settle(
            ClaimResult(
                id=self.ID,
                name="computed",
                question="?",
                claim="-",
                source="-",
                rule="-",
                verdict="inconclusive",
                summary="-",
                setup={},
                numbers={},
            ),
            stability.computed(["inconclusive"], "a fake"),
        )


class _Recorder:
    def __init__(self):
        self.calls = []

    def plan(self, runs, stored):
        self.calls.append(("plan", runs, stored))

    def update(self, *args):
        self.calls.append(args)


def _fakes(monkeypatch):
    fakes = {"CA": _Fake("CA", [0, 1]), "CB": _Fake("CB", [0, 1, 2]), "CC": _Computed()}
    monkeypatch.setattr(registry, "EXPERIMENTS", {k: k for k in fakes})
    monkeypatch.setattr(registry, "get", lambda k: fakes[k])
    return fakes


def test_run_all_plans_every_experiment_then_reports_each_run_and_reuses_the_store(tmp_path, monkeypatch):
    fakes = _fakes(monkeypatch)
    store = tmp_path / "runs.sqlite"
    rec = _Recorder()
    registry.run_all(progress=rec, store=store)
    assert rec.calls == [
        ("plan", {"CA": 2, "CB": 3, "CC": 0}, {"CA": 0, "CB": 0, "CC": 0}),
        ("CA", 1, 2),
        ("CA", 2, 2),
        ("CB", 1, 3),
        ("CB", 2, 3),
        ("CB", 3, 3),
    ]
    assert all(r is not None and r.status == "finished" for f in list(fakes.values())[:2] for r in f.runs)
    rec = _Recorder()
    registry.run_all(progress=rec, store=store)
    assert rec.calls == [("plan", {"CA": 2, "CB": 3, "CC": 0}, {"CA": 2, "CB": 3, "CC": 0})]  # nothing ran


def test_a_bare_progress_function_gets_each_run(tmp_path, monkeypatch):
    _fakes(monkeypatch)
    calls = []
    registry.run_all(progress=lambda *a: calls.append(a), store=tmp_path / "runs.sqlite")
    assert calls == [("CA", 1, 2), ("CA", 2, 2), ("CB", 1, 3), ("CB", 2, 3), ("CB", 3, 3)]


def test_each_experiment_time_is_its_runs_measured_wall_time_plus_its_analysis(tmp_path, monkeypatch):
    fakes = _fakes(monkeypatch)
    results = {r.id: r for r in registry.run_all(store=tmp_path / "runs.sqlite")}
    for claim_id in ("CA", "CB"):
        runs_s = sum(r.wall_s for r in fakes[claim_id].runs)
        assert runs_s > 0
        assert runs_s <= results[claim_id].wall_time_s < runs_s + 0.5  # analysis of a fake: instant
    assert 0 <= results["CC"].wall_time_s < 0.5
    # reused runs keep the times they were measured with
    again = {r.id: r for r in registry.run_all(store=tmp_path / "runs.sqlite")}
    assert again["CB"].wall_time_s >= sum(r.wall_s for r in fakes["CB"].runs)
