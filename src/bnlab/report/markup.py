"""The page's markup: the Jinja2 templates in ``templates/`` (one per section of the page, the shared
pieces in ``macros.html``, the stylesheet in ``style.css``) and the one environment that renders them.

Everything a template prints is escaped: autoescaping is on, and its escape is :func:`html.escape`
(``'`` as ``&#x27;``, ``"`` as ``&quot;``: the escaping the page had before its templates, so a
page's entities do not change from one edition to the next). What is not escaped is
``markupsafe.Markup``: what a template rendered, text that :func:`inline` escaped before adding
its ``<code>``, and a figure's data URI (:func:`figure`, the one value bnlab makes that is markup already).
A name a template uses but nobody passed is an error (StrictUndefined), not an empty string.
"""

from __future__ import annotations

import html
import re
import sys
import traceback
from collections.abc import Mapping
from functools import cache
from typing import Any

import jinja2
from markupsafe import Markup

from ..experiments import text
from ..experiments.result import UNDERPOWERED, FigureSpec
from ..experiments.stability import THRESHOLD, Stability, describe
from .figures import figure_svg, svg_data_uri

MISSING = "not run"
BADGE_CLASS = {
    "reproduced": "ok",
    "not reproduced": "no",
    "inconclusive": "maybe",
    UNDERPOWERED: "weak",
    MISSING: "missing",
}


def _escape(value: Any) -> Markup:
    """What a template prints: Markup as it is, anything else through html.escape."""
    if hasattr(value, "__html__"):
        return Markup(value)
    return Markup(html.escape(str(value), quote=True))


def inline(value: Any) -> Markup:
    """``value`` escaped; `backticks` become <code>."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(value), quote=True)))


def is_estimate(v: Any) -> bool:
    """An estimate's dict: a mean with its interval or seed count."""
    return isinstance(v, Mapping) and "mean" in v and ("ci95" in v or "n" in v)


def is_paired(v: Any) -> bool:
    """A paired comparison's dict: the difference and its tests."""
    return isinstance(v, Mapping) and "diff" in v and "p_t" in v


def plain_key(key: Any) -> str:
    """A key nobody labelled, made readable (a last resort: experiments label their numbers)."""
    return text.name(str(key)).replace("_", " ")


def stability_short(s: Stability) -> str:
    """The stability in a few words, for the compact marks (the answers' links, side tables): the share
    alone; the words of :func:`~bnlab.experiments.stability.describe` go in a tooltip."""
    if s.method.startswith("recomputed"):
        return f"{s.outcomes.get(s.verdict, 0)} of {s.seeds} inputs"
    return f"{s.share:.0%} of resamples" if s.seeds >= 2 else f"{s.seeds} seed"


def figure(spec: FigureSpec, label: str) -> dict[str, Any]:
    """A figure as the template ``macros.html`` shows it: its anchor, title, caption and either its
    image (an SVG data URI) or, when it fails to draw, the error (a broken figure must not cost the
    whole report)."""
    out: dict[str, Any] = {
        "anchor": f"fig-{label}-{spec.name}" if label else f"fig-{spec.name}",
        "name": spec.name,
        "title": f"{label} · {spec.title}" if label else spec.title,
        "caption": spec.caption,
        "uri": None,
        "error": None,
    }
    try:
        # Marked safe here and nowhere else: svg_data_uri percent-encodes the SVG, so the URI holds no
        # '"', '&', '<' or '>'; escaping it would only spell its single quotes as entities.
        out["uri"] = Markup(svg_data_uri(figure_svg(spec)))
    except Exception as exc:  # noqa: BLE001 -- a broken figure must not cost the whole report
        print(f"warning: figure {label}/{spec.name} could not be drawn: {exc!r}", file=sys.stderr)
        out["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return out


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bnlab.report", "templates"),
        autoescape=True,
        finalize=_escape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(inline=inline, interval=text.interval, number=text.number, name=text.name, plain_key=plain_key)
    env.filters.update(describe=describe, stability_short=stability_short)
    env.tests.update(estimate=is_estimate, paired=is_paired, listed=lambda v: isinstance(v, (list, tuple)))
    env.globals.update(MISSING=MISSING, BADGE_CLASS=BADGE_CLASS, THRESHOLD=THRESHOLD, UNDERPOWERED=UNDERPOWERED)
    return env


def render(template: str, **context: Any) -> Markup:
    """``templates/<template>`` rendered with ``context``."""
    return Markup(environment().get_template(template).render(**context))
