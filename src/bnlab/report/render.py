"""The report page: one self-contained HTML file built from ClaimResults and the measured demos.

Layout, top to bottom: the title (and, for a --quick run, a notice that the page is a smoke test);
the short answers to every question of :data:`.content.QUESTIONS`, with this run's numbers and links
to the evidence; two figures to look at first (:mod:`.look`); the verdict table of every claim
(:mod:`.catalogue`; a claim that did not run shows as "not run"); then one section per question --
its short answer again, what the sources say, explanatory blocks, extra content (internal covariate
shift explained, batch norm from scratch and its pitfalls), the evidence as claim cards
(:mod:`.cards`) and the bnlab code to use -- and how the report was made. A claim that is the
evidence of several questions is shown in full where it first appears and referred to afterwards.

Text from results, demos and the environment is escaped (:func:`.markup.esc`). Figures are SVG
data URIs (:mod:`.figures`); the page loads nothing and runs no script.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..experiments.result import REPORTED, ClaimResult
from ..experiments.stability import THRESHOLD
from . import content, look
from .answers import Evidence
from .cards import claim_card, claim_missing, claim_reference
from .catalogue import Claim, claims
from .content import Block, Code, Question
from .markup import MISSING, code_html, esc, inline, part_marks, verdict_marks
from .style import CSS


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


def block_html(block: Block) -> str:
    if block.kind == "p":
        return f"<p>{inline(block.text)}</p>"  # type: ignore[arg-type]  # a paragraph's text is one str
    if block.kind == "math":
        return f'<pre class="math">{esc(block.text)}</pre>'
    if block.kind == "list":
        return "<ul>" + "".join(f"<li>{inline(t)}</li>" for t in block.text) + "</ul>"
    raise ValueError(f"expected a block kind in ('p', 'math', 'list') (got {block.kind!r})")


def _code(code: Code) -> str:
    return code_html(code.text, code.language)


# --- sections -------------------------------------------------------------------------------------


def answer_html(q: Question, ev: Evidence) -> str:
    """The short answer with its evidence links; a link to a claim carries the verdict marks of what the
    sentence rests on: the part named by the link's third entry, else the claim."""
    a = q.answer(ev)
    links = []
    for href, label, *part in a.links:
        cid = href[1:] if re.fullmatch(r"#C\d+", href) else None
        result = ev.results.get(cid) if cid else None
        marks = (
            (part_marks(result, part[0], compact=True) if part else verdict_marks(result, compact=True)) if cid else ""
        )
        links.append(f'<li><a href="{esc(href)}">{esc(label)}</a>{marks}</li>')
    return (
        f'<p class="short">{inline(a.text)}</p>'
        f'<ul class="evidence"><li class="muted">Evidence:</li>{"".join(links)}</ul>'
    )


def answers_section(questions: Sequence[Question], ev: Evidence) -> str:
    items = "".join(
        f'<li class="qa" id="answer-{esc(q.slug)}"><h3><a href="#{esc(q.slug)}">{esc(q.title)}</a></h3>'
        f"{answer_html(q, ev)}</li>"
        for q in questions
    )
    return f"""
<section class="answers" id="answers">
  <h2>Short answers</h2>
  <ol class="qa-list">{items}</ol>
</section>"""


def verdict_table(by_id: Mapping[str, ClaimResult], catalogue: Mapping[str, Claim]) -> str:
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
        parts = "".join(
            f'<div class="small">{esc(p.title)}: {part_marks(result, p.key, compact=True)}</div>'
            for p in (result.parts if result is not None else ())
        )
        rounds = (
            f'<div class="muted small">{result.rounds["seeds"]} seeds in {result.rounds["rounds"]} round(s)</div>'
            if result is not None and result.rounds
            else ""
        )
        rows.append(
            f'<tr><td class="cid"><a href="#{esc(cid)}">{esc(cid)}</a></td><td>{esc(title)}'
            f'<div class="muted small">{esc(source)}</div></td><td>{verdict_marks(result)}{parts}{rounds}</td></tr>'
        )
    counts = {v: sum(r.verdict == v for r in by_id.values()) for v in REPORTED}
    missing = sum(cid not in by_id for cid in ids)
    tally = " · ".join(f"{n} {v}" for v, n in counts.items() if n or v != REPORTED[-1]) + (
        f" · {missing} {MISSING}" if missing else ""
    )
    return f"""
<section class="verdicts" id="verdicts">
  <h2>The claims tested, and the verdicts</h2>
  <p class="muted">{esc(tally)}. Each verdict follows a rule fixed in the experiment's code before its runs;
  the cards below show the rule, the numbers and the figures. Next to each verdict: how often the rule gives
  the same verdict on resampled sets of seeds (a stand-in for a re-run with fresh seeds, or on another machine);
  below {THRESHOLD:.0%} the claim is reported as underpowered, not as a finding. A claim with parts has each part
  judged and shown on its own; seeds were added in rounds until every verdict was settled or a cap was reached.</p>
  <table class="verdict-table"><thead><tr><th>Claim</th><th>What was tested (source)</th><th>Verdict here</th></tr></thead>
  <tbody>{"".join(rows)}</tbody></table>
</section>"""  # noqa: E501 -- HTML markup, one element a line


