"""run_all: one sweep for every experiment, per-experiment progress, stored runs reused."""

import dataclasses

from bnlab.experiments import ClaimResult, registry
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
        return ClaimResult(id=self.ID, name="fake", question="?", claim="-", source="-", rule="-",
                           verdict="inconclusive", summary="-", setup={}, numbers={})


def test_run_all_reports_per_experiment_progress_and_reuses_the_store(tmp_path, monkeypatch):
    fakes = {"CA": _Fake("CA", [0, 1]), "CB": _Fake("CB", [0, 1, 2])}
    monkeypatch.setattr(registry, "EXPERIMENTS", {k: k for k in fakes})
    monkeypatch.setattr(registry, "get", lambda k: fakes[k])
    calls = []
    store = tmp_path / "runs.sqlite"
    registry.run_all(progress=lambda *a: calls.append(a), store=store)
    assert calls == [("CA", 1, 2), ("CA", 2, 2), ("CB", 1, 3), ("CB", 2, 3), ("CB", 3, 3)]
    assert all(r is not None and r.status == "finished" for f in fakes.values() for r in f.runs)
    calls.clear()
    registry.run_all(progress=lambda *a: calls.append(a), store=store)
    assert calls == [("CA", 2, 2), ("CB", 3, 3)]  # everything reused: announced once, nothing ran
