"""A claim's card: what was found first, then the claim, the key numbers and figures; the statistics,
the verdict rule and the setup folded away underneath.

Numbers are shown with their plain labels and units (``ClaimResult.labels``) in the one notation of
:mod:`bnlab.experiments.text`: "mean [low, high]", the 95% interval clipped to what is possible and
flagged when it rests on fewer than three seeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..experiments import text
from ..experiments.result import UNDERPOWERED, ClaimResult, Label
from ..experiments.stability import THRESHOLD
from .catalogue import Claim
from .markup import esc, figure_html, inline, part_marks, verdict_marks


def _is_estimate(v: Any) -> bool:
    return isinstance(v, Mapping) and "mean" in v and ("ci95" in v or "n" in v)


def _is_paired(v: Any) -> bool:
    return isinstance(v, Mapping) and "diff" in v and "p_t" in v


def _plain_key(key: str) -> str:
    """A key nobody labelled, made readable (a last resort: experiments label their numbers)."""
    return text.name(str(key)).replace("_", " ")


FEW = '<span class="flag">{n} seeds: too few for the interval to mean much</span>'


def _few(value: Any) -> int | None:
    """The seed count behind the first interval in ``value`` that rests on too few seeds, or None."""
    if _is_paired(value):
        value = value["diff"]
    if _is_estimate(value):
        return value.get("n") if text.few_seeds(value) else None
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (list, tuple)) else ()
    return next((n for n in map(_few, items) if n), None)


def value_html(value: Any, unit: str = "", flag: bool = True) -> str:
    """One number, estimate, comparison, list or small table of them, as a reader should see it; an
    interval on too few seeds is flagged once per row."""
    n = _few(value) if flag else None
    note = f" {FEW.format(n=n)}" if n else ""
    if _is_paired(value):
        value = value["diff"]
    if _is_estimate(value):
        return f'<span class="est">{esc(text.interval(value, unit))}</span>{note}'
    if isinstance(value, Mapping):
        return " · ".join(f"{esc(_plain_key(k))}: {value_html(v, unit, False)}" for k, v in value.items()) + note
    if isinstance(value, (list, tuple)):
        if not value:
            return "none"
        shown = ", ".join(value_html(v, unit, False) for v in value[:12])
        return shown + (", …" if len(value) > 12 else "") + note
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) or value is None:
        return esc(text.number(value, unit))
    return esc(value)


def statistics_html(value: Any) -> str:
    """The test behind an estimate or comparison (for the folded statistics), or ''."""
    parts = []
    if _is_paired(value):
        n = value.get("wins", 0) + value.get("losses", 0)
        parts += [
            f"paired t-test p {text.p_value(value.get('p_t'))}",
            f"sign test p {text.p_value(value.get('p_sign'))}",
            f"above 0 in {value.get('wins', 0)} of {n} seeds",
        ]
    if isinstance(value, Mapping) and "p_holm" in value:
        parts.append(f"Holm-adjusted p {text.p_value(value['p_holm'])}")
    if _is_estimate(value) or _is_paired(value):
        n = (value["diff"] if _is_paired(value) else value).get("n")
        if n:
            parts.append(f"{n} seeds")
    return " · ".join(parts)


def _row(label: str, value: str) -> str:
    return f'<tr><th scope="row">{inline(label)}</th><td>{value}</td></tr>'


def numbers_tables(result: ClaimResult) -> tuple[str, str]:
    """(key numbers table, statistics table) of a result."""
    key_rows: list[str] = []
    detail_rows: list[str] = []
    for k, v in result.numbers.items():
        label = result.labels.get(k, Label(_plain_key(k)))
        (detail_rows if label.detail else key_rows).append(_row(label.text, value_html(v, label.unit)))
        stats = statistics_html(v)
        if stats:
            detail_rows.append(_row(f"{label.text}: the test", esc(stats)))

    def table(rows):
        return f'<table class="numbers"><tbody>{"".join(rows)}</tbody></table>' if rows else ""

    return (table(key_rows) or '<p class="muted">No numbers recorded.</p>'), table(detail_rows)


SETUP_WORDS = {"lr": "learning rate", "lrs": "learning rates", "mlp": "MLP", "cnn": "CNN", "sgd": "SGD"}


def setup_html(setup: Mapping[str, Any]) -> str:
    """The settings as a small table; configuration strings (probes, specs) in code type."""

    def show(v: Any) -> str:
        if isinstance(v, Mapping):
            return " · ".join(f"{esc(_plain_key(k))}: {show(x)}" for k, x in v.items())
        if isinstance(v, (list, tuple)):
            return ", ".join(show(x) for x in v)
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, str) and ("_" in v or ":" in v):
            return f"<code>{esc(v)}</code>"
        return esc(v)

    rows = "".join(_row(SETUP_WORDS.get(k, _plain_key(k)), show(v)) for k, v in setup.items())
    return f'<table class="numbers setup"><tbody>{rows}</tbody></table>' if rows else ""


def wall_time_text(result: ClaimResult) -> str:
    """What the experiment cost, said for what it is: ``registry`` measures each run's wall time where
    it ran (now, or when it was stored) and adds the analysis; runs overlap on parallel workers, so
    this is compute time, not the time the report waited for this experiment."""
    s = result.wall_time_s
    if not s or s < 1:
        return ""
    took = f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"
    return f"{took} measured (its runs, summed, plus its analysis)"


def stability_html(result: ClaimResult) -> str:
    """The stability of the verdict, for the folded statistics: how it was measured and what came out."""
    s = result.stability
    if s is None:
        return ""
    outcomes = ", ".join(f"{v} {n}" for v, n in s.outcomes.items())
    rule = (
        f"A verdict is reported as a finding when at least {THRESHOLD:.0%} of the sets agree with it; "
        f"below that the claim is reported as underpowered."
    )
    note = f" {s.note}" if s.note else ""
    return (
        f'<p class="rule"><b>Stability of the verdict:</b> {esc(s.method)}: {esc(outcomes)}.{esc(note)} {esc(rule)}</p>'
    )


def parts_html(result: ClaimResult) -> str:
    """A compound claim's parts, each with its verdict, stability and margin (fixed before the runs)."""
    if not result.parts:
        return ""
    rows = []
    for p in result.parts:
        margin = ""
        if p.margin:
            size = p.margin.get("reads") or text.number(p.margin["size"], p.margin.get("unit", ""))
            margin = f'<div class="muted small">Margin {esc(size)}: {esc(p.margin["why"])}</div>'
        rows.append(
            f'<tr><th scope="row">{esc(p.title)}<div class="muted small">{esc(p.rule)}</div>{margin}</th>'
            f"<td>{part_marks(result, p.key)}</td></tr>"
        )
    return f'<table class="numbers parts"><caption>Judged by part</caption><tbody>{"".join(rows)}</tbody></table>'