def question_section(
    q: Question, ev: Evidence, catalogue: Mapping[str, Claim], shown: set[str], csv_names: Mapping[str, str]
) -> str:
    """One question; ``shown`` collects the claims already shown in full (updated in place)."""
    evidence = []
    for cid in q.claims:
        result = ev.results.get(cid)
        if result is None:
            evidence.append(claim_missing(catalogue[cid]) if cid in catalogue and cid not in shown else "")
        elif cid in shown:
            evidence.append(claim_reference(result, catalogue.get(cid)))
        else:
            evidence.append(claim_card(result, catalogue.get(cid), csv_names.get(cid)))
        shown.add(cid)
    sources = f'<p class="sources"><b>What the sources say.</b> {inline(q.sources)}</p>' if q.sources else ""
    extra = q.extra(ev) if q.extra else ""
    code = f'<h3 class="sub">The code</h3>{"".join(_code(c) for c in q.code)}' if q.code else ""
    cards = f'<h3 class="sub">The evidence</h3>{"".join(evidence)}' if evidence else ""
    return f"""
<section class="question" id="{esc(q.slug)}">
  <h2>{esc(q.title)}</h2>
  <div class="answer">{answer_html(q, ev)}</div>
  {sources}
  {"".join(block_html(b) for b in q.blocks)}
  {extra}
  {cards}
  {code}
</section>"""


def other_section(results: Sequence[ClaimResult], csv_names: Mapping[str, str]) -> str:
    if not results:
        return ""
    cards = "".join(claim_card(r, None, csv_names.get(r.id)) for r in results)
    return f'<section class="question" id="other"><h2>Other results</h2>{cards}</section>'


ENV_LABELS = {
    "bnlab": "bnlab",
    "torch": "torch",
    "numpy": "numpy",
    "matplotlib": "matplotlib",
    "python": "Python",
    "platform": "platform",
    "cpu": "CPU",
    "cpu_count": "CPU cores",
    "torch_threads": "torch threads",
    "cuda": "CUDA available",
    "quick": "quick run (--quick)",
    "jobs": "worker processes",
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
        return esc(
            f"{'each experiment’s own' if requested is None else requested} per setting"
            + (f" ({counts})" if counts else "")
        )
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key in ("git_revision", "command", "platform"):
        return f"<code>{esc(value)}</code>"
    return esc(value)


def environment_html(environment: Mapping[str, Any]) -> str:
    rows = "".join(
        f'<tr><th scope="row">{esc(ENV_LABELS.get(k, k.replace("_", " ")))}</th><td>{_env_value(k, v)}</td></tr>'
        for k, v in environment.items()
    )
    return f"""
<section class="environment" id="environment">
  <h2>How this report was made</h2>
  <p>Every number above comes from the runs recorded in <code>results.json</code> (one CSV of runs
  per experiment next to this page), on this machine:</p>
  <table class="numbers"><tbody>{rows}</tbody></table>
</section>"""


def _header(environment: Mapping[str, Any], quick: bool) -> str:
    when = str(environment.get("date_utc", "")).replace("T", " ").replace("+00:00", " UTC")
    wall = environment.get("wall_time_s")
    wall_text = ""
    if isinstance(wall, (int, float)) and wall == wall:
        wall_text = f" · ran {wall / 60:.1f} min" if wall >= 60 else f" · ran {wall:.0f} s"
    machine = environment.get("cpu", "")
    cores = environment.get("cpu_count")
    machine = f" · {machine}{f', {cores} cores' if cores else ''}" if machine else ""
    meta = (
        f"{'quick run (smoke test)' if quick else 'full run'} · bnlab {environment.get('bnlab', '')} · "
        f"torch {environment.get('torch', '')} · {when}{wall_text}{machine}"
    )
    if quick:
        lede = (
            "The questions people ask about batch norm, answered from the published claims and from "
            "experiments run by bnlab on this machine."
        )
        notice = """
  <div class="notice" role="note"><b>Smoke test, not evidence.</b> This page comes from a <code>--quick</code>
  run: every experiment ran for a few steps with two seeds, to check that it works end to end. Its numbers and
  verdicts (shown muted) decide nothing; the intervals are as wide as two seeds make them. Run
  <code>bnlab report</code> without <code>--quick</code> for the real answers, or read the full edition kept
  with bnlab's source (<code>docs/report/</code>).</div>"""
    else:
        lede = (
            "The questions people ask about batch norm, answered from the published claims and from "
            "experiments run by bnlab on this machine. Each verdict follows a rule fixed before the runs; on "
            "models and data this small, a claim that does not reproduce is a finding at this scale, not a "
            "refutation."
        )
        notice = ""
    return f"""
<header class="top">
  <h1>Batch normalization, put to the test</h1>
  <p class="lede">{esc(lede)}</p>{notice}
  <p class="muted meta">{esc(meta)}</p>
</header>"""


def render_page(
    results: Iterable[ClaimResult],
    environment: Mapping[str, Any],
    csv_names: Mapping[str, str] | None = None,
    demos: Mapping[str, Any] | None = None,
) -> str:
    """The whole page as a string.

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
    sections = "".join(question_section(q, ev, catalogue, shown, csv_names) for q in questions)
    others = [r for cid, r in by_id.items() if cid not in shown]
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bnlab report: batch normalization, put to the test</title>
<style>{CSS}</style>
</head>
<body class="{"quick" if quick else "full"}">
<main>
{_header(environment, quick)}
{answers_section(questions, ev)}
{look.section_html(by_id, ev.demos, quick)}
{verdict_table(by_id, catalogue)}
{sections}
{other_section(others, csv_names)}
{environment_html(environment)}
</main>
</body>
</html>
"""
