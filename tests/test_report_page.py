"""The report page: verdicts, missing claims, escaping, self-containedness, numbers, figures."""

from __future__ import annotations

import base64
import html
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from report_fixtures import ALL_IDS, make_result

from bnlab import functional
from bnlab.experiments import ClaimResult, FigureSpec, estimate
from bnlab.report import render_page
from bnlab.report.content import CLAIMS, questions

ENV = {"bnlab": "0.1.0", "torch": "2.13.0", "quick": True, "wall_time_s": 1.0, "date_utc": "2026-01-01T00:00:00+00:00"}


class Tags(HTMLParser):
    """Every start tag with its attributes, and the visible text."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Tags:
    t = Tags()
    t.feed(page)
    return t


@pytest.fixture(scope="module")
def full_page():
    """All twelve claims, C1/C3/C4/C8/C11 with real figures (drawn once for the module)."""
    results = [make_result(cid) for cid in ALL_IDS]
    return results, render_page(results, ENV, {r.id: f"{r.id}.csv" for r in results})


def test_every_claims_verdict_is_on_the_page(full_page):
    results, page = full_page
    tags = parse(page)
    for r in results:
        # the claim's card, with its badge, and its row in the verdict table
        card = re.search(rf'<article class="claim" id="{r.id}">.*?</article>', page, re.S)
        assert card and 'class="badge' in card.group(0) and f">{r.verdict}</span>" in card.group(0)
        assert re.search(rf'href="#{r.id}">{r.id}</a></td>.*?>{r.verdict}</span>', page, re.S)
    ids = [a.get("id") for _, a in tags.tags if a.get("id")]
    assert len(ids) == len(set(ids)), "element ids must be unique"


def test_each_question_is_a_section_with_its_claims(full_page):
    _, page = full_page
    mapping = {q.slug: q.claims for q in questions()}
    assert mapping["what-bn-does"] == ("C1",)
    assert mapping["implementation"] == ("C2",)
    assert mapping["placement"] == ("C4",)
    assert mapping["gamma-beta"] == ("C2",)
    assert mapping["training-speed"] == ("C1", "C3", "C5", "C6", "C7")
    assert mapping["failure-modes"] == ("C8", "C9", "C10", "C11")
    assert mapping["gamma-beta-only"] == ("C12",)
    for q in questions():
        section = re.search(rf'<section class="question" id="{q.slug}">(.*?)</section>', page, re.S).group(1)
        assert html.escape(q.title) in section
        for cid in q.claims:
            assert f'href="#{cid}"' in section or f'id="{cid}"' in section


def test_claim_of_two_questions_is_shown_in_full_once(full_page):
    results, page = full_page
    assert page.count('id="C1"') == 1 and page.count('id="C2"') == 1
    n_figures = sum(len(r.figures) for r in results)
    assert page.count("<img ") == n_figures == 6


def test_missing_claims_show_as_not_run():
    present = [make_result(cid, figures=False) for cid in ("C2", "C4")]
    page = render_page(present, ENV)
    for cid in set(ALL_IDS) - {"C2", "C4"}:
        card = re.search(rf'<article class="claim missing" id="{cid}">.*?</article>', page, re.S)
        assert card and ">not run</span>" in card.group(0), cid
        assert html.escape(CLAIMS[cid][0]) in card.group(0)
    assert "0 reproduced · 1 not reproduced · 1 inconclusive · 10 not run" in page


def test_page_renders_with_no_results_at_all():
    page = render_page([], {})
    assert page.count(">not run</span>") >= 2 * len(ALL_IDS)  # the table and each claim's card


def test_page_is_self_contained(full_page):
    _, page = full_page
    tags = parse(page)
    for tag, attrs in tags.tags:
        for name in ("src", "href", "srcset", "data", "action", "poster"):
            value = attrs.get(name)
            if value is None:
                continue
            assert not re.match(r"\s*(https?:)?//", value, re.I), f"<{tag} {name}={value[:60]}> is external"
            if name == "src":
                assert value.startswith("data:"), f"<{tag} src> must be inline data"
        assert tag not in ("script", "link", "iframe", "object", "embed"), f"<{tag}> in the page"
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page), "CSS must not load anything"
    assert "@import" not in page


def test_text_from_results_is_escaped():
    evil = '<script>alert("x")</script>'
    r = make_result("C3", figures=False)
    r.summary = f"summary {evil} & more"
    r.claim = f'claim "{evil}"'
    r.source = "<b>source</b>"
    r.numbers = {f"key {evil}": f"value {evil}", "est <i>": estimate(0.5, (0.4, 0.6), n=3)}
    r.setup = {"note": evil}
    page = render_page([r], {"bnlab": evil, "git_revision": evil}, {"C3": 'a"b<c>.csv'})
    assert "<script" not in page and "<b>source" not in page and "<i>" not in page
    assert html.escape(evil) in page
    assert 'href="a&quot;b&lt;c&gt;.csv"' in page
    tags = parse(page)
    assert evil in "".join(tags.text)  # the reader sees the text as written


def test_numbers_with_confidence_intervals_are_printed():
    r = make_result("C4", figures=False)
    r.numbers = {"difference": estimate(0.01234, (-0.5, 0.75), n=10), "p": 0.5, "nan": float("nan"),
                 "per lr": {"0.1": 0.9, "1.0": None}, "curve": list(range(20))}
    page = render_page([r], ENV)
    assert "0.01234</span>" in page and "(95% CI -0.5 – 0.75, n = 10)" in page
    assert "<td>n/a</td>" in page and "1.0: n/a" in page
    assert "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, …]" in page


def test_backward_is_the_one_stated_in_functional():
    page = render_page([], ENV)
    # an independent reading of the docstring: the indented lines that assign dx, dweight, dbias
    lines = [ln.strip() for ln in functional.__doc__.splitlines() if re.match(r"\s+d(x|weight|bias)\s+=", ln)]
    assert len(lines) == 3
    for line in lines:
        assert html.escape(line) in page


def test_figures_are_svg_images_of_what_draw_returned(full_page):
    results, page = full_page
    srcs = [a["src"] for t, a in parse(page).tags if t == "img"]
    for src in srcs:
        assert src.startswith("data:image/svg+xml;base64,")
        root = ET.fromstring(base64.b64decode(src.split(",", 1)[1]))
        assert root.tag.endswith("svg") and float(root.get("width").rstrip("pt")) > 0
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page, re.S)
    assert any("Mean over 3 seeds" in c for c in captions)


def test_a_figure_that_fails_to_draw_shows_its_error(capsys):
    def broken(data):
        raise KeyError("no such series")

    r = make_result("C8", figures=False)
    r.figures = [FigureSpec("curve", "Error vs batch size", {}, broken)]
    page = render_page([r], ENV)
    assert "could not be drawn" in page and "no such series" in page
    assert "C8/curve" in capsys.readouterr().err


def test_two_results_for_one_claim_are_rejected():
    with pytest.raises(ValueError, match="one result per claim"):
        render_page([make_result("C1", figures=False), make_result("C1", figures=False)], ENV)
    with pytest.raises(TypeError, match="expected ClaimResult"):
        render_page([{"id": "C1"}], ENV)


def test_result_of_an_unknown_claim_is_kept_in_other_results():
    r = make_result("C1", figures=False)
    extra = ClaimResult(**{**r.__dict__, "id": "X1", "name": "extra-claim"})
    page = render_page([r, extra], ENV)
    assert re.search(r'<section class="question" id="other">.*id="X1"', page, re.S)
