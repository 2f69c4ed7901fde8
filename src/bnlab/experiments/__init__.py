"""The lab's experiments, one module per claim (docs/claims.md lists them with their sources)."""

from .result import VERDICTS, ClaimResult, FigureSpec, Label, estimate

__all__ = ["VERDICTS", "ClaimResult", "FigureSpec", "Label", "estimate"]
