"""The report in a real browser: headless Chromium loads index.html without console errors or any
network request, every figure has a size, every verdict is visible; a screenshot is saved to
test-artifacts/report.png for people to look at."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from browser import Chromium, find_chromium
from report_fixtures import ALL_IDS, make_result

from bnlab.report import collect_environment, write_report

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="Chromium is not installed (Debian: apt-get install chromium; scripts/test installs it when run as root)")


def test_report_loads_in_chromium_with_figures_and_every_verdict(tmp_path):
    pytest.importorskip("websocket", reason="websocket-client (the test extra) is not installed")
    results = [make_result(cid) for cid in ALL_IDS if cid != "C5"]  # C5 missing: shown as not run
    env = collect_environment(quick=True, jobs=2, seeds=None, wall_time_s=42.0,
                              claim_seeds={r.id: r.setup["seeds"] for r in results})
    index = write_report(results, tmp_path / "report", env)

    with Chromium(width=1100, height=900) as page:
        page.load(index.as_uri())
        figures = page.evaluate("""[...document.querySelectorAll('figure.fig img')].map(img => {
            const r = img.getBoundingClientRect();
            return {complete: img.complete, natural: img.naturalWidth, width: r.width, height: r.height};
        })""")
        cards = page.evaluate("""Object.fromEntries([...document.querySelectorAll('article.claim[id]')].map(
            a => [a.id, a.querySelector('header .badge').innerText]))""")
        table = page.evaluate("""[...document.querySelectorAll('.verdict-table tbody tr')].map(
            tr => [tr.cells[0].innerText, tr.cells[2].innerText])""")
        overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
        page.screenshot(ARTIFACTS / "report.png")
        errors, requests = page.errors(), page.requests

    assert errors == [], f"console errors: {json.dumps(errors)[:500]}"
    external = [u for u in requests if not u.startswith(("file:", "data:", "about:"))]
    assert external == [], f"the page made network requests: {external}"
    assert len(figures) == sum(len(r.figures) for r in results) == 6
    for fig in figures:
        assert fig["complete"] and fig["natural"] > 0 and fig["width"] > 100 and fig["height"] > 50, fig
    want = {r.id: r.verdict for r in results} | {"C5": "not run"}
    assert cards == want
    assert dict(table) == want
    assert not overflow, "the page scrolls sideways at 1100 px"
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
