"""What a run produces: :class:`RunResult`, its status and its metric series."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .config import RunConfig

STATUSES = ("finished", "diverged")


@dataclasses.dataclass
class RunResult:
    """One run's outcome.

    ``series`` holds aligned lists, one entry per metric step: ``step`` (optimizer steps done),
    ``lr``, ``train_loss`` (mean batch loss since the previous metric step), ``train_acc`` /
    ``train_eval_loss`` (eval mode, on the training set), ``test_acc`` / ``test_loss``, ``time_s``,
    and every probe metric (NaN where a probe had no value). Accuracies are fractions in [0, 1].
    A diverged run (non-finite loss, or above ``diverge_factor`` times the first loss) stops at
    ``diverged_step`` and its last row holds the loss that tripped the check.
    """

    config: RunConfig
    status: str  # "finished" or "diverged"
    series: dict[str, list[float]]
    steps_done: int
    diverged_step: int | None = None
    wall_s: float = 0.0  # whole run, set-up and evaluations included
    train_s: float = 0.0  # the training steps alone
    trainable_params: int = 0
    env: dict[str, Any] = dataclasses.field(default_factory=dict)  # torch version, device, threads, world size
    final_metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # from the probes' finish()
    # The trained model, with train(..., keep_model=True); never stored.
    model: Any = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"expected status in {STATUSES} (got {self.status!r})")

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    @property
    def steps_per_s(self) -> float:
        return self.steps_done / self.train_s if self.train_s > 0 else math.nan

    def final(self, name: str) -> float:
        """The last recorded value of metric ``name`` (NaN if never recorded)."""
        values = self.series.get(name)
        if values is None:
            raise KeyError(f"expected a metric in {sorted(self.series)} (got {name!r})")
        return values[-1] if values else math.nan

    def summary(self) -> dict[str, Any]:
        out = {
            "status": self.status,
            "steps_done": self.steps_done,
            "diverged_step": self.diverged_step,
            "wall_s": round(self.wall_s, 3),
            "steps_per_s": round(self.steps_per_s, 1),
            "trainable_params": self.trainable_params,
        }
        for name in ("train_loss", "train_acc", "test_loss", "test_acc"):
            if self.series.get(name):
                out[name] = self.final(name)
        if self.series.get("test_acc"):
            out["best_test_acc"] = max((v for v in self.series["test_acc"] if not math.isnan(v)), default=math.nan)
        return out

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(dataclasses.replace(self, model=None))
        d.pop("model")
        d["config"] = self.config.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        return cls(**{**d, "config": RunConfig.from_dict(d["config"])})
