"""What an experiment returns: the contract between the experiments and the report.

An experiment (one module per claim, listed with its source in docs/claims.md) states its verdict
rule before it runs, runs or reuses its sweep from the results store, and returns a
:class:`ClaimResult`. The report renders ClaimResults; results.json is ``[r.to_json() for r in
results]`` plus the environment.

``numbers`` maps a stable key (what programs read: the report's answers, the README table, tests)
to a value. A value with uncertainty is written with :func:`estimate` --
``{"mean": m, "ci95": [lo, hi], "n": n}`` -- a paired comparison as
:meth:`bnlab.experiments.stats.PairedTest.to_json`. ``labels`` gives each key the plain words and
unit a reader sees (:class:`Label`); :mod:`bnlab.experiments.text` writes every number in one
notation, "mean [low, high]" with the 95% interval in brackets.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

VERDICTS = ("reproduced", "not reproduced", "inconclusive")  # what a verdict rule can give
UNDERPOWERED = "underpowered"  # what the report says instead when the rule's verdict is not stable
REPORTED = VERDICTS + (UNDERPOWERED,)  # what ClaimResult.verdict can be (see bnlab.experiments.stability)


class Label(NamedTuple):
    """How the page shows one entry of ``ClaimResult.numbers``."""

    text: str  # plain words, e.g. "Steps to 50% test accuracy, BN − no BN"
    unit: str = ""  # a unit of bnlab.experiments.text.UNITS: "%", "points", "steps", "×", ...
    detail: bool = False  # True: folded away with the statistics; False: in the card's key numbers


@dataclasses.dataclass
class FigureSpec:
    """A figure of an experiment: its data (JSON-able) and the function that draws it.

    ``draw(data) -> matplotlib.figure.Figure``; the report calls it and embeds the figure inline.
    """

    name: str  # file-safe identifier, e.g. "accuracy_vs_steps"
    title: str
    data: dict[str, Any]
    draw: Callable[[dict[str, Any]], Any]
    caption: str = ""


@dataclasses.dataclass
class ClaimResult:
    id: str  # "C1" .. "C12"
    name: str  # short readable name, e.g. "bn-trains-faster"
    question: str  # the question a user asks, e.g. "Does BN make training faster?"
    claim: str  # the published claim, in a sentence
    source: str  # the paper / post it comes from
    rule: str  # the verdict rule, as stated in code before the runs
    verdict: str  # what the report says: the rule's verdict if stable, else "underpowered" (REPORTED)
    summary: str  # one plain-language paragraph
    setup: dict[str, Any]  # data, model, sweep, seeds, quick or full
    numbers: dict[str, Any]  # the numbers the verdict rests on (means, CIs, p-values, ...)
    figures: list[FigureSpec] = dataclasses.field(default_factory=list)
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # per-run table -> CSV
    wall_time_s: float = 0.0
    title: str = ""  # the claim as tested, in a few words (the module's TITLE)
    finding: str = ""  # one plain sentence: what this run found (opens the card, the README row)
    labels: dict[str, Label] = dataclasses.field(default_factory=dict)  # numbers key -> Label
    # The rule's verdict on all seeds and how stable it is (bnlab.experiments.stability.settle sets both).
    rule_verdict: str = ""
    stability: Any = None  # a bnlab.experiments.stability.Stability
    # A compound claim's parts, each with its own verdict and stability (bnlab.experiments.spec.PartResult).
    parts: list[Any] = dataclasses.field(default_factory=list)
    rule_version: str = ""  # the date the rule that judged this run took its form (the module's RULE_VERSION)
    rule_history: list[dict[str, str]] = dataclasses.field(default_factory=list)  # the rules it replaced
    rounds: dict[str, Any] = dataclasses.field(default_factory=dict)  # seed rounds run (bnlab.experiments.registry)

    def __post_init__(self) -> None:
        if self.verdict not in REPORTED:
            raise ValueError(f"expected verdict in {REPORTED} (got {self.verdict!r})")

    def part(self, key: str) -> Any:
        """The part ``key`` (a PartResult), or None when the claim has no such part."""
        return next((p for p in self.parts if p.key == key), None)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict (NaN/inf become None); figures as their data, rows left to the CSV."""
        return json_safe(
            {
                "id": self.id,
                "name": self.name,
                "question": self.question,
                "claim": self.claim,
                "source": self.source,
                "rule": self.rule,
                "verdict": self.verdict,
                "rule_verdict": self.rule_verdict or self.verdict,
                "stability": self.stability.to_json() if self.stability is not None else None,
                "parts": [p.to_json() for p in self.parts],
                "rule_version": self.rule_version,
                "rule_history": self.rule_history,
                "rounds": self.rounds,
                "summary": self.summary,
                "title": self.title,
                "finding": self.finding,
                "setup": self.setup,
                "numbers": self.numbers,
                "labels": {k: label._asdict() for k, label in self.labels.items()},
                "wall_time_s": self.wall_time_s,
                "figures": [
                    {"name": f.name, "title": f.title, "caption": f.caption, "data": f.data} for f in self.figures
                ],
            }
        )


def estimate(mean: float, ci95: tuple[float, float] | list[float], n: int | None = None) -> dict[str, Any]:
    """A mean with its 95% confidence interval over ``n`` runs, in the form the report prints."""
    lo, hi = (float(v) for v in ci95)
    if lo > hi:
        raise ValueError(f"expected ci95 as (low, high) with low <= high (got {tuple(ci95)!r})")
    out: dict[str, Any] = {"mean": float(mean), "ci95": [lo, hi]}
    if n is not None:
        out["n"] = int(n)
    return out


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf as None, tuples as lists, numpy/torch scalars as Python numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return json_safe(value.item())
    return value


_json_safe = json_safe  # the name this module used first