def rule_version_html(result: ClaimResult) -> str:
    """Which version of the rule judged this run, and the rules it replaced with why."""
    if not result.rule_version and not result.rule_history:
        return ""
    out = f"This run was judged by the rule of {esc(result.rule_version)}." if result.rule_version else ""
    for old in result.rule_history:
        out += f" It replaced, on {esc(old['replaced'])}, the rule: “{esc(old['rule'])}” Why: {esc(old['reason'])}."
    return f'<p class="rule muted">{out.strip()}</p>'


def rounds_html(result: ClaimResult) -> str:
    """How many rounds of seeds ran and why they stopped (bnlab.experiments.registry)."""
    r = result.rounds
    if not r:
        return ""
    plan = ", ".join(str(n) for n in r["plan"])
    why = (
        "every verdict was settled, with the same verdicts, at two looks in a row"
        if r["stopped"] == "settled"
        else "the cap fixed in advance was reached"
    )
    return (
        f'<p class="rule"><b>Seeds in rounds:</b> {r["seeds"]} seeds per setting in {r["rounds"]} round(s) of the '
        f"plan {esc(plan)}; stopped because {esc(why)}. A look before the cap stops the rounds only when every "
        f"verdict (the claim's and each part's) is stable at it and was stable with the same verdict at the look "
        f"before: stopping at the first look that crosses {THRESHOLD:.0%} would report the luckiest of several "
        f"noisy estimates.</p>"
    )


def finding_html(result: ClaimResult) -> str:
    """What was found; for an underpowered verdict, what was measured, said not to be a finding."""
    finding = result.finding or result.summary
    if result.verdict == UNDERPOWERED:
        return (
            f'<p class="finding weak"><b>Measured, not settled:</b> {esc(finding)} '
            f'<span class="muted">Underpowered: these seeds do not settle the verdict, so this is not a '
            f"finding.</span></p>"
        )
    return f'<p class="finding"><b>Found:</b> {esc(finding)}</p>'


def claim_card(result: ClaimResult, info: Claim | None, csv_name: str | None) -> str:
    title = result.title or (info.title if info else result.name.replace("-", " "))
    source = result.source or (info.source if info else "")
    figures = "".join(figure_html(f, result.id) for f in result.figures)
    key_table, stats_table = numbers_tables(result)
    csv = (
        f'<p class="muted">Every run: <a href="{esc(csv_name)}">{esc(csv_name)}</a> ({len(result.rows)} rows)</p>'
        if csv_name
        else ""
    )
    took = wall_time_text(result)
    return f"""
<article class="claim" id="{esc(result.id)}">
  <header><span class="cid">{esc(result.id)}</span> <h3>{esc(title)}</h3> {verdict_marks(result)}</header>
  {finding_html(result)}
  {parts_html(result)}
  <blockquote><p>{esc(result.claim)}</p><footer>— {esc(source)}</footer></blockquote>
  {key_table}
  {figures}
  <details class="more"><summary>Statistics, verdict rule and setup</summary>
    <p>{esc(result.summary)}</p>
    <p class="rule"><b>Verdict rule, fixed before the runs:</b> {esc(result.rule)}</p>
    {rule_version_html(result)}
    {stability_html(result)}
    {rounds_html(result)}
    {stats_table}
    {setup_html(result.setup)}
    {csv}
  </details>
  <p class="muted small">{esc(result.id)} · experiment {esc(result.name)}{esc(" · " + took if took else "")}</p>
</article>"""


def claim_reference(result: ClaimResult, info: Claim | None) -> str:
    title = result.title or (info.title if info else result.name)
    return f"""
<article class="claim ref">
  <header><span class="cid">{esc(result.id)}</span> <h3>{esc(title)}</h3> {verdict_marks(result)}</header>
  <p class="finding">{esc(result.finding or result.summary)}{esc(" (Underpowered: not a finding.)" if result.verdict == UNDERPOWERED else "")} <a href="#{esc(result.id)}">Evidence above.</a></p>
</article>"""  # noqa: E501 -- HTML markup, one element a line


def claim_missing(info: Claim) -> str:
    return f"""
<article class="claim missing" id="{esc(info.id)}">
  <header><span class="cid">{esc(info.id)}</span> <h3>{esc(info.title)}</h3> {verdict_marks(None)}</header>
  <p class="muted">This experiment did not run in this report, so there is no evidence for it here
  ({esc(info.source)}).</p>
</article>"""
