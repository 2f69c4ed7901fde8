"""The lab's experiments, one module per claim (docs/claims.md lists them with their sources)."""

from .result import REPORTED, UNDERPOWERED, VERDICTS, ClaimResult, FigureSpec, Label, estimate

__all__ = ["REPORTED", "UNDERPOWERED", "VERDICTS", "ClaimResult", "FigureSpec", "Label", "estimate"]
