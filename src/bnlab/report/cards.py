"""A claim's card: what was found first, then the claim, the key numbers and figures; the statistics,
the verdict rule and the setup folded away underneath (templates/card.html). This module gathers what
a card shows.

Numbers are shown with their plain labels and units (``ClaimResult.labels``) in the one notation of
:mod:`bnlab.experiments.text`: "mean [low, high]", the 95% interval clipped to what is possible and
flagged when it rests on fewer than three seeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from ..experiments import text
from ..experiments.result import ClaimResult, Label
from .catalogue import Claim
from .markup import figure, is_estimate, is_paired, plain_key, render


def _few(value: Any) -> int | None:
    """The seed count behind the first interval in ``value`` that rests on too few seeds, or None."""
    if is_paired(value):
        value = value["diff"]
    if is_estimate(value):
        return value.get("n") if text.few_seeds(value) else None
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (list, tuple)) else ()
    return next((n for n in map(_few, items) if n), None)


def statistics_text(value: Any) -> str:
    """The test behind an estimate or comparison (for the folded statistics), or ''."""
    parts = []
    if is_paired(value):
        n = value.get("wins", 0) + value.get("losses", 0)
        parts += [
            f"paired t-test p {text.p_value(value.get('p_t'))}",
            f"sign test p {text.p_value(value.get('p_sign'))}",
            f"above 0 in {value.get('wins', 0)} of {n} seeds",
        ]
    if isinstance(value, Mapping) and "p_holm" in value:
        parts.append(f"Holm-adjusted p {text.p_value(value['p_holm'])}")
    if is_estimate(value) or is_paired(value):
        n = (value["diff"] if is_paired(value) else value).get("n")
        if n:
            parts.append(f"{n} seeds")
    return " · ".join(parts)


def numbers(result: ClaimResult) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(key numbers, statistics) of a result, as rows: a label with a value in its unit (and the seed
    count when its interval rests on too few seeds to mean much), or a label with the text of a test."""
    key_rows: list[dict[str, Any]] = []
    detail_rows: list[dict[str, Any]] = []
    for k, v in result.numbers.items():
        label = result.labels.get(k, Label(plain_key(k)))
        row = {"label": label.text, "value": v, "unit": label.unit, "few": _few(v), "text": None}
        (detail_rows if label.detail else key_rows).append(row)
        stats = statistics_text(v)
        if stats:
            detail_rows.append({"label": f"{label.text}: the test", "text": stats})
    return key_rows, detail_rows


SETUP_WORDS = {"lr": "learning rate", "lrs": "learning rates", "mlp": "MLP", "cnn": "CNN", "sgd": "SGD"}


def wall_time_text(result: ClaimResult) -> str:
    """What the experiment cost, said for what it is: ``registry`` measures each run's wall time where
    it ran (now, or when it was stored) and adds the analysis; runs overlap on parallel workers, so
    this is compute time, not the time the report waited for this experiment."""
    s = result.wall_time_s
    if not s or s < 1:
        return ""
    took = f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"
    return f"{took} measured (its runs, summed, plus its analysis)"


NO_CARD: dict[str, Any] = {"kind": "none"}  # a claim that did not run and was named before: nothing to show


def card(result: ClaimResult, info: Claim | None, csv_name: str | None) -> dict[str, Any]:
    """What templates/card.html shows of a claim in full."""
    key_numbers, statistics = numbers(result)
    return {
        "kind": "full",
        "result": result,
        "title": result.title or (info.title if info else result.name.replace("-", " ")),
        "source": result.source or (info.source if info else ""),
        "key_numbers": key_numbers,
        "statistics": statistics,
        "figures": [figure(f, result.id) for f in result.figures],
        "setup_words": SETUP_WORDS,
        "csv": csv_name,
        "took": wall_time_text(result),
    }


def reference_card(result: ClaimResult, info: Claim | None) -> dict[str, Any]:
    """A claim shown in full further up: its verdict, what was found and a link."""
    return {"kind": "ref", "result": result, "title": result.title or (info.title if info else result.name)}


def missing_card(info: Claim) -> dict[str, Any]:
    """A claim of the catalogue that did not run."""
    return {"kind": "missing", "result": None, "info": info}


def claim_card(result: ClaimResult, info: Claim | None, csv_name: str | None) -> Markup:
    """A claim's card as HTML (templates/card.html)."""
    return render("card.html", card=card(result, info, csv_name))
