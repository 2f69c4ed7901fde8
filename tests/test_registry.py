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


class _Rounds:
    """An experiment with a seed policy whose verdict settles once it has ``settles_at`` seeds."""

    def __init__(self, claim_id, policy, settles_at):
        self.ID = claim_id
        self.SEEDS = policy
        self.settles_at = settles_at
        self.looks = []

    def sweep(self, quick, seeds):
        return [dataclasses.replace(TINY, seed=s, tag=self.ID) for s in range(seeds or self.SEEDS.start)]

    def analyze(self, runs, ctx):
        n = len(runs)
        self.looks.append(n)
        share = 1.0 if n >= self.settles_at else 0.5
        stab = stability.Stability("inconclusive", share, n, 500, {"inconclusive": int(500 * share)}, "fake")
        result = ClaimResult(
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
        )
        return stability.settle(result, stab)


def test_rounds_add_seeds_until_settled_or_the_cap_each_round_one_sweep(tmp_path, monkeypatch):
    from bnlab.experiments.spec import Seeds

    fakes = {
        "CA": _Rounds("CA", Seeds(start=3, step=1, cap=5, cluster_cap=6), settles_at=3),  # settled at looks 1 and 2
        "CB": _Rounds("CB", Seeds(start=3, step=1, cap=5, cluster_cap=6), settles_at=99),  # never: runs to the cap
    }
    monkeypatch.setattr(registry, "EXPERIMENTS", {k: k for k in fakes})
    monkeypatch.setattr(registry, "get", lambda k: fakes[k])
    rec = _Recorder()
    results = {r.id: r for r in registry.run_all(progress=rec, store=tmp_path / "runs.sqlite")}
    assert fakes["CA"].looks == [3, 4] and fakes["CB"].looks == [3, 4, 5]
    plans = [c for c in rec.calls if c[0] == "plan"]
    # one sweep per round, holding every experiment still open; earlier seeds come from the store
    assert plans == [
        ("plan", {"CA": 3, "CB": 3}, {"CA": 0, "CB": 0}),
        ("plan", {"CA": 4, "CB": 4}, {"CA": 3, "CB": 3}),
        ("plan", {"CB": 5}, {"CB": 4}),
    ]
    assert results["CA"].rounds["rounds"] == 2 and results["CA"].rounds["stopped"] == "settled"
    assert results["CB"].rounds == {"rounds": 3, "seeds": 5, "plan": [3, 4, 5], "stopped": "cap"}
    assert results["CB"].verdict == "underpowered"


def test_a_look_stops_the_rounds_only_when_the_look_before_gave_the_same_stable_verdicts(tmp_path, monkeypatch):
    from bnlab.experiments.spec import Seeds

    class _Flipping(_Rounds):  # stable at every look, but the verdict changes from look to look
        def analyze(self, runs, ctx):
            result = super().analyze(runs, ctx)
            v = "reproduced" if len(runs) % 2 else "inconclusive"
            result.stability = dataclasses.replace(result.stability, verdict=v, outcomes={v: 500})
            result.rule_verdict = v
            result.verdict = result.stability.reported
            return result

    fake = _Flipping("CA", Seeds(start=3, step=1, cap=6, cluster_cap=6), settles_at=0)
    monkeypatch.setattr(registry, "EXPERIMENTS", {"CA": "CA"})
    monkeypatch.setattr(registry, "get", lambda k: fake)
    (result,) = registry.run_all(store=tmp_path / "runs.sqlite")
    assert fake.looks == [3, 4, 5, 6] and result.rounds["stopped"] == "cap" and result.verdict == "inconclusive"


