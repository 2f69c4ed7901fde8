"""Internal covariate shift, explained in one place: the term, the original claim, the objection, this
run's measurements side by side (C1's drift, C5, C6, C7) and what to believe -- the last written
from the measurements, never fixed in advance. The prose and the table's markup are templates/ics.html."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from ..experiments import text
from .evidence import Evidence
from .markup import render


def _readings(ev: Evidence) -> dict[str, str]:
    """Each measurement's direction in words, for the claims that ran."""
    out = {}
    if ev.number("C1", "drift_bn_minus_none") is not None:
        out["C1"] = text.compare(ev.number("C1", "drift_bn_minus_none"), "less steady", "steadier", "no steadier")
    if ev.number("C5", "noisy_minus_bn_test_acc") is not None:
        out["C5"] = text.compare(
            ev.number("C5", "noisy_minus_bn_test_acc"),
            "gained accuracy",
            "cost accuracy",
            "cost no measurable accuracy",
        )
    lower, higher = ev.number("C6", "significantly_lower"), ev.number("C6", "significantly_higher")
    if lower is not None:
        out["C6"] = (
            "lower with BN"
            if lower and not higher
            else "higher with BN"
            if higher and not lower
            else "mixed"
            if lower
            else "no different"
        )
    smoother = _smoother(ev)
    if smoother is not None:
        out["C7"] = f"smoother on {smoother} of 3"
    return out


# The part of each claim a reading rests on (C7's reading counts its three parts, see _smoother).
READS = {"C1": "steadier", "C5": "harmless", "C6": None}
C7_PARTS = ("loss-range", "grad-change", "beta")


def _smoother(ev: Evidence) -> int | None:
    """On how many of C7's measures BN was smoother: its settled "reproduced" parts when it was judged
    by part, else the rule's count (an older edition)."""
    result = ev.results.get("C7")
    if result is None:
        return None
    if result.parts:
        return sum(ev.verdict("C7", k) == "reproduced" for k in C7_PARTS)
    return ev.number("C7", "smoother_measures")


def _settled(ev: Evidence, cid: str) -> bool:
    """Whether the part a reading rests on is a finding. C7's count is settled when the parts still open
    cannot change whether BN was smoother on at least two of the three."""
    if cid != "C7":
        return ev.settled(cid, READS.get(cid))
    result = ev.results.get("C7")
    if result is None or not result.parts:
        return ev.settled("C7")
    smoother = _smoother(ev)
    assert smoother is not None  # C7 was judged by part, so the parts were counted
    open_parts = sum(not ev.settled("C7", k) for k in C7_PARTS)
    return smoother >= 2 or smoother + open_parts < 2


def _settled_readings(ev: Evidence) -> dict[str, str]:
    """The readings that are findings (an underpowered part settles nothing)."""
    return {cid: r for cid, r in _readings(ev).items() if _settled(ev, cid)}


def readings(ev: Evidence) -> list[str]:
    """What each measurement said, as clauses for a sentence."""
    r = _readings(ev)
    words = {
        "C1": "a layer's input distribution was {} with BN (C1{})",
        "C5": "shifting BN's output at random every step {} (C5{})",
        "C6": "the shift measured on gradients was {} (C6{})",
        "C7": "the loss was {} measures (C7{})",
    }
    return [
        words[cid].format(r[cid], "" if _settled(ev, cid) else ", underpowered: not a finding")
        for cid in words
        if cid in r
    ]


def believe(ev: Evidence) -> str:
    """What to believe, in one sentence, from this run's readings (a smoke test decides nothing)."""
    if not _readings(ev):
        return "This run did not measure it."
    if ev.quick:
        return "A smoke test decides nothing; the full report decides."
    r = _settled_readings(ev)
    if not r:
        return "None of these measurements is stable enough to be a finding here, so this run settles nothing."
    # Santurkar et al.'s objection, test by test: injected shift costs nothing (C5), BN does not lower
    # the gradient-measured shift (C6), BN smooths the loss on most measures (C7).
    smoother = _smoother(ev) if "C7" in r else None
    checks = {
        "C5": r.get("C5") == "cost no measurable accuracy" if "C5" in r else None,
        "C6": r.get("C6") in ("no different", "higher with BN") if "C6" in r else None,
        "C7": smoother >= 2 if smoother is not None else None,
    }
    tests = [v for v in checks.values() if v is not None]
    held, steadier = sum(tests), r.get("C1") == "steadier"
    objection = f"Santurkar et al.'s objection held on {held} of its {len(tests)} tests here"
    helped = (
        ev.settled("C5", "bn-beats-none")
        and text.compare(ev.number("C5", "bn_minus_none_test_acc"), "yes", "no", "") == "yes"
    ) or (
        ev.settled("C1", "faster")
        and text.compare(ev.number("C1", "steps_to_target_bn_minus_none"), "no", "yes", "") == "yes"
    )
    if not helped:
        return (
            f"This run did not show BN helping clearly, so there was little for either explanation to "
            f"explain; {objection}."
        )
    if "C1" not in r:
        return (
            f"{objection}; without a settled answer to C1's 'steadier' part this run cannot say whether BN "
            f"steadies the distributions."
        )
    if not steadier and 2 * held >= len(tests):
        return (
            "So believe the effect, not the original explanation: BN helped without steadying the layers' "
            f"input distributions, and {objection}."
        )
    if not steadier:
        return (
            "So believe the effect, not either explanation: BN helped without steadying the layers' input "
            f"distributions, yet {objection}."
        )
    if 2 * held < len(tests):
        return f"These measurements are consistent with the original explanation ({objection})."
    return f"These measurements do not settle why BN helps: BN steadied the distributions, and {objection}."


