"""The report page: one self-contained HTML file built from ClaimResults.

Layout: a header, the verdict table of all claims (C1-C12; a claim that did not run shows as
"not run"), the questions of :mod:`.content` in order -- each with its short answer, explanatory
blocks, the evidence of its claims (verdict against the published claim and its source, the
summary, the numbers with their CIs, figures with captions, the setup) and the bnlab code to use --
and the environment. A claim that is the evidence of several questions is shown in full where it
first appears and referred to afterwards.

Every piece of text from a ClaimResult or the environment goes through :func:`html.escape`.
Figures are SVG data URIs (:mod:`.figures`); the page loads nothing and runs no script.
"""

from __future__ import annotations

import html
import json
import re
import sys
import traceback
from typing import Any, Iterable, Mapping, Sequence

from ..experiments.result import VERDICTS, ClaimResult, FigureSpec
from . import content
from .content import Block, Code, Question
from .figures import figure_svg, svg_data_uri
from .style import CSS

MISSING = "not run"
_BADGE_CLASS = {"reproduced": "ok", "not reproduced": "no", "inconclusive": "maybe", MISSING: "missing"}


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def inline(text: str) -> str:
    """Escape ``text``; `backticks` become <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(text))


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


# --- small pieces ---------------------------------------------------------------------------------


def badge(verdict: str) -> str:
    return f'<span class="badge {_BADGE_CLASS.get(verdict, "missing")}">{esc(verdict)}</span>'


def format_number(value: Any) -> str:
    """Plain text for one number: 4 significant digits for floats, None (NaN in JSON) as "n/a"."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "n/a"
        return f"{value:.4g}"
    if hasattr(value, "item") and callable(value.item):
        return format_number(value.item())
    return str(value)


