"""The report page: one self-contained HTML file built from ClaimResults and the measured demos.

Layout, top to bottom: the title (and, for a --quick run, a notice that the page is a smoke test);
the short answers to every question of :data:`.content.QUESTIONS`, with this run's numbers and links
to the evidence; two figures to look at first (:mod:`.look`); the verdict table of every claim
(:mod:`.catalogue`; a claim that did not run shows as "not run"); then one section per question --
its short answer again, what the sources say, explanatory blocks, extra content (internal covariate
shift explained, batch norm from scratch and its pitfalls), the evidence as claim cards
(:mod:`.cards`) and the bnlab code to use -- and how the report was made. A claim that is the
evidence of several questions is shown in full where it first appears and referred to afterwards.

Each part of the page is a template in ``templates/`` (``page.html`` includes them in this order);
this module gathers what each shows. Everything the templates print is escaped (:mod:`.markup`).
Figures are SVG data URIs (:mod:`.figures`); the page loads nothing and runs no script.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from markupsafe import Markup

from ..experiments.result import REPORTED, ClaimResult
from . import content, look
from .answers import Evidence
from .cards import NO_CARD, card, missing_card, reference_card
from .catalogue import Claim, claims
from .content import Question
from .markup import MISSING, render


def claim_order(claim_id: str) -> tuple[int, str]:
    """C2 before C10; anything not of the form C<n> after them, alphabetically."""
    m = re.fullmatch(r"C(\d+)", claim_id)
    return (int(m.group(1)), "") if m else (sys.maxsize, claim_id)


def index_results(results: Iterable[ClaimResult]) -> dict[str, ClaimResult]:
    """Results by claim id, in claim order; two results for one claim is an error."""
    by_id: dict[str, ClaimResult] = {}
    for r in results:
        if not isinstance(r, ClaimResult):
            raise TypeError(f"expected ClaimResult objects (got {type(r).__name__})")
        if r.id in by_id:
            raise ValueError(f"expected one result per claim (got two for {r.id!r})")
        by_id[r.id] = r
    return dict(sorted(by_id.items(), key=lambda kv: claim_order(kv[0])))


BLOCK_KINDS = ("p", "math", "list")


# --- the data each section's template shows ----------------------------------------------------------


def _answer(q: Question, ev: Evidence) -> dict[str, Any]:
    """The short answer and its evidence links; a link to a claim names the result (and the part, the
    link's third entry) whose verdict marks it carries."""
    a = q.answer(ev)
    links = []
    for href, label, *part in a.links:
        cid = href[1:] if re.fullmatch(r"#C\d+", href) else None
        result = ev.results.get(cid) if cid else None
        links.append(
            {
                "href": href,
                "label": label,
                "claim": cid is not None,
                "result": result,
                "part": part[0] if part else None,
            }
        )
    return {"text": a.text, "links": links}


def answer_html(q: Question, ev: Evidence) -> Markup:
    """The short answer with its evidence links (templates/answer.html)."""
    return render("answer.html", answer=_answer(q, ev))


def _verdicts(by_id: Mapping[str, ClaimResult], catalogue: Mapping[str, Claim]) -> dict[str, Any]:
    """The verdict table's rows (every claim of the catalogue or the results) and its tally."""
    ids = sorted(set(catalogue) | set(by_id), key=claim_order)
    rows = []
    for cid in ids:
        result, info = by_id.get(cid), catalogue.get(cid)
        title = (
            result.title
            if result is not None and result.title
            else info.title
            if info
            else result.name.replace("-", " ")  # type: ignore[union-attr]  # a claim has a result or an info
        )
        source = result.source if result is not None else info.source if info else ""
        rows.append(
            {
                "id": cid,
                "title": title,
                "source": source,
                "result": result,
                "parts": result.parts if result is not None else (),
                "rounds": result.rounds if result is not None else None,
            }
        )
    counts = {v: sum(r.verdict == v for r in by_id.values()) for v in REPORTED}
    missing = sum(cid not in by_id for cid in ids)
    tally = " · ".join(f"{n} {v}" for v, n in counts.items() if n or v != REPORTED[-1]) + (
        f" · {missing} {MISSING}" if missing else ""
    )
    return {"rows": rows, "tally": tally}


def verdict_table(by_id: Mapping[str, ClaimResult], catalogue: Mapping[str, Claim]) -> Markup:
    """The verdict table of every claim (templates/verdicts.html); a claim that did not run shows as "not run"."""
    return render("verdicts.html", verdicts=_verdicts(by_id, catalogue))


def _section(
    q: Question, ev: Evidence, catalogue: Mapping[str, Claim], shown: set[str], csv_names: Mapping[str, str]
) -> dict[str, Any]:
    """One question's section; ``shown`` collects the claims already shown in full (updated in place)."""
    for b in q.blocks:
        if b.kind not in BLOCK_KINDS:
            raise ValueError(f"expected a block kind in {BLOCK_KINDS} (got {b.kind!r})")
    evidence = []
    for cid in q.claims:
        result = ev.results.get(cid)
        if result is None:
            evidence.append(missing_card(catalogue[cid]) if cid in catalogue and cid not in shown else NO_CARD)
        elif cid in shown:
            evidence.append(reference_card(result, catalogue.get(cid)))
        else:
            evidence.append(card(result, catalogue.get(cid), csv_names.get(cid)))
        shown.add(cid)
    return {
        "slug": q.slug,
        "title": q.title,
        "answer": _answer(q, ev),
        "sources": q.sources,
        "blocks": q.blocks,
        "extra": q.extra(ev) if q.extra else "",
        "evidence": evidence,
        "code": q.code,
    }


ENV_LABELS = {
    "bnlab": "bnlab",
    "torch": "torch",
    "numpy": "numpy",
    "matplotlib": "matplotlib",
    "python": "Python",
    "platform": "platform",
    "cpu": "CPU",
    "cpu_isa": "instruction set of torch's kernels",
    "cpu_count": "CPU cores",
    "torch_threads": "torch threads (the report's process)",
    "cuda": "CUDA available",
    "quick": "quick run (--quick)",
    "jobs": "worker processes",
    "threads_per_run": "torch threads per run",
    "seeds": "seeds",
    "wall_time_s": "wall time (s), measured",
    "git_revision": "git revision",
    "date_utc": "date (UTC)",
    "command": "command",
    "demos_s": "demos (s), measured",
}


def _env_value(key: str, value: Any) -> str:
    if key == "seeds" and isinstance(value, Mapping):
        requested = value.get("requested")
        per = value.get("per_claim") or {}
        counts = ", ".join(f"{cid} {len(s) if isinstance(s, list) else s}" for cid, s in per.items())
        return f"{'each experiment’s own' if requested is None else requested} per setting" + (
            f" ({counts})" if counts else ""
        )
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _machine(environment: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of "How this report was made"; revisions, commands and platforms in code type."""
    return [
        {
            "label": ENV_LABELS.get(k, k.replace("_", " ")),
            "value": _env_value(k, v),
            "code": k in ("git_revision", "command", "platform") and not isinstance(v, bool),
        }
        for k, v in environment.items()
    ]


def _meta(environment: Mapping[str, Any], quick: bool) -> str:
    """The line under the title: what kind of run, the versions, when, how long, on what machine."""
    when = str(environment.get("date_utc", "")).replace("T", " ").replace("+00:00", " UTC")
    wall = environment.get("wall_time_s")
    wall_text = ""
    if isinstance(wall, (int, float)) and wall == wall:
        wall_text = f" · ran {wall / 60:.1f} min" if wall >= 60 else f" · ran {wall:.0f} s"
    machine = environment.get("cpu", "")
    cores = environment.get("cpu_count")
    machine = f" · {machine}{f', {cores} cores' if cores else ''}" if machine else ""
    return (
        f"{'quick run (smoke test)' if quick else 'full run'} · bnlab {environment.get('bnlab', '')} · "
        f"torch {environment.get('torch', '')} · {when}{wall_text}{machine}"
    )


def render_page(
    results: Iterable[ClaimResult],
    environment: Mapping[str, Any],
    csv_names: Mapping[str, str] | None = None,
    demos: Mapping[str, Any] | None = None,
) -> str:
    """The whole page as a string (templates/page.html).

    Args:
        results: the ClaimResults (any subset of the claims, any order).
        environment: :func:`.environment.collect`'s dict (its "quick" flag makes the page a smoke test).
        csv_names: claim id -> the CSV file name next to the page, for the per-run tables.
        demos: :func:`bnlab.demos.run`'s dict; None or empty: the demos' parts say they did not run.
    """
    by_id = index_results(results)
    csv_names = dict(csv_names or {})
    quick = bool(environment.get("quick"))
    ev = Evidence(by_id, dict(demos or {}), quick)
    catalogue = claims()
    questions = content.QUESTIONS
    shown: set[str] = set()
    sections = [_section(q, ev, catalogue, shown, csv_names) for q in questions]
    return str(
        render(
            "page.html",
            quick=quick,
            meta=_meta(environment, quick),
            answers=[{"slug": q.slug, "title": q.title, **_answer(q, ev)} for q in questions],
            figures=look.figures(by_id, ev.demos, quick),
            verdicts=_verdicts(by_id, catalogue),
            sections=sections,
            others=[card(r, None, csv_names.get(r.id)) for cid, r in by_id.items() if cid not in shown],
            machine=_machine(environment),
        )
    )