def conclusion(ev: Evidence) -> str:
    """The readings and what to believe, in two sentences."""
    said = readings(ev)
    return (f"{ev.this_run}: {'; '.join(said)}. " if said else "") + believe(ev)


def _row(ev: Evidence, cid: str, what: str, with_bn: str, without: str, reading: str | None = None) -> dict[str, Any]:
    """A row of the side-by-side table; its verdict marks are those of the part the reading rests on
    (C7: each of its three parts). A row given its own ``reading`` is context that no rule judged."""
    result = ev.results.get(cid)
    return {
        "id": cid,
        "what": what,
        "with_bn": with_bn,
        "without": without,
        "reading": _readings(ev).get(cid, "not run") if reading is None else reading,
        "result": result,
        "judged": reading is None,
        "parts": C7_PARTS if cid == "C7" and result is not None and result.parts else (),
        "part": READS.get(cid),
    }


def side_by_side(ev: Evidence) -> list[dict[str, Any]]:
    """The measurements side by side, for the claims that ran."""
    rows = []
    if ev.number("C1", "drift_bn") is not None and ev.number("C1", "drift_none") is not None:
        rows.append(
            _row(
                ev,
                "C1",
                "How far the percentiles of a last-layer input move during training, on a fixed sample of "
                "training inputs, in widths of their band (lower: steadier)",
                text.interval(ev.number("C1", "drift_bn"), "positive"),
                text.interval(ev.number("C1", "drift_none"), "positive"),
            )
        )
    batch = [ev.number("C1", f"drift_batch_{k}") for k in ("bn", "none", "bn_minus_none")]
    if all(v is not None for v in batch):
        rows.append(
            _row(
                ev,
                "C1",
                "The same on each step's own training batch: BN normalizes the batch it is measured on, "
                "which removes the batch's sampling noise by construction (context, not judged)",
                text.interval(batch[0], "positive"),
                text.interval(batch[1], "positive"),
                text.compare(batch[2], "less steady", "steadier", "no steadier"),
            )
        )
    acc = ev.number("C5", "test_acc")
    if isinstance(acc, dict) and {"bn", "noisy_bn", "none"} <= set(acc):
        rows.append(
            _row(
                ev,
                "C5",
                "Test accuracy when every BN output is shifted and scaled at random each step (noisy BN)",
                f"BN {text.interval(acc['bn'], '%')}; noisy BN {text.interval(acc['noisy_bn'], '%')}",
                text.interval(acc["none"], "%"),
            )
        )
    if "C6" in ev.results:
        ratios = [
            v["mean"]
            for k, v in ev.results["C6"].numbers.items()
            if k.startswith("ratio_bn_over_none/")
            and "relative" not in k
            and isinstance(v, dict)
            and v.get("mean") is not None
        ]
        if ratios:
            rows.append(
                _row(
                    ev,
                    "C6",
                    "How much a layer's gradient changes when the layers before it update, "
                    "BN ÷ no BN (below 1: less shift with BN)",
                    f"{text.number(min(ratios), '×')} to {text.number(max(ratios), '×')}",
                    "1× (baseline)",
                )
            )
    ratios = [ev.number("C7", f"ratio_bn_over_none/{m}") for m in ("loss_range", "grad_change", "beta")]
    if None not in ratios:
        rows.append(
            _row(
                ev,
                "C7",
                "Loss range, gradient change and β-smoothness along the gradient, BN ÷ no BN "
                "(below 1: smoother with BN)",
                ", ".join(text.interval(r, "×") for r in ratios),
                "1× (baseline)",
            )
        )
    return rows


def section_html(ev: Evidence) -> Markup:
    """The explainer (templates/ics.html), for the section on internal covariate shift."""
    return render("ics.html", rows=side_by_side(ev), conclusion=conclusion(ev))
