"""Small HTML pieces every part of the page uses: escaping, inline code, verdict marks, figures, code.

Every piece of text from a ClaimResult, the demos or the environment goes through :func:`esc`.
"""

from __future__ import annotations

import html
import re
import sys
import traceback
from typing import Any

from ..experiments.result import UNDERPOWERED, ClaimResult, FigureSpec
from ..experiments.stability import describe
from .figures import figure_svg, svg_data_uri

MISSING = "not run"
_BADGE_CLASS = {
    "reproduced": "ok",
    "not reproduced": "no",
    "inconclusive": "maybe",
    UNDERPOWERED: "weak",
    MISSING: "missing",
}


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def inline(text: str) -> str:
    """Escape ``text``; `backticks` become <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(text))


def badge(verdict: str) -> str:
    return f'<span class="badge {_BADGE_CLASS.get(verdict, "missing")}">{esc(verdict)}</span>'


def stability_mark(result: ClaimResult, compact: bool = False) -> str:
    """How stable the verdict is (:func:`bnlab.experiments.stability.describe`); ``compact`` (the answers'
    evidence links, side tables): the share alone, the words in a tooltip. ``result`` may be a claim or
    one of its parts (anything with a ``stability``)."""
    s = result.stability
    if s is None:
        return ""
    words = describe(s)
    weak = "" if s.stable else " weak"
    if not compact:
        return f'<span class="stab{weak}">{esc(words)}</span>'
    short = (
        f"{s.outcomes.get(s.verdict, 0)} of {s.seeds} inputs"
        if s.method.startswith("recomputed")
        else f"{s.share:.0%} of resamples"
        if s.seeds >= 2
        else f"{s.seeds} seed"
    )
    return f'<span class="stab{weak}" title="{esc(words)}">{esc(short)}</span>'


def verdict_marks(result: ClaimResult | None, compact: bool = False) -> str:
    """What stands next to a claim wherever it is named (its card, the answers, the verdict table): the
    verdict badge -- "underpowered" when the rule's verdict is not stable -- and how stable it is."""
    if result is None:
        return f'<span class="marks">{badge(MISSING)}</span>'
    return f'<span class="marks">{badge(result.verdict)}{stability_mark(result, compact)}</span>'


def part_marks(result: ClaimResult | None, key: str, compact: bool = False) -> str:
    """The marks of one part of a claim (the part a sentence rests on); the claim's own marks when the
    result has no such part (an edition made before the claim had parts)."""
    part = result.part(key) if result is not None else None
    if part is None:
        return verdict_marks(result, compact)
    return f'<span class="marks">{badge(part.verdict)}{stability_mark(part, compact)}</span>'


def figure_html(spec: FigureSpec, label: str) -> str:
    """The figure as an <img> with its caption; a figure that fails to draw shows the error."""
    title = f"{label} · {spec.title}" if label else spec.title
    anchor = f"fig-{label}-{spec.name}" if label else f"fig-{spec.name}"
    try:
        uri = svg_data_uri(figure_svg(spec))
    except Exception as exc:  # noqa: BLE001 -- a broken figure must not cost the whole report
        print(f"warning: figure {label}/{spec.name} could not be drawn: {exc!r}", file=sys.stderr)
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return (
            f'<figure class="fig broken"><div class="error">Figure {esc(spec.name)} could not be '
            f"drawn: <code>{esc(detail)}</code></div><figcaption><b>{esc(title)}</b></figcaption></figure>"
        )
    caption = f" {esc(spec.caption)}" if spec.caption else ""
    return (
        f'<figure class="fig" id="{esc(anchor)}">'
        f'<img src="{uri}" alt="{esc(title)}">'
        f"<figcaption><b>{esc(title)}.</b>{caption}</figcaption></figure>"
    )


def code_html(text: str, language: str = "python", caption: str = "") -> str:
    cap = f'<div class="code-caption">{inline(caption)}</div>' if caption else ""
    return (
        f'<div class="code-block">{cap}<pre class="code"><span class="lang">{esc(language)}</span>'
        f"<code>{esc(text.rstrip())}</code></pre></div>"
    )
