"""The lab's experiments, one module per claim of CLAIMS.md."""

from .result import VERDICTS, ClaimResult, FigureSpec, estimate

__all__ = ["VERDICTS", "ClaimResult", "FigureSpec", "estimate"]