def test_quick_and_explicit_seeds_are_one_round_and_the_cluster_cap_is_larger(tmp_path, monkeypatch):
    from bnlab.experiments.spec import Seeds

    policy = Seeds(start=3, step=2, cap=5, cluster_cap=9)
    fake = _Rounds("CA", policy, settles_at=99)
    assert policy.rounds() == [3, 5] and policy.rounds(policy.cluster_cap) == [3, 5, 7, 9]
    assert registry._plan(fake, registry.Context(scheduler="tcp://x:1")) == [3, 5, 7, 9]
    assert registry._plan(fake, registry.Context(quick=True)) is None
    assert registry._plan(fake, registry.Context(seeds=4)) is None
    monkeypatch.setattr(registry, "EXPERIMENTS", {"CA": "CA"})
    monkeypatch.setattr(registry, "get", lambda k: fake)
    registry.run_all(store=tmp_path / "runs.sqlite", seeds=4)
    assert fake.looks == [4]


def test_a_quick_run_trains_each_seed_alone_and_a_full_run_in_groups(tmp_path, monkeypatch):
    # the runs' env says how each was trained: "seed_group" (the group's width) only for grouped runs
    fakes = _fakes(monkeypatch)
    registry.run_all(quick=True, store=tmp_path / "quick.sqlite")
    assert all("seed_group" not in r.env for f in list(fakes.values())[:2] for r in f.runs)
    registry.run_all(quick=False, store=tmp_path / "full.sqlite")
    assert all(r.env.get("seed_group") for f in list(fakes.values())[:2] for r in f.runs)


def test_runs_train_with_the_threads_asked_for(tmp_path, monkeypatch):
    fakes = _fakes(monkeypatch)
    registry.run_all(quick=True, store=tmp_path / "one.sqlite")
    assert {r.env["threads"] for f in list(fakes.values())[:2] for r in f.runs} == {1}
    registry.run_all(quick=True, store=tmp_path / "two.sqlite", threads=2)
    assert {r.env["threads"] for f in list(fakes.values())[:2] for r in f.runs} == {2}


class _Listed(_Fake):
    """A fake whose sweep is a given list of configs; its analysis notes when it ran, in ``events``."""

    def __init__(self, claim_id, configs, events):
        super().__init__(claim_id, [])
        self.configs, self.events = configs, events

    def sweep(self, quick, seeds):
        return list(self.configs)

    def analyze(self, runs, ctx):
        self.events.append(("judged", self.ID, [r is not None for r in runs]))
        return super().analyze(runs, ctx)


def test_an_experiment_is_judged_as_soon_as_its_runs_are_in_while_the_others_run(tmp_path, monkeypatch):
    # The judging (a bootstrap of the rule) need not wait for the round's last run. A run two experiments share
    # is waited for by both, though the progress counts it for one only; a run already stored is not.
    events = []
    a0, b0 = (dataclasses.replace(TINY, seed=s, tag=t) for s, t in ((0, "a"), (1, "b")))
    shared = dataclasses.replace(TINY, seed=2, steps=10, eval_every=10, tag="s")  # cheaper: it runs last
    fakes = {
        "CA": _Listed("CA", [a0], events),
        "CB": _Listed("CB", [b0, shared], events),
        "CC": _Listed("CC", [shared], events),
        "CD": _Listed("CD", [a0], events),  # all its runs are CA's: judged with CA's
    }
    monkeypatch.setattr(registry, "EXPERIMENTS", {k: k for k in fakes})
    monkeypatch.setattr(registry, "get", lambda k: fakes[k])
    rec = _Recorder()
    rec.update = lambda *args: events.append(args)
    registry.run_all(quick=True, progress=rec, store=tmp_path / "runs.sqlite")
    assert events == [
        ("CD", 1, 1),  # a shared run counts for the last experiment that lists it
        ("judged", "CA", [True]),
        ("judged", "CD", [True]),
        ("CB", 1, 1),
        ("CC", 1, 1),  # the shared run: CB, though its progress was complete, waited for it
        ("judged", "CB", [True, True]),
        ("judged", "CC", [True]),
    ]
    events.clear()
    registry.run_all(quick=True, progress=rec, store=tmp_path / "runs.sqlite")  # all stored: judged after the sweep
    assert events == [("judged", k, [True] * len(fakes[k].configs)) for k in fakes]
