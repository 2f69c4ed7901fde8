"""Learning-rate schedules as a multiplier of the peak lr, per optimizer step.

``factor(t)`` for the t-th step (0-based) of ``steps``: a linear warm-up over ``warmup`` steps
((t+1)/warmup), then

* ``constant`` -- 1;
* ``cosine`` -- 0.5 * (1 + cos(pi * p)) with p the fraction of the post-warm-up steps done;
* ``linear`` -- 1 - p;
* ``step`` -- 1, then 0.1 from 50% and 0.01 from 75% of ``steps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def lr_factor(schedule: str, steps: int, warmup: int = 0) -> Callable[[int], float]:
    def factor(t: int) -> float:
        if t < warmup:
            return (t + 1) / warmup
        p = (t - warmup) / max(1, steps - warmup)
        if schedule == "constant":
            return 1.0
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(p, 1.0)))
        if schedule == "linear":
            return max(0.0, 1.0 - p)
        if schedule == "step":
            return 1.0 if t < 0.5 * steps else (0.1 if t < 0.75 * steps else 0.01)
        raise ValueError(f"expected a schedule in ('constant', 'cosine', 'linear', 'step') (got {schedule!r})")

    return factor
