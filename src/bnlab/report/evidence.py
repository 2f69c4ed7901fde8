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

    def settled(self, claim_id: str) -> bool:
        """Whether the claim ran and its verdict is stable enough to be a finding (not underpowered)."""
        result = self.results.get(claim_id)
        return result is not None and result.verdict != UNDERPOWERED

    def demo(self, *path: str) -> Any:
        value: Any = self.demos
        for key in path:
            if not isinstance(value, Mapping) or key not in value:
                return None
            value = value[key]
        return value
