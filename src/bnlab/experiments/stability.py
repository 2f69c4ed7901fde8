"""How solid a verdict is: would a fresh set of seeds give the same verdict?

Seeds are the unit of replication, and a verdict rule is a function of the per-seed measurements.
So the rule itself can be re-applied to other sets of seeds. We cannot train fresh seeds at report
time, but we can draw them from the seeds we have: a bootstrap over seeds of the whole verdict
rule, in two stages. Each of :data:`RESAMPLES` times, draw a *population* of n seeds with
replacement from the n measured ones, then a *fresh set* of n seeds with replacement from that
population, keeping everything measured with a seed together (so a paired comparison stays
paired), and apply the experiment's rule to the fresh set. The share of fresh sets that give the
verdict of the measured set is its **stability**: an estimate of the probability that the same
experiment, re-run with fresh seeds, reaches the same verdict.

Why two stages: one stage (fresh sets drawn from the measured seeds themselves) takes the measured
seeds for the population, so the measured effect for the true one, and overstates how often a
fresh set agrees: the measured mean is itself off the true one by about its standard error, so a
fresh set's mean lies about sqrt(2) standard errors from the measured one, not one (the argument
of Goodman 1992, "A comment on replication, p-values and evidence", Statistics in Medicine 11:875).
One stage called a verdict stable that a re-run with 2 torch threads per run instead of 1 then
contradicted (C14; the measurement is in docs/guide/lab.md, "Do the verdicts depend on the machine?").
The seed counts in the experiments' comments were sized with one stage.

This is what happened between two machines: floating-point differences between CPUs change a
training trajectory the way another seed does, so a verdict that flips between resamples of its
seeds can flip between machines. Below :data:`THRESHOLD` the report does not present the verdict
as a finding: it reports "underpowered", with the rule's verdict, its stability and -- from the
same bootstrap with larger fresh sets -- about how many seeds would make it stable.

Caveats, said once: the bootstrap is only as good as n is large (a draw holds ~63% distinct seeds,
and a t-test counts repeats as independent, which makes a draw look a little more certain than a
fresh set would); with fewer than :data:`MIN_SEEDS` seeds it cannot tell anything. The projection
to m seeds keeps the population at the n measured seeds: more seeds shrink a fresh set's noise,
not the uncertainty about the effect itself.

Seeds in rounds (:mod:`.registry`): an experiment adds seeds until its verdicts are stable, so the
stability it reports was looked at more than once, and stopping at the first look where it crosses
:data:`THRESHOLD` reports the luckiest of several noisy estimates -- the inflation of testing after
every batch of subjects. The accounting (:func:`confirmed`): an *interim* look stops only if every
verdict (the claim's and each part's) is stable at that look AND was stable with the same verdict
at the look before; the last look, at the cap, uses THRESHOLD alone, and a verdict below it there
is underpowered. Why a confirmation rather than a stricter threshold at interim looks:
``scripts/stopping_rule.py`` simulates the lab's kind of rule with C1's plan and measures how often a
fresh experiment really agrees with the verdicts reported stable; of the early stops it tried (90%
or 98% or 99% at every interim look, or two stable looks in a row) the confirmation came closest to
never stopping early (its numbers are in docs/guide/verdicts.md, "Margins, parts and seed rounds").

An experiment provides its per-seed records (``{seed: record}``; a record holds everything that
seed measured under every setting) and its rule as a function ``rule(records) -> verdict`` of a
list of records (order irrelevant, repeats allowed); :func:`assess` does the rest, once for all.
A computed experiment without seeds (C2's identities) states what stability means for it and
builds its :class:`Stability` with :func:`computed`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .result import UNDERPOWERED, VERDICTS

# A verdict is reported as a finding only if at least this share of resampled seed sets agree with
# it. Why 0.9: a reader who acts on a verdict should be wrong about what a re-run gives at most one
# time in ten; and two machines (or two seed sets) each reaching it with probability >= 0.9 agree
# with each other at least ~0.8 of the time -- below that a verdict is a coin with a bias, not a
# result. The one place this number is set.
THRESHOLD = 0.9
MIN_SEEDS = 3  # fewer seeds give a bootstrap nothing to resample: the verdict is underpowered
RESAMPLES = 500  # bootstrap draws for the stability (standard error of a share near 0.9: 1.3 points)
# Fresh sets per size when projecting how many seeds a stable verdict needs. With 200 the walk over sizes
# stopped early on noise (24 seeds, where 4000 sets put the 90% crossing between 24 and 38).
PROJECT_RESAMPLES = 500
MAX_SEEDS = 64  # the projection looks up to this many seeds per setting
BOOTSTRAP_SEED = 20170  # the resampling is seeded: the same runs give the same stability

Rule = Callable[[list[Any]], str]


_INTERIM = contextvars.ContextVar("bnlab_interim_look", default=False)


@contextlib.contextmanager
def interim_look():
    """Within this block :func:`assess` skips the projection of how many seeds would settle a verdict: at an
    interim look an experiment either stops with every verdict stable (no projection is made then) or adds
    seeds and is judged again, so the projection -- most of the cost of an unstable verdict -- would be
    thrown away."""
    token = _INTERIM.set(True)
    try:
        yield
    finally:
        _INTERIM.reset(token)


@dataclasses.dataclass(frozen=True)
class Stability:
    """How often a verdict rule gives the same verdict on other sets of seeds."""

    verdict: str  # the rule's verdict on all the measured seeds
    share: float  # share of resampled seed sets (or fresh inputs) giving ``verdict``
    seeds: int  # how many seeds (or fresh inputs) were measured
    resamples: int  # how many sets the share is over
    outcomes: dict[str, int]  # verdict -> how many of the sets gave it
    method: str  # how the sets were made, in words
    needed: int | None = None  # projected seeds for a stable verdict (only computed when unstable)
    needed_verdict: str | None = None  # the verdict the rule settles on at ``needed`` seeds
    note: str = ""  # for computed experiments: what stability means there

    @property
    def stable(self) -> bool:
        return self.seeds >= MIN_SEEDS and self.share >= THRESHOLD

    @property
    def reported(self) -> str:
        """What the report says: the rule's verdict when stable, else "underpowered"."""
        return self.verdict if self.stable else UNDERPOWERED

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "share": self.share,
            "seeds": self.seeds,
            "resamples": self.resamples,
            "outcomes": dict(self.outcomes),
            "method": self.method,
            "threshold": THRESHOLD,
            "stable": self.stable,
            "needed_seeds": self.needed,
            "needed_verdict": self.needed_verdict,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Stability:
        return cls(
            d["verdict"],
            d["share"],
            d["seeds"],
            d["resamples"],
            dict(d["outcomes"]),
            d["method"],
            d.get("needed_seeds"),
            d.get("needed_verdict"),
            d.get("note", ""),
        )


