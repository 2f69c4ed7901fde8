"""What an experiment declares, and the one place that turns its measurements into a settled verdict.

An experiment module declares, before anything runs:

* its text: ``ID``, ``NAME``, ``TITLE``, ``QUESTION``, ``CLAIM``, ``SOURCE`` and ``RULE`` (the verdict
  rule in words; the module's ``rule(records)`` is the same rule in code);
* ``RULE_VERSION`` (the date the rule took its present form) and ``RULE_HISTORY``, the rules it
  replaced (:class:`RuleVersion`: the date, the old text and why it changed), so a stored edition
  can say which version judged it;
* ``PARTS``: a compound claim ("faster AND steadier") as :class:`Part` s, each with its own rule
  and the :class:`Margin` -- the smallest difference that matters, with its reason -- that lets
  "no difference larger than the margin" be a finding (:func:`.stats.effect`);
* ``SEEDS``: its seed policy (:class:`Seeds`): how many seeds a round adds and the cap fixed in
  advance (:mod:`.registry` runs rounds until every verdict is settled or the cap is reached).

:func:`of` reads these into a :class:`Spec`; :func:`settle` applies the claim's rule and every
part's rule with their stability (:mod:`.stability`) and puts them on the ClaimResult that
:func:`result` builds from the spec's text. Adding a claim is one module that declares these and
measures its runs; the verdict plumbing is here.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from . import stability
from .result import VERDICTS, ClaimResult

Rule = stability.Rule  # called with a list of the per-seed records


@dataclasses.dataclass(frozen=True)
class Margin:
    """The smallest difference that matters for one comparison, fixed before the runs, with its reason."""

    size: float  # in the comparison's own units (a fraction for accuracy: 0.01 is 1 point)
    unit: str  # a unit of bnlab.experiments.text.UNITS, for showing it
    why: str  # the principle the number comes from (never the stored results)
    reads: str = ""  # how a reader says it where the size alone is unclear: "10% of the run's length"

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "unit": self.unit, "why": self.why, "reads": self.reads}


@dataclasses.dataclass(frozen=True)
class RuleVersion:
    """A verdict rule as it stood until ``replaced`` (a date, YYYY-MM-DD), and why it changed."""

    replaced: str
    rule: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"replaced": self.replaced, "rule": self.rule, "reason": self.reason}


@dataclasses.dataclass(frozen=True)
class Seeds:
    """A seed policy: ``start`` seeds in the first round, ``step`` more per round until every verdict is
    settled or ``cap`` seeds are reached (``cluster_cap`` when the sweep runs on a cluster). Fixed in
    advance, per claim, from what a round costs; ``quick`` seeds in the one round of a quick run."""

    start: int
    step: int
    cap: int
    cluster_cap: int
    quick: int = 2

    def __post_init__(self) -> None:
        if not 2 <= self.start <= self.cap <= self.cluster_cap or self.step < 1 or self.quick < 1:
            raise ValueError(
                f"expected 2 <= start <= cap <= cluster_cap, step >= 1 and quick >= 1 (got start {self.start}, "
                f"step {self.step}, cap {self.cap}, cluster_cap {self.cluster_cap}, quick {self.quick})"
            )

    def first_round(self, seeds: int, quick: bool) -> int:
        """The seeds of a context setting (one that no part of the rule reads) in a sweep of ``seeds``: the
        first round's, so that later rounds add seeds only where the verdict needs them (all in a quick run)."""
        return seeds if quick else min(seeds, self.start)

    def rounds(self, cap: int | None = None) -> list[int]:
        """The seed counts of the successive rounds: start, start + step, ..., the cap last."""
        cap = self.cap if cap is None else cap
        counts = list(range(self.start, cap, self.step))
        return counts + [cap]


@dataclasses.dataclass(frozen=True)
class Part:
    """One part of a compound claim ("BN trains faster"), judged by its own rule on the same records."""

    key: str  # short, file-safe: "faster"
    title: str  # the part as a reader says it: "BN reaches the target in fewer steps"
    rule: str  # its verdict rule in words
    judge: Rule  # the rule in code: per-seed records -> one of VERDICTS
    margin: Margin | None = None  # the smallest difference that matters, where the part compares two numbers


