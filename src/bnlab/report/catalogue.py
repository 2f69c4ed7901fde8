"""The claims the lab tests, read from the experiment modules: the one place each claim's title,
question, published statement, source and verdict rule are written.

The page's verdict table (claims that did not run included), docs/claims.md and the README's
verdict table are generated from this (:mod:`.readme`).
"""

from __future__ import annotations

import dataclasses

from ..experiments import registry


@dataclasses.dataclass(frozen=True)
class Claim:
    id: str
    title: str  # the claim as tested, in a few words
    question: str  # the question a reader asks
    claim: str  # what the source says
    source: str
    rule: str  # the verdict rule, fixed before the runs


def claims() -> dict[str, Claim]:
    """Every registered experiment's claim, by id, in the report's order."""
    out = {}
    for claim_id in registry.ids():
        m = registry.get(claim_id)
        out[claim_id] = Claim(claim_id, m.TITLE, m.QUESTION, m.CLAIM, m.SOURCE, m.RULE)
    return out
