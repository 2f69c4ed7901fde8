"""Figures for the page: a FigureSpec drawn with matplotlib and embedded as an SVG data URI.

An ``<img src="data:image/svg+xml,...">`` keeps the page one self-contained file, and unlike inline
``<svg>`` it cannot leak matplotlib's global ``<style>`` into the page or collide on element ids
between figures. Every figure is drawn with one set of text sizes (legible at the page's width),
its coordinates rounded to a hundredth of a point, and embedded percent-encoded
rather than in base64 (a third smaller), so a full report stays small enough to keep in git.
"""

from __future__ import annotations

import io
import re
import sys
import urllib.parse
from typing import Any

import matplotlib

from ..experiments.result import FigureSpec

# Glyphs drawn as paths: the page looks the same whatever fonts the reader's machine has. Figures are
# 7-8 inches wide and shown at their natural size (1 pt = 1.33 px), so 9 pt text reads as 12 px.
RC: dict[str, Any] = {
    "svg.fonttype": "path",
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "legend.fontsize": 8.5,
    "legend.title_fontsize": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def figure_svg(spec: FigureSpec) -> bytes:
    """Call ``spec.draw(spec.data)`` and return the figure as compact SVG bytes (the figure is closed)."""
    with matplotlib.rc_context(RC):  # type: ignore[arg-type]  # matplotlib types the keys as literals
        fig = spec.draw(spec.data)
        if not hasattr(fig, "savefig"):
            raise TypeError(f"expected FigureSpec.draw to return a matplotlib Figure (got {type(fig).__name__})")
        try:
            buf = io.BytesIO()
            fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
        finally:
            _close(fig)
    return compact_svg(buf.getvalue())


_LONG = re.compile(r"(?<![\w.])(-?\d+\.\d\d)\d+")  # a number with more than two decimals


def compact_svg(svg: bytes) -> bytes:
    """The SVG without metadata, comments and indentation, its coordinates rounded to 0.01 pt
    (glyph scales kept exact: rounding 0.085 would enlarge a glyph by 6%)."""
    text = svg.decode("utf-8")
    text = re.sub(r"<metadata>.*?</metadata>|<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r">\s+<", "><", text)
    text = re.sub(r"\s*\n\s*", " ", text)
    parts = re.split(r"(scale\([^)]*\))", text)  # odd entries: scale(...), left as they are
    return "".join(p if i % 2 else _LONG.sub(r"\1", p) for i, p in enumerate(parts)).encode("utf-8")


def svg_data_uri(svg: bytes) -> str:
    """The SVG as a percent-encoded data URI (double quotes become single quotes, which SVG allows)."""
    text = svg.decode("utf-8").replace('"', "'")
    return "data:image/svg+xml," + urllib.parse.quote(text, safe=" /:=,;.()-_'!*+")


def _close(fig: Any) -> None:
    # Figures made with pyplot stay registered (and in memory) until closed; pure Figure objects
    # are freed with their last reference.
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
