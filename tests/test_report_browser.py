"""The report in a real browser, as a reader sees it: headless Chromium loads a quick run's page
(every experiment's real analysis over synthetic runs, and the real demos) without console errors or
network requests; the smoke-test notice and the short answers come first; no internal key is in the
text a reader sees, folded statistics included; every figure is drawn at a legible size; every
verdict is visible. Screenshots go to test-artifacts/ for people to look at: the whole page, the top,
a claim card and every figure."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from browser import Chromium, find_chromium

from bnlab.experiments.stability import describe
from bnlab.report import collect_environment, write_report
from bnlab.report.content import QUESTIONS

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="Chromium is not installed (Debian: apt-get install chromium; scripts/test installs it when run as root)",
)

# The text a reader can see with every <details> opened, code and formulas left out.
VISIBLE_TEXT = """(() => {
  document.querySelectorAll('details').forEach(d => d.open = true);
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (el.closest('code, pre, style, script')) continue;
    if (el.getClientRects().length === 0) continue;
    out.push(n.textContent);
  }
  return out.join(' ').replace(/\\s+/g, ' ');
})()"""


def _shot(page, selector: str, path: Path) -> None:
    rect = page.evaluate(f"""(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();
        return {{x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: Math.min(r.height, 6000)}}; }})()""")
    data = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip={**rect, "scale": 1})
    path.write_bytes(base64.b64decode(data["data"]))


def test_a_reader_sees_the_answers_first_plain_words_and_every_figure(tmp_path, lab, demos):
    pytest.importorskip("websocket", reason="websocket-client (the test extra) is not installed")
    results = [r for r in lab if r.id != "C5"]  # C5 missing: shown as not run
    env = collect_environment(
        quick=True, jobs=2, seeds=None, wall_time_s=42.0, claim_seeds={r.id: r.setup["seeds"] for r in results}
    )
    index = write_report(results, tmp_path / "report", env, demos=demos)
    ARTIFACTS.mkdir(exist_ok=True)

    with Chromium(width=1100, height=900) as page:
        page.load(index.as_uri())
        layout = page.evaluate("""(() => {
            const top = s => document.querySelector(s).getBoundingClientRect().top + scrollY;
            return {notice: top('.notice'), answers: top('#answers'), verdicts: top('#verdicts'),
                    first: document.querySelector('main > section').id,
                    answered: document.querySelectorAll('#answers li.qa').length};
        })()""")
        figures = page.evaluate("""[...document.querySelectorAll('figure.fig img')].map(img => {
            const r = img.getBoundingClientRect();
            return {id: img.closest('figure').id, complete: img.complete, natural: img.naturalWidth,
                    width: r.width, height: r.height};
        })""")
        cards = page.evaluate("""Object.fromEntries([...document.querySelectorAll('article.claim[id]')].map(
            a => [a.id, a.querySelector('header .badge').innerText]))""")
        stabs = page.evaluate("""Object.fromEntries([...document.querySelectorAll('article.claim[id]')].map(
            a => [a.id, (a.querySelector('header .stab') || {innerText: ''}).innerText]))""")
        table = page.evaluate("""[...document.querySelectorAll('.verdict-table tbody tr')].map(
            tr => [tr.cells[0].innerText, tr.cells[2].querySelector('.badge').innerText])""")
        overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
        page.screenshot(ARTIFACTS / "report.png", full_page=False)  # what a reader sees first
        _shot(page, "#answers", ARTIFACTS / "report-answers.png")
        _shot(page, "article.claim#C4", ARTIFACTS / "report-card-C4.png")
        _shot(page, "#ics", ARTIFACTS / "report-ics.png")
        _shot(page, "#pitfalls", ARTIFACTS / "report-pitfalls.png")
        for fig in figures:
            _shot(page, f"#{fig['id']}", ARTIFACTS / f"report-{fig['id']}.png")
        visible = page.evaluate(VISIBLE_TEXT)  # opens every <details>
        page.screenshot(ARTIFACTS / "report-full.png")
        errors, requests = page.errors(), page.requests

    assert errors == [], f"console errors: {json.dumps(errors)[:500]}"
    external = [u for u in requests if not u.startswith(("file:", "data:", "about:"))]
    assert external == [], f"the page made network requests: {external}"
    # the top: the smoke-test notice, then the short answers, then the rest
    assert layout["first"] == "answers" and layout["answered"] == len(QUESTIONS)
    assert layout["notice"] < layout["answers"] < layout["verdicts"]
    assert "Smoke test, not evidence" in visible and visible.count("This smoke test (not evidence)") >= 8
    # plain words: no internal key a program uses, anywhere a reader looks
    import re

    snake = sorted(set(re.findall(r"\b[a-z][a-z0-9]*_[a-z0-9_]+\b", visible)))
    assert not snake, f"internal keys in the visible text: {snake[:20]}"
    for r in results:
        for key in r.numbers:
            assert not ("_" in key and key in visible), (r.id, key)
    # every figure drawn, none shrunk below 80% of its natural size (its text stays legible)
    assert len(figures) == sum(len(r.figures) for r in results) + 2
    for fig in figures:
        assert fig["complete"] and fig["natural"] > 0 and fig["height"] > 50, fig
        assert fig["width"] >= 0.8 * fig["natural"], fig
    want = {r.id: r.verdict for r in results} | {"C5": "not run"}
    assert {k: v.replace(" · smoke test", "") for k, v in cards.items()} == want
    assert {k: v.replace(" · smoke test", "") for k, v in table} == want
    # and next to every verdict, how stable it is, in the words the report uses everywhere
    assert {k: v for k, v in stabs.items() if k in want and k != "C5"} == {
        r.id: describe(r.stability) for r in results if r.id != "C5"
    }
    assert not overflow, "the page scrolls sideways at 1100 px"
    assert (ARTIFACTS / "report-full.png").stat().st_size > 10_000