def format_value(value: Any, depth: int = 0) -> str:
    """HTML for one entry of ClaimResult.numbers (see experiments.result.estimate); a dict's items
    go on lines of their own, those of a nested dict on one line."""
    if isinstance(value, Mapping) and "mean" in value and ("ci95" in value or "ci" in value):
        lo, hi = value.get("ci95", value.get("ci"))
        n = f", n = {esc(format_number(value['n']))}" if "n" in value else ""
        return (f'<span class="est">{esc(format_number(value["mean"]))}</span> '
                f'<span class="ci">(95% CI {esc(format_number(lo))} – {esc(format_number(hi))}{n})</span>')
    if isinstance(value, Mapping):
        sep = "<br>" if depth == 0 else " · "
        return sep.join(f"{esc(k)}: {format_value(v, depth + 1)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        shown = ", ".join(format_value(v, depth + 1) for v in value[:12])
        return f"[{shown}{', …' if len(value) > 12 else ''}]"
    return esc(format_number(value))


def numbers_table(numbers: Mapping[str, Any]) -> str:
    if not numbers:
        return '<p class="muted">No numbers recorded.</p>'
    rows = "".join(f"<tr><th scope=\"row\">{esc(k)}</th><td>{format_value(v)}</td></tr>"
                   for k, v in numbers.items())
    return f'<table class="numbers"><tbody>{rows}</tbody></table>'


def figure_html(spec: FigureSpec, claim_id: str) -> str:
    """The figure as an <img> with its caption; a figure that fails to draw shows the error."""
    title = f"{claim_id} · {spec.title}"
    try:
        uri = svg_data_uri(figure_svg(spec))
    except Exception as exc:  # a broken figure must not cost the whole report
        print(f"warning: figure {claim_id}/{spec.name} could not be drawn: {exc!r}", file=sys.stderr)
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return (f'<figure class="fig broken"><div class="error">Figure {esc(spec.name)} could not be '
                f'drawn: <code>{esc(detail)}</code></div><figcaption><b>{esc(title)}</b></figcaption></figure>')
    caption = f" {esc(spec.caption)}" if spec.caption else ""
    return (f'<figure class="fig" id="fig-{esc(claim_id)}-{esc(spec.name)}">'
            f'<img src="{uri}" alt="{esc(title)}">'
            f"<figcaption><b>{esc(title)}.</b>{caption}</figcaption></figure>")


def code_html(code: Code) -> str:
    return (f'<pre class="code"><span class="lang">{esc(code.language)}</span>'
            f'<code>{esc(code.text.rstrip())}</code></pre>')


def block_html(block: Block) -> str:
    if block.kind == "p":
        return f"<p>{inline(block.text)}</p>"
    if block.kind == "math":
        return f'<pre class="math">{esc(block.text)}</pre>'
    if block.kind == "list":
        return "<ul>" + "".join(f"<li>{inline(t)}</li>" for t in block.text) + "</ul>"
    raise ValueError(f"expected a block kind in ('p', 'math', 'list') (got {block.kind!r})")


def setup_html(setup: Mapping[str, Any]) -> str:
    if not setup:
        return ""
    text = json.dumps(setup, indent=2, default=str, ensure_ascii=False)
    return f'<details><summary>Setup</summary><pre class="setup">{esc(text)}</pre></details>'


# --- claims ---------------------------------------------------------------------------------------


def claim_title(claim_id: str, result: ClaimResult | None) -> tuple[str, str]:
    """(short title, source) for a claim, from its result when there is one."""
    title, source = content.CLAIMS.get(claim_id, (claim_id, ""))
    if result is not None:
        title = result.name.replace("-", " ") if claim_id not in content.CLAIMS else title
        source = result.source or source
    return title, source


def claim_card(result: ClaimResult, csv_name: str | None) -> str:
    title, source = claim_title(result.id, result)
    figures = "".join(figure_html(f, result.id) for f in result.figures)
    csv = (f'<p class="muted">Per-run table: <a href="{esc(csv_name)}">{esc(csv_name)}</a> '
           f'({len(result.rows)} rows)</p>' if csv_name else "")
    seconds = f" · {result.wall_time_s:.1f} s" if result.wall_time_s else ""
    return f"""
<article class="claim" id="{esc(result.id)}">
  <header><span class="cid">{esc(result.id)}</span> <h3>{esc(title)}</h3> {badge(result.verdict)}</header>
  <blockquote><p>{esc(result.claim)}</p><footer>— {esc(source)}</footer></blockquote>
  <p class="summary">{esc(result.summary)}</p>
  <p class="rule"><b>Verdict rule, fixed before the runs:</b> {esc(result.rule)}</p>
  {numbers_table(result.numbers)}
  {figures}
  {setup_html(result.setup)}
  {csv}
  <p class="muted small">experiment {esc(result.name)}{esc(seconds)}</p>
</article>"""


def claim_reference(result: ClaimResult) -> str:
    title, _ = claim_title(result.id, result)
    return f"""
<article class="claim ref">
  <header><span class="cid">{esc(result.id)}</span> <h3>{esc(title)}</h3> {badge(result.verdict)}</header>
  <p class="summary">{esc(result.summary)} <a href="#{esc(result.id)}">Evidence above.</a></p>
</article>"""


def claim_missing(claim_id: str) -> str:
    title, source = claim_title(claim_id, None)
    return f"""
<article class="claim missing" id="{esc(claim_id)}">
  <header><span class="cid">{esc(claim_id)}</span> <h3>{esc(title)}</h3> {badge(MISSING)}</header>
  <p class="muted">This experiment did not run in this report, so there is no evidence for it here
  ({esc(source)}).</p>
</article>"""


# --- sections -------------------------------------------------------------------------------------


def verdict_table(by_id: Mapping[str, ClaimResult]) -> str:
    ids = sorted(set(content.CLAIMS) | set(by_id), key=claim_order)
    rows = []
    for cid in ids:
        result = by_id.get(cid)
        title, source = claim_title(cid, result)
        verdict = result.verdict if result is not None else MISSING
        rows.append(f'<tr><td class="cid"><a href="#{esc(cid)}">{esc(cid)}</a></td><td>{esc(title)}'
                    f'<div class="muted small">{esc(source)}</div></td><td>{badge(verdict)}</td></tr>')
    counts = {v: sum(r.verdict == v for r in by_id.values()) for v in VERDICTS}
    missing = sum(cid not in by_id for cid in ids)
    tally = " · ".join(f"{n} {v}" for v, n in counts.items()) + (f" · {missing} {MISSING}" if missing else "")
    return f"""
<section class="verdicts" id="verdicts">
  <h2>The verdicts</h2>
  <p class="muted">{esc(tally)}</p>
  <table class="verdict-table"><thead><tr><th>Claim</th><th>What the source says</th><th>Verdict here</th></tr></thead>
  <tbody>{''.join(rows)}</tbody></table>
</section>"""


def question_section(q: Question, by_id: Mapping[str, ClaimResult], shown: set[str],
                     csv_names: Mapping[str, str]) -> str:
    """One question; ``shown`` collects the claims already shown in full (updated in place)."""
    evidence = []
    for cid in q.claims:
        result = by_id.get(cid)
        if result is None:
            evidence.append(claim_missing(cid) if cid not in shown else "")
        elif cid in shown:
            evidence.append(claim_reference(result))
        else:
            evidence.append(claim_card(result, csv_names.get(cid)))
        shown.add(cid)
    found = "".join(f'<li><a href="#{esc(c)}">{esc(c)}</a> {badge(by_id[c].verdict if c in by_id else MISSING)}</li>'
                    for c in q.claims)
    return f"""
<section class="question" id="{esc(q.slug)}">
  <h2>{esc(q.title)}</h2>
  <div class="answer"><p><b>Short answer.</b> {inline(q.answer)}</p>
    <ul class="found"><li class="muted">In this run:</li>{found}</ul></div>
  {''.join(block_html(b) for b in q.blocks)}
  <h3 class="sub">The evidence</h3>
  {''.join(evidence)}
  <h3 class="sub">The bnlab code</h3>
  {''.join(code_html(c) for c in q.code)}
</section>"""


def other_section(results: Sequence[ClaimResult], csv_names: Mapping[str, str]) -> str:
    if not results:
        return ""
    cards = "".join(claim_card(r, csv_names.get(r.id)) for r in results)
    return f'<section class="question" id="other"><h2>Other results</h2>{cards}</section>'


def environment_html(environment: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th scope=\"row\">{esc(k)}</th><td>{format_value(v)}</td></tr>"
                   for k, v in environment.items())
    return f"""
<section class="environment" id="environment">
  <h2>How this report was made</h2>
  <p>Every number above comes from the runs recorded in <code>results.json</code> (one CSV of runs
  per experiment next to this page), on this machine:</p>
  <table class="numbers"><tbody>{rows}</tbody></table>
</section>"""


def render_page(results: Iterable[ClaimResult], environment: Mapping[str, Any],
                csv_names: Mapping[str, str] | None = None) -> str:
    """The whole page as a string.

    Args:
        results: the ClaimResults (any subset of the claims, any order).
        environment: :func:`.environment.collect`'s dict (shown in the footer).
        csv_names: claim id -> the CSV file name next to the page, for the per-run tables.
    """
    by_id = index_results(results)
    csv_names = dict(csv_names or {})
    questions = content.questions()
    shown: set[str] = set()
    sections = "".join(question_section(q, by_id, shown, csv_names) for q in questions)
    others = [r for cid, r in by_id.items() if cid not in shown]
    toc = "".join(f'<li><a href="#{esc(q.slug)}">{esc(q.title)}</a></li>' for q in questions)
    mode = "quick run" if environment.get("quick") else "full run"
    when = str(environment.get("date_utc", "")).replace("T", " ").replace("+00:00", " UTC")
    wall = environment.get("wall_time_s")
    wall_text = ""
    if isinstance(wall, (int, float)) and wall == wall:
        wall_text = f" · ran {wall / 60:.1f} min" if wall >= 60 else f" · ran {wall:.0f} s"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bnlab report: batch normalization, put to the test</title>
<style>{CSS}</style>
</head>
<body>
<main>
<header class="top">
  <h1>Batch normalization, put to the test</h1>
  <p class="lede">The questions people ask about batch norm, answered from the published claims and
  from experiments run by bnlab {esc(environment.get("bnlab", ""))} on this machine. Each verdict
  follows a rule fixed before the runs; a claim that does not reproduce at this small scale is a
  finding, not a failure.</p>
  <p class="muted">{esc(mode)} · {esc(when)}{esc(wall_text)} · torch {esc(environment.get("torch", ""))}</p>
</header>
{verdict_table(by_id)}
<nav class="toc"><h2>Questions</h2><ol>{toc}</ol></nav>
{sections}
{other_section(others, csv_names)}
{environment_html(environment)}
</main>
</body>
</html>
"""
