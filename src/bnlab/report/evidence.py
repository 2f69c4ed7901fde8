"""What the page's answers may quote (:class:`Evidence`); below the modules that write the answers."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..experiments.result import UNDERPOWERED, ClaimResult


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What the answers may quote: the claim results, the measured demos, and the kind of run."""

    results: Mapping[str, ClaimResult]
    demos: Mapping[str, Any]
    quick: bool

    @property
    def this_run(self) -> str:
        """How a measured sentence starts: a quick run is a smoke test and must say so."""
        return "This smoke test (not evidence)" if self.quick else "This run"

    def number(self, claim_id: str, *path: str) -> Any:
        """``results[claim_id].numbers[path[0]][path[1]]...``, or None when anything is missing."""
        result = self.results.get(claim_id)
        value: Any = None if result is None else result.numbers
        for key in path:
            if not isinstance(value, Mapping) or key not in value:
                return None
            value = value[key]
        return value

    def settled(self, claim_id: str, part: str | None = None) -> bool:
        """Whether the claim (or its ``part``) ran and its verdict is stable enough to be a finding (not
        underpowered). A result without parts (an older edition) answers for the claim."""
        return self.verdict(claim_id, part) not in (None, UNDERPOWERED)

    def verdict(self, claim_id: str, part: str | None = None) -> str | None:
        """What the report says of the claim or its ``part``; None when the claim did not run."""
        result = self.results.get(claim_id)
        if result is None:
            return None
        found = result.part(part) if part else None
        return (found or result).verdict

    def said(self, claim_id: str, part: str, words: str) -> str:
        """``words`` with the verdict of the part they rest on, the way a short answer quotes it: "BN trained
        faster: reproduced, 100% of resamples"; "..., not settled (underpowered, 46% of resamples)"."""
        result = self.results.get(claim_id)
        found = result.part(part) if result is not None else None
        if found is None:  # no such part (an edition made before the claim had parts): the claim's badge speaks
            return claim_id
        share = f"{found.stability.share:.0%} of resamples"
        if found.verdict == UNDERPOWERED:
            return f"{words}: not settled (underpowered, {share})"
        return f"{words}: {found.verdict}, {share}"

    def demo(self, *path: str) -> Any:
        value: Any = self.demos
        for key in path:
            if not isinstance(value, Mapping) or key not in value:
                return None
            value = value[key]
        return value
