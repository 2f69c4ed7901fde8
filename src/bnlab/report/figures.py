"""Figures for the page: a FigureSpec drawn with matplotlib and embedded as an SVG data URI.

An ``<img src="data:image/svg+xml;base64,...">`` keeps the page one self-contained file, and unlike
inline ``<svg>`` it cannot leak matplotlib's global ``<style>`` into the page or collide on element
ids between figures.
"""

from __future__ import annotations

import base64
import io
import sys
from typing import Any

import matplotlib

from ..experiments.result import FigureSpec

# Glyphs drawn as paths: the page looks the same whatever fonts the reader's machine has.
_SVG_RC = {"svg.fonttype": "path"}


def figure_svg(spec: FigureSpec) -> bytes:
    """Call ``spec.draw(spec.data)`` and return the figure as SVG bytes (the figure is closed)."""
    fig = spec.draw(spec.data)
    if not hasattr(fig, "savefig"):
        raise TypeError(f"expected FigureSpec.draw to return a matplotlib Figure (got {type(fig).__name__})")
    try:
        buf = io.BytesIO()
        with matplotlib.rc_context(_SVG_RC):
            fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
        return buf.getvalue()
    finally:
        _close(fig)


def svg_data_uri(svg: bytes) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")


def _close(fig: Any) -> None:
    # Figures made with pyplot stay registered (and in memory) until closed; pure Figure objects
    # are freed with their last reference.
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
