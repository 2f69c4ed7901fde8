"""scripts/rejudge.py: a claim's rule on stored runs with fewer seeds or cut at an earlier step, nothing
trained; the claim's module is left as it was."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from bnlab.experiments import registry, stability
from bnlab.experiments.result import ClaimResult
from bnlab.train import RunConfig
from bnlab.train.store import Store
from fake_runs import fake_run

_SPEC = importlib.util.spec_from_file_location("rejudge", Path(__file__).resolve().parents[1] / "scripts/rejudge.py")
assert _SPEC is not None and _SPEC.loader is not None
rejudge = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(rejudge)

BASE = RunConfig(model="mlp", norm="bn", lr=0.1, eval_every=10, tag="rejudge")


class _Claim:
    """A claim whose rule is "reproduced" when every run finished with test accuracy >= 0.5."""

    ID = "CX"

    def __init__(self) -> None:
        self.FULL = {"steps": 40}
        self.seen: list[list] = []
        self.lengths: list[int] = []

    def sweep(self, quick, seeds):
        return [dataclasses.replace(BASE, steps=self.FULL["steps"], seed=s) for s in range(seeds or 3)]

    def analyze(self, runs, ctx):
        self.seen.append(runs)
        self.lengths.append(self.FULL["steps"])  # what an analysis that reads FULL would see

        def rule(recs):
            return "reproduced" if all(r >= 0.5 for r in recs) else "not reproduced"

        recs = {r.config.seed: (0.0 if r.diverged else r.series["test_acc"][-1]) for r in runs}
        verdict = rule(list(recs.values()))
        result = ClaimResult(
            id="CX",
            name="x",
            question="?",
            claim="-",
            source="-",
            rule="-",
            verdict=verdict,
            summary="-",
            setup={},
            numbers={},
        )
        return stability.settle(result, stability.assess(recs, rule))


def _acc(step):
    return step / 50  # 0.2 at step 10, 0.8 at step 40


def test_cut_keeps_the_rows_up_to_the_step_and_a_later_divergence_does_not_count():
    run = fake_run(dataclasses.replace(BASE, steps=40), _acc, diverged_at=35)
    short = dataclasses.replace(BASE, steps=30)
    cut = rejudge.cut(run, 30, short)
    assert cut.config == short and cut.series["step"] == [10.0, 20.0, 30.0] and cut.status == "finished"
    assert cut.diverged_step is None and cut.steps_done == 30 and cut.series["test_acc"][-1] == pytest.approx(0.6)
    assert rejudge.cut(run, 40, run.config).diverged_step == 35 and rejudge.cut(None, 30, short) is None


def test_looks_judge_the_stored_runs_cut_short_and_leave_the_claim_as_it_was(tmp_path, monkeypatch):
    claim = _Claim()
    full = claim.FULL
    monkeypatch.setattr(registry, "get", lambda cid: claim)
    store = tmp_path / "runs.sqlite"
    with Store(store) as st:
        for c in claim.sweep(False, 4):
            st.save(fake_run(c, _acc))
    lines = rejudge.looks(store, "CX", [2, 4, 5], [20, None])
    assert lines[0].startswith("CX steps=20 seeds=2: not reproduced 100.0%")  # 0.4 at step 20
    assert lines[1].startswith("CX steps=20 seeds=4: not reproduced")
    assert lines[2] == "CX steps=20 seeds=5: 1 of 5 runs missing from the store"
    assert lines[3].startswith("CX steps=40 seeds=2: reproduced 100.0%")  # as stored: 0.8 at step 40
    assert [len(runs) for runs in claim.seen] == [2, 4, 2, 4]
    assert {r.config.steps for r in claim.seen[0]} == {20} and {r.series["step"][-1] for r in claim.seen[0]} == {20.0}
    assert claim.lengths == [20, 20, 40, 40]  # the analysis of a cut look sees the cut length
    assert claim.FULL == {"steps": 40} and claim.FULL is full  # its own FULL, put back


def test_a_claim_without_a_declared_length_cannot_be_cut(tmp_path, monkeypatch):
    claim = _Claim()
    del claim.FULL
    monkeypatch.setattr(registry, "get", lambda cid: claim)
    with pytest.raises(ValueError, match=r"expected CX to declare FULL\['steps'\]"):
        rejudge.looks(tmp_path / "runs.sqlite", "CX", [2], [20])