def confirmed(previous: Sequence[Stability] | None, current: Sequence[Stability]) -> bool:
    """The seed rounds' early stop (module docstring): every verdict of this look (the claim's and each
    part's, in one order) is stable, and so was every verdict of the previous look, with the same verdicts."""

    def verdicts(look):
        return [s.verdict if s.stable else None for s in look]

    if previous is None or len(previous) != len(current):
        return False
    now = verdicts(current)
    return None not in now and verdicts(previous) == now


def _check(verdict: str) -> str:
    if verdict not in VERDICTS:
        raise ValueError(f"expected the rule to return one of {VERDICTS} (got {verdict!r})")
    return verdict


def _draws(records: list, rule: Rule, size: int, count: int, rng: np.random.Generator) -> Counter:
    """The rule's verdicts on ``count`` fresh sets of ``size`` records, each drawn with replacement from
    a population drawn with replacement from ``records`` (the two stages of the module docstring).

    A rule ignores the order of its records, so fresh sets holding the same seeds the same number of
    times share one evaluation.
    """
    n = len(records)
    population = rng.integers(0, n, size=(count, n))
    picks = np.take_along_axis(population, rng.integers(0, n, size=(count, size)), axis=1)
    sets = Counter(tuple(sorted(row)) for row in picks.tolist())
    verdicts: Counter[str] = Counter()
    for seeds, times in sets.items():
        verdicts[_check(rule([records[i] for i in seeds]))] += times
    return verdicts


