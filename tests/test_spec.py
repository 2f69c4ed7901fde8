"""The experiment spec: seed policies, parts judged with their stability, and every module's declaration."""

import pytest

from bnlab.experiments import registry, spec, stats


def test_seed_policy_rounds_end_at_the_cap_and_nonsense_is_refused():
    assert spec.Seeds(start=5, step=4, cap=13, cluster_cap=33).rounds() == [5, 9, 13]
    assert spec.Seeds(start=5, step=4, cap=15, cluster_cap=33).rounds() == [5, 9, 13, 15]
    assert spec.Seeds(start=6, step=4, cap=6, cluster_cap=6).rounds() == [6]
    with pytest.raises(ValueError, match="expected 2 <= start <= cap <= cluster_cap"):
        spec.Seeds(start=8, step=4, cap=6, cluster_cap=10)


def test_all_of_a_compound_claim():
    assert spec.all_of(["reproduced", "reproduced"]) == "reproduced"
    assert spec.all_of(["reproduced", "not reproduced"]) == "not reproduced"
    assert spec.all_of(["inconclusive", "not reproduced"]) == "not reproduced"
    assert spec.all_of(["reproduced", "inconclusive"]) == "inconclusive"
    with pytest.raises(ValueError, match="expected part verdicts"):
        spec.all_of(["underpowered"])


def test_parts_are_judged_with_their_own_stability():
    # seeds: a clear difference on "a", none that matters on "b"
    recs = {s: {"a": -5.0 + 0.1 * s, "b": 0.001 * (s % 3 - 1)} for s in range(8)}
    parts = (
        spec.Part("a", "a is lower", "-", lambda rs: stats.effect(stats.estimate([r["a"] for r in rs]), 1.0, -1)),
        spec.Part("b", "b is lower", "-", lambda rs: stats.effect(stats.estimate([r["b"] for r in rs]), 1.0, -1)),
    )
    got = spec.judge_parts(parts, recs)
    assert [(p.key, p.rule_verdict, p.verdict) for p in got] == [
        ("a", "reproduced", "reproduced"),
        ("b", "not reproduced", "not reproduced"),
    ]
    assert all(p.stability.share == 1.0 for p in got)
    again = spec.PartResult.from_json(got[1].to_json())
    assert again.verdict == "not reproduced" and again.stability == got[1].stability


@pytest.mark.parametrize("claim_id", registry.ids())
def test_every_experiment_declares_its_text_once_and_its_parts_and_margins_well(claim_id):
    module = registry.get(claim_id)
    s = spec.of(module)
    assert s.id == claim_id and s.title and s.rule
    keys = [p.key for p in s.parts]
    assert len(keys) == len(set(keys)) and all(k.replace("-", "").isalnum() for k in keys)
    for part in s.parts:
        assert part.title and part.rule and callable(part.judge)
        assert part.margin is None or (part.margin.size > 0 and part.margin.why)
    for old in s.history:
        assert old.replaced and old.rule and old.reason and old.rule != s.rule
    if s.history:
        assert s.rule_version
    if s.seeds is not None:
        assert hasattr(module, "sweep") and s.seeds.rounds()[-1] == s.seeds.cap


def test_every_part_an_answer_or_the_ics_section_names_is_declared_by_its_claim():
    from bnlab.report import ics
    from bnlab.report.answers import Evidence
    from bnlab.report.content import QUESTIONS

    named = {(cid, key) for cid, key in ics.READS.items() if key} | {("C7", k) for k in ics.C7_PARTS}
    for q in QUESTIONS:
        for href, _label, *part in q.answer(Evidence({}, {}, quick=False)).links:
            if part:
                named.add((href[1:], part[0]))
    assert named, "the answers name parts"
    for cid, key in sorted(named):
        assert key in [p.key for p in spec.of(registry.get(cid)).parts], f"{cid} declares no part {key!r}"


@pytest.mark.parametrize("records", [None, {0: {"x": 1.0}}])
def test_settle_without_a_rule_or_a_measured_stability_is_refused(records):
    # C4 declares no parts; without a stability the claim's rule must judge the per-seed records
    module = registry.get("C4")
    res = spec.result(module, verdict="reproduced", summary="", setup={}, numbers={})
    with pytest.raises(ValueError, match="C4: expected per-seed records and a rule, or a measured stability"):
        spec.settle(module, res, records, None)
