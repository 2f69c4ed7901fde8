"""How numbers read in summaries, on the page and in the README: one notation everywhere.

An estimate over seeds is written "mean [low, high]", the brackets holding its 95% confidence
interval, with its unit once: "94.7% [93.1, 96.2]", "−0.8 points [−2.0, 0.4]",
"1420 steps [1210, 1630]", "0.33× [0.21, 0.52]". Accuracies and errors are percentages, their
differences percentage points. An interval is clipped to the values the quantity can take (an
accuracy lies in 0-100%); a mean over one seed has no interval, and :func:`few_seeds` says when
an interval rests on too few seeds to mean much.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple


class Unit(NamedTuple):
    scale: float  # stored value x scale = shown value
    digits: int | None  # decimals; None: 3 significant digits
    low: float  # the smallest value the quantity can take (shown values)
    high: float
    suffix: str  # after the mean: "%", " points", ...
    signed: bool = False  # a difference: always show its sign


UNITS: dict[str, Unit] = {
    "": Unit(1.0, None, -math.inf, math.inf, ""),
    "%": Unit(100.0, 1, 0.0, 100.0, "%"),  # an accuracy or error stored as a fraction
    "points": Unit(100.0, 1, -100.0, 100.0, " points", signed=True),  # a difference of two such fractions
    "steps": Unit(1.0, 0, 0.0, math.inf, " steps"),
    "steps diff": Unit(1.0, 0, -math.inf, math.inf, " steps", signed=True),
    "×": Unit(1.0, 2, 0.0, math.inf, "×"),  # a ratio
    "nats": Unit(1.0, 3, -math.inf, math.inf, " nats", signed=True),  # a difference of losses
    "lr": Unit(1.0, None, 0.0, math.inf, ""),  # a learning rate
    "count": Unit(1.0, 0, 0.0, math.inf, ""),
    "positive": Unit(1.0, 2, 0.0, math.inf, ""),  # a size that cannot be negative (C1's drift)
    "sci": Unit(1.0, None, -math.inf, math.inf, ""),  # tiny errors: 7e-15
    "p": Unit(1.0, None, 0.0, 1.0, ""),  # a p-value: see p_value
    "pct": Unit(1.0, 1, 0.0, 100.0, "%"),  # an accuracy or error already in percent (C13, C14)
    "pct points": Unit(1.0, 1, -100.0, 100.0, " points", signed=True),  # a difference of those
    "share": Unit(1.0, 0, -math.inf, math.inf, "%"),  # a share in percent that may leave 0-100 (C13)
}

FEW_SEEDS = 3  # an interval over fewer seeds is flagged: with 2 seeds a t-interval is 12.7 standard errors wide

MINUS = "\u2212"


def _unit(unit: str) -> Unit:
    if unit not in UNITS:
        raise ValueError(f"expected a unit in {sorted(UNITS)} (got {unit!r})")
    return UNITS[unit]


def _plain(x: float, u: Unit, unit: str, sign: bool) -> str:
    if unit == "sci" or (u.digits is None and x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5)):
        text = f"{x:.1e}" if unit == "sci" else f"{x:.3g}"
    elif u.digits is None or abs(x) >= 1e5:  # >= 1e5: no "598714.72×", three significant digits are plenty
        text = f"{x:.3g}"
    else:
        text = f"{x:.{u.digits}f}"
        if float(text) == 0:  # no "-0.0"
            text = text.lstrip("-")
    if sign and not text.startswith("-") and float(text) != 0:
        text = "+" + text
    return text.replace("-", MINUS)


def number(value: Any, unit: str = "") -> str:
    """One value in ``unit``: ``number(0.947, "%") == "94.7%"``; None or NaN is "n/a"."""
    u = _unit(unit)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "n/a" if value is None else str(value)
    if math.isnan(value):
        return "n/a"
    if unit == "p":
        return p_value(value)
    if math.isinf(value):
        return ("∞" if value > 0 else MINUS + "∞") + u.suffix
    return _plain(value * u.scale, u, unit, u.signed) + u.suffix


def parts(e: Any) -> tuple[float, float | None, float | None, int | None]:
    """(mean, low, high, n) of an estimate: a stats.Estimate, its JSON dict, or a paired test's dict
    (its difference); low/high are None without an interval."""
    if isinstance(e, dict) and "diff" in e:
        e = e["diff"]
    if isinstance(e, dict):
        mean, n = e.get("mean"), e.get("n")
        lo, hi = e.get("ci95", e.get("ci", (None, None)))  # type: ignore[misc]  # a pair (or the default)
    else:
        mean, n = e.mean, e.n
        lo, hi = (None, None) if e.ci is None or math.isnan(e.ci) else (e.low, e.high)
    mean = math.nan if mean is None else float(mean)
    return mean, lo, hi, n


def interval(e: Any, unit: str = "") -> str:
    """An estimate as "mean [low, high]" in ``unit``, the interval clipped to the unit's range."""
    u = _unit(unit)
    if e is None:
        return "n/a"
    mean, lo, hi, n = parts(e)
    if n == 0 or math.isnan(mean):
        return "n/a"
    head = number(mean, unit)
    if lo is None or hi is None:
        return head + (" (1 seed)" if n == 1 else "")
    lo_s, hi_s = (min(max(v * u.scale, u.low), u.high) for v in (lo, hi))
    bounds = ", ".join(
        _plain(v, u, unit, u.signed) if math.isfinite(v) else ("∞" if v > 0 else MINUS + "∞") for v in (lo_s, hi_s)
    )
    return f"{head} [{bounds}]"


def few_seeds(e: Any) -> bool:
    """True when ``e`` has an interval from fewer than FEW_SEEDS seeds (too wide to read)."""
    if e is None:
        return False
    _, lo, _, n = parts(e)
    return n is not None and 1 < n < FEW_SEEDS and lo is not None


def p_value(p: float | None) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.2g}" if p < 0.1 else f"{p:.2f}"


# Plain names for the settings that appear as keys inside numbers (e.g. {"bn": ..., "none": ...}).
NAMES = {
    "bn": "BN",
    "none": "no BN",
    "noisy_bn": "noisy BN",
    "gn": "GroupNorm",
    "brn": "Batch Renorm",
    "relu": "ReLU",
    "tanh": "tanh",
    "ghost_bn": "ghost BN",
    "gamma": "γ",
    "beta": "β",
    "input": "input",
}


def name(key: str) -> str:
    """The plain name of a setting key ("bn" -> "BN"); unknown keys as they are."""
    return NAMES.get(key, key)


def compare(e: Any, more: str, less: str, same: str = "no clear difference") -> str:
    """Which way a difference goes by its interval: ``more`` if it lies above 0, ``less`` if below,
    else ``same`` (also without an interval)."""
    if e is None:
        return same
    _, lo, hi, _ = parts(e)
    if lo is not None and lo > 0:
        return more
    if hi is not None and hi < 0:
        return less
    return same