@dataclasses.dataclass
class PartResult:
    """A part's verdict on this run: the rule's verdict, its stability, and what the report may say."""

    key: str
    title: str
    rule: str
    margin: dict[str, Any] | None
    rule_verdict: str
    stability: stability.Stability

    @property
    def verdict(self) -> str:
        return self.stability.reported

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "rule": self.rule,
            "margin": self.margin,
            "verdict": self.verdict,
            "rule_verdict": self.rule_verdict,
            "stability": self.stability.to_json(),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PartResult:
        return cls(
            d["key"],
            d["title"],
            d["rule"],
            d.get("margin"),
            d["rule_verdict"],
            stability.Stability.from_json(d["stability"]),
        )


@dataclasses.dataclass(frozen=True)
class Spec:
    """An experiment's declaration, read from its module (:func:`of`)."""

    id: str
    name: str
    title: str
    question: str
    claim: str
    source: str
    rule: str
    rule_version: str
    history: tuple[RuleVersion, ...]
    parts: tuple[Part, ...]
    seeds: Seeds | None  # None: a computed experiment, or one with a fixed seed count


def of(module: ModuleType | str) -> Spec:
    """The spec an experiment module (or its dotted name: ``spec.of(__name__)``) declares (module
    docstring); parts, history and seeds are optional."""
    if isinstance(module, str):
        module = sys.modules[module]
    return Spec(
        module.ID,
        module.NAME,
        module.TITLE,
        module.QUESTION,
        module.CLAIM,
        module.SOURCE,
        module.RULE,
        getattr(module, "RULE_VERSION", ""),
        tuple(getattr(module, "RULE_HISTORY", ())),
        tuple(getattr(module, "PARTS", ())),
        getattr(module, "SEEDS", None),
    )


def all_of(verdicts: Sequence[str]) -> str:
    """A claim that holds only if every part holds: reproduced if all parts are, not reproduced if any
    part is not, inconclusive otherwise."""
    for v in verdicts:
        if v not in VERDICTS:
            raise ValueError(f"expected part verdicts in {VERDICTS} (got {v!r})")
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    if any(v == "not reproduced" for v in verdicts):
        return "not reproduced"
    return "inconclusive"


def judge_parts(parts: Sequence[Part], records: Mapping[Any, Any]) -> list[PartResult]:
    """Every part's rule on the records, with its stability (the same two-stage bootstrap as the claim's)."""
    out = []
    for part in parts:
        stab = stability.assess(records, part.judge)
        out.append(
            PartResult(
                part.key,
                part.title,
                part.rule,
                part.margin.to_json() if part.margin else None,
                stab.verdict,
                stab,
            )
        )
    return out


def result(module: ModuleType | str, **fields: Any) -> ClaimResult:
    """A ClaimResult with the spec's text (id, name, question, claim, source, rule, title) filled in;
    ``fields`` are the measured ones (verdict, summary, setup, numbers, figures, rows, labels, ...)."""
    s = of(module)
    return ClaimResult(
        id=s.id, name=s.name, question=s.question, claim=s.claim, source=s.source, rule=s.rule, title=s.title, **fields
    )


def settle(
    module: ModuleType | str,
    res: ClaimResult,
    records: Mapping[Any, Any] | None,
    rule: Rule | None,
    stab: stability.Stability | None = None,
) -> ClaimResult:
    """Judge ``res`` on its per-seed ``records``: the claim's ``rule`` and each declared part's rule, each
    with its stability (:func:`.stability.settle` then says what the report may print). ``stab``: the
    claim's stability when the experiment measured it already (a computed experiment: ``records`` and
    ``rule`` None). Returns ``res``."""
    s = of(module)
    if s.parts and records is None:
        raise ValueError(f"{s.id}: expected per-seed records to judge its {len(s.parts)} parts (got None)")
    res.parts = judge_parts(s.parts, records) if s.parts and records is not None else []
    res.rule_version = s.rule_version
    res.rule_history = [h.to_json() for h in s.history]
    if stab is None:
        if records is None or rule is None:
            raise ValueError(f"{s.id}: expected per-seed records and a rule, or a measured stability (got neither)")
        stab = stability.assess(records, rule)
    return stability.settle(res, stab)
