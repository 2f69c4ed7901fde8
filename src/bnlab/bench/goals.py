"""The performance goals `bnlab bench` checks its rows against (float32 medians, bnlab/torch).

Each goal selects rows, reduces one field (geometric mean, worst case) and compares it with a
target. A goal with no rows in a run (e.g. `--quick` leaves out 3d) reports "not measured".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

Row = dict


@dataclasses.dataclass(frozen=True)
class Goal:
    name: str
    select: Callable[[Row], bool]
    field: str  # "ratio" or "bandwidth_fraction"
    reduce: str  # "geomean", "max", "min" or "lowest" (the min, which must be <= target)
    target: float  # the reduced value must be <= target ("geomean"/"max"/"lowest") or >= target ("min")

    def evaluate(self, rows: list[Row]) -> dict:
        """The goal on the medians; ``value_min``: the same on the fastest samples (ratios only)."""
        rows = [r for r in rows if self.select(r)]
        result = self._reduce(rows, self.field)
        if self.field == "ratio" and rows and all("ratio_min" in r for r in rows):
            result["value_min"] = self._reduce(rows, "ratio_min")["value"]
        return result

    def _reduce(self, rows: list[Row], field: str) -> dict:
        values = [r[field] for r in rows if self.select(r) and r[field] is not None]
        if not values:
            return {"goal": self.name, "value": None, "target": self.target, "met": None}
        if self.reduce == "geomean":
            value = math.exp(sum(math.log(v) for v in values) / len(values))
        else:
            value = max(values) if self.reduce == "max" else min(values)  # "min" and "lowest"
        met = value >= self.target if self.reduce == "min" else value <= self.target
        return {"goal": self.name, "value": value, "target": self.target, "met": met, "rows": len(values)}


def _f32(r: Row) -> bool:
    return r.get("dtype") == "float32"


def _nchw2d(op: str) -> Callable[[Row], bool]:
    return lambda r: _f32(r) and r["op"] == op and r["dims"] == 2 and r["layout"] == "nchw"


def _fused(r: Row) -> bool:
    return r["op"].startswith("bn_") and r["op"].endswith("_fwd_bwd")


GOALS = [
    Goal("training fwd+bwd, NCHW 2d: geometric mean ratio <= 0.6", _nchw2d("train_fwd_bwd"), "ratio", "geomean", 0.6),
    Goal("training fwd+bwd, NCHW 2d: every ratio <= 0.8", _nchw2d("train_fwd_bwd"), "ratio", "max", 0.8),
    Goal("training fwd, NCHW 2d: geometric mean ratio <= 0.4", _nchw2d("train_fwd"), "ratio", "geomean", 0.4),
    Goal(
        "channels_last fwd and fwd+bwd: every ratio <= 1.0",
        lambda r: _f32(r) and r["layout"] == "channels_last" and r["op"] in ("train_fwd", "train_fwd_bwd"),
        "ratio",
        "max",
        1.0,
    ),
    Goal("eval: every ratio <= 1.0", lambda r: _f32(r) and r["op"] == "eval", "ratio", "max", 1.0),
    Goal(
        "BatchNorm1d (256, 512): every ratio <= 1.2",
        lambda r: _f32(r) and r["dims"] == 1 and tuple(r["shape"]) == (256, 512),
        "ratio",
        "max",
        1.2,
    ),
    Goal(
        "(8, 128, 56, 56) training fwd NCHW: >= 0.8 of copy bandwidth",
        lambda r: _nchw2d("train_fwd")(r) and tuple(r["shape"]) == (8, 128, 56, 56),
        "bandwidth_fraction",
        "min",
        0.8,
    ),
    Goal("BN+activation fused fwd+bwd, NCHW: every ratio <= 0.6", _fused, "ratio", "max", 0.6),
    Goal(
        "BN+SiLU fused fwd+bwd, NCHW: every ratio <= 0.8", lambda r: r["op"] == "bn_silu_fwd_bwd", "ratio", "max", 0.8
    ),
    Goal("BN+activation fused: saved-for-backward bytes <= 0.5 of torch's", _fused, "saved_ratio", "max", 0.5),
    # CPU time per seed-step, k seeds trained together over one at a time, at the best k measured
    Goal("seed-step, MNIST-1D CNN: best ratio <= 0.5", lambda r: r["op"] == "seed_step_cnn", "ratio", "lowest", 0.5),
    Goal("seed-step, sigmoid MLP: best ratio <= 0.3", lambda r: r["op"] == "seed_step_mlp", "ratio", "lowest", 0.3),
    Goal(
        "lab CNN step (MNIST-1D, batch 100, 1 thread), bnlab BN vs torch BN: ratio <= 1.0",
        lambda r: r["op"] == "lab_cnn_step",
        "ratio",
        "max",
        1.0,
    ),
    Goal(
        "trainer vs a bare loop (MNIST-1D CNN): ratio <= 1.1", lambda r: r["op"] == "trainer_step", "ratio", "max", 1.1
    ),
    Goal(
        "two 1-thread trainings sharing the cores: bnlab's slowdown <= 1.1x torch's",
        lambda r: r["op"] == "contention" and r["threads"] == 1,
        "ratio",
        "max",
        1.1,
    ),
]


def evaluate(rows: list[Row]) -> list[dict]:
    return [g.evaluate(rows) for g in GOALS]