def project(
    records: list, rule: Rule, start: int, rng: np.random.Generator | None = None
) -> tuple[int | None, str | None]:
    """(seeds, verdict): the smallest fresh-set size from ``start`` up to :data:`MAX_SEEDS` at which one
    verdict comes out in at least :data:`THRESHOLD` of the sets, and that verdict; (None, None) if none does."""
    rng = rng if rng is not None else np.random.default_rng(BOOTSTRAP_SEED)
    size = max(start, MIN_SEEDS)
    while size <= MAX_SEEDS:
        verdict, count = _draws(records, rule, size, PROJECT_RESAMPLES, rng).most_common(1)[0]
        if count / PROJECT_RESAMPLES >= THRESHOLD:
            return size, verdict
        size = size + 1 if size < 8 else math.ceil(size * 1.25)
    return None, None


def assess(records: Mapping[Any, Any], rule: Rule, resamples: int = RESAMPLES) -> Stability:
    """The rule's verdict on every record and its stability under a bootstrap over seeds.

    ``records``: {seed: everything that seed measured}; ``rule``: the experiment's verdict rule as a
    function of a list of such records. Deterministic (the resampling is seeded).
    """
    items = list(records.values())
    verdict = _check(rule(items))
    n = len(items)
    if n < 2:
        return Stability(verdict, 0.0, n, 0, {}, f"bootstrap over seeds: {n} seed(s), nothing to resample", None, None)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    outcomes = _draws(items, rule, n, resamples, rng)
    share = outcomes[verdict] / resamples
    needed = needed_verdict = None
    if (share < THRESHOLD or n < MIN_SEEDS) and not _INTERIM.get():
        needed, needed_verdict = project(items, rule, n + 1, rng)
    return Stability(
        verdict,
        share,
        n,
        resamples,
        dict(outcomes.most_common()),
        f"two-stage bootstrap over seeds: {resamples} fresh sets of {n} seeds, each drawn with "
        f"replacement from a population of {n} drawn with replacement from the measured ones, all "
        f"the seed's settings kept together",
        needed,
        needed_verdict,
    )


def computed(verdicts: Sequence[str], note: str) -> Stability:
    """The stability of a computed (not seeded) experiment: ``verdicts`` from fresh inputs, the first
    being the reported one's; ``note`` says what stability means there."""
    verdicts = [_check(v) for v in verdicts]
    outcomes = Counter(verdicts)
    return Stability(
        verdicts[0],
        outcomes[verdicts[0]] / len(verdicts),
        len(verdicts),
        len(verdicts),
        dict(outcomes.most_common()),
        f"recomputed on {len(verdicts)} fresh random inputs",
        note=note,
    )


def settle(result, stability: Stability):
    """Put ``stability`` on ``result``: the rule's verdict becomes ``rule_verdict`` and ``verdict`` what the
    report may say (the rule's verdict when stable, else "underpowered"). Returns ``result``."""
    assert stability.verdict == result.verdict, (stability.verdict, result.verdict)  # one rule, applied once
    result.rule_verdict = stability.verdict
    result.stability = stability
    result.verdict = stability.reported
    return result


def describe(stability: Stability | None) -> str:
    """The stability in words, for every place that shows a verdict (the page, ``bnlab run``, the README):
    "stable in 97% of resamples", or why the verdict is underpowered and what would settle it."""
    if stability is None:
        return "stability not measured"
    s = stability
    if s.method.startswith("recomputed"):
        return f"the same on {s.outcomes.get(s.verdict, 0)} of {s.seeds} fresh random inputs"
    if s.stable:
        return f"stable in {s.share:.0%} of resamples"
    if s.seeds < MIN_SEEDS:
        told = (
            f"{s.seeds} seed{'s' if s.seeds != 1 else ''}: too few to tell how stable the rule's verdict "
            f"({s.verdict}) is"
        )
    else:
        told = f"the rule gave {s.verdict} in only {s.share:.0%} of resamples (needs {THRESHOLD:.0%})"
    if s.needed is not None:
        return f"{told}; about {s.needed} seeds per setting would settle it ({s.needed_verdict})"
    return f"{told}; more than {MAX_SEEDS} seeds per setting would be needed"
