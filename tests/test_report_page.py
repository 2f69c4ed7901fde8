"""The report page: answers first, readable evidence, a quick run that says so, the tested code,
verdicts, missing claims, escaping, self-containedness, figures."""

from __future__ import annotations

import html
import inspect
import re
import urllib.parse
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from report_fixtures import make_result

from bnlab import functional, scratch
from bnlab.experiments import ClaimResult, FigureSpec, estimate, text
from bnlab.report import render_page
from bnlab.report.answers import Evidence
from bnlab.report.catalogue import claims
from bnlab.report.content import QUESTIONS
from bnlab.report.from_scratch import pitfalls

ENV = {"bnlab": "0.1.0", "torch": "2.13.0", "quick": False, "wall_time_s": 1.0, "date_utc": "2026-01-01T00:00:00+00:00"}
QUICK_ENV = {**ENV, "quick": True}


class Page(HTMLParser):
    """Start tags with their attributes, and the text a reader sees: everything outside <code>,
    <pre>, <style> and <title>, folded <details> included."""

    SKIP = {"code", "pre", "style", "title", "script"}

    def __init__(self, page: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self._skip = 0
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._skip += tag in self.SKIP

    def handle_endtag(self, tag):
        self._skip -= tag in self.SKIP

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)

    @property
    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


def section(page: str, ident: str) -> str:
    m = re.search(rf'<section class="[^"]*" id="{ident}">(.*?)</section>', page, re.S)
    assert m, f"no section {ident}"
    return m.group(1)


def plain(fragment: str) -> str:
    return Page(fragment).visible


@pytest.fixture(scope="module")
def full_page(lab, demos):
    return render_page(lab, ENV, {r.id: f"{r.id}.csv" for r in lab}, demos)


@pytest.fixture(scope="module")
def quick_page(lab, demos):
    return render_page(lab, QUICK_ENV, {}, demos)


# --- answers first ----------------------------------------------------------------------------------


def test_the_short_answers_come_right_under_the_title(full_page):
    order = [a["id"] for t, a in Page(full_page).tags if t == "section"]
    assert order[0] == "answers"
    assert full_page.index('id="answers"') < full_page.index('id="verdicts"') < full_page.index('id="what-bn-does"')


def test_every_question_is_answered_in_at_most_three_sentences_with_a_link_to_its_section(full_page):
    answers = section(full_page, "answers")
    for q in QUESTIONS:
        item = re.search(rf'<li class="qa" id="answer-{q.slug}">(.*?)</ul></li>', answers, re.S)
        assert item, q.slug
        assert f'href="#{q.slug}"' in item.group(1)
        short = plain(re.search(r'<p class="short">(.*?)</p>', item.group(1), re.S).group(1))
        sentences = [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z`])", short) if s]
        assert 1 <= len(sentences) <= 3, (q.slug, sentences)
        assert f'id="{q.slug}"' in full_page  # the section with the evidence


def test_answers_quote_this_runs_numbers(lab, full_page):
    by_id = {r.id: r for r in lab}
    answers = plain(section(full_page, "answers"))
    c4 = by_id["C4"].numbers
    assert f"ReLU {text.interval(c4['relu_after_minus_before'], 'points')}" in answers
    c5 = by_id["C5"].numbers["test_acc"]
    assert text.interval(c5["bn"], "%") in answers and text.interval(c5["none"], "%") in answers
    c8 = by_id["C8"].numbers["bn_error"]
    assert text.interval(c8["2"], "%") in answers
    assert answers.count("This run") >= len(QUESTIONS) - 1 and "smoke test" not in answers


def test_a_quick_runs_answers_say_they_come_from_a_smoke_test(quick_page):
    answers = plain(section(quick_page, "answers"))
    assert "This run" not in answers
    assert answers.count("This smoke test (not evidence)") >= len(QUESTIONS) - 1


def test_answers_still_read_when_experiments_did_not_run():
    ev = Evidence({}, {}, quick=False)
    for q in QUESTIONS:
        a = q.answer(ev)
        assert a.text and "n/a" not in a.text and "This run:" not in a.text, q.slug
    page = render_page([make_result("C4", figures=False)], ENV, demos={})  # numbers of another shape
    assert 'id="answers"' in page


def test_adding_a_question_is_one_entry(monkeypatch, lab):
    from bnlab.report import answers, content

    extra = content.Question(
        "new-data",
        "My model does worse on new data: can batch norm help?",
        ("C11",),
        lambda ev: answers.Answer("Recompute the statistics.", (("#C11", "C11"),)),
    )
    monkeypatch.setattr(content, "QUESTIONS", content.QUESTIONS + (extra,))
    page = render_page(lab, ENV, demos={})
    assert 'id="answer-new-data"' in page and 'id="new-data"' in page
    assert "Recompute the statistics." in plain(section(page, "answers"))


# --- a quick run says so --------------------------------------------------------------------------


def test_a_quick_page_is_marked_a_smoke_test_and_its_verdicts_muted(quick_page, full_page):
    top = quick_page[: quick_page.index('id="answers"')]
    assert 'class="notice"' in top and "Smoke test, not evidence" in top
    assert '<body class="quick">' in quick_page
    assert "finding" not in plain(re.search(r'<p class="lede">(.*?)</p>', quick_page, re.S).group(1))
    assert 'class="notice"' not in full_page and '<body class="full">' in full_page


# --- readable evidence ----------------------------------------------------------------------------


def test_no_internal_key_appears_in_the_text_a_reader_sees(lab, full_page, quick_page):
    for page in (full_page, quick_page):
        seen = Page(page).visible
        snake = sorted(set(re.findall(r"\b[a-z][a-z0-9]*_[a-z0-9_]+\b", seen)))
        assert not snake, f"internal keys in the visible text: {snake[:20]}"
        for r in lab:
            for key in r.numbers:
                if "_" in key or "/" in key:
                    assert key not in seen, (r.id, key)
        for word in ("p_t", "p_sign", "wins:", "losses:", "ci95"):
            assert word not in seen


def test_each_card_opens_with_what_was_found_and_folds_the_statistics(lab, full_page):
    for r in lab:
        card = re.search(rf'<article class="claim" id="{r.id}">(.*?)</article>', full_page, re.S).group(1)
        after_header = card.split("</header>", 1)[1].lstrip()
        assert after_header.startswith('<p class="finding') and html.escape(r.finding) in after_header
        folded = re.search(r"<details class=\"more\">(.*?)</details>", card, re.S).group(1)
        assert html.escape(r.rule) in folded and "Verdict rule" in folded
        assert "paired t-test p" not in card.split("<details", 1)[0]  # the tests are folded away
        assert '<table class="numbers setup">' in folded and "{" not in plain(folded)  # setup: a table, no JSON


def test_accuracies_are_percentages_and_tight_intervals_are_not_flagged(lab, full_page):
    c12 = next(r for r in lab if r.id == "C12")
    card = re.search(r'<article class="claim" id="C12">(.*?)</article>', full_page, re.S).group(1)
    assert text.interval(c12.numbers["test_acc_all"], "%") in html.unescape(card)
    two_seeds = estimate(0.592, (-0.45, 1.634), n=2)
    r = make_result("C3", figures=False)
    r.numbers = {"acc": two_seeds}
    r.labels = {"acc": c12.labels["test_acc_all"]}
    page = render_page([r], ENV, demos={})
    assert "59.2% [0.0, 100.0]" in page and "2 seeds: too few for the interval to mean much" in page


# --- the sections ---------------------------------------------------------------------------------


def test_the_from_scratch_code_on_the_page_is_the_tested_module(full_page):
    code = re.search(
        r'<div class="scratch" id="scratch">.*?<pre class="code">.*?<code>(.*?)</code>', full_page, re.S
    ).group(1)
    assert (
        html.unescape(code).strip()
        == inspect.getsource(scratch)[inspect.getsource(scratch).index("import torch") :].strip()
    )
    assert "class BatchNorm2d(nn.Module)" in html.unescape(code)


def test_every_pitfall_shows_its_measured_demo(demos, full_page):
    raw = re.search(r'<div class="pitfalls" id="pitfalls">(.*?)</div>', full_page, re.S).group(1)
    part = plain(raw)
    fe, mo = demos["pitfalls"]["forget_eval"], demos["pitfalls"]["momentum"]
    assert text.number(fe["train_mode_batch_4"], "%") in part
    assert (
        text.number(mo["converted_one_epoch"], "%") in part
        and "<code>bnlab.surgery.conventions.decay_to_momentum(0.99)</code>" in raw
    )
    for anchor, title, found, fix in pitfalls(demos):
        assert found and fix and f'id="pitfall-{anchor}"' in full_page
    assert part.count("Fix:") == 5


def test_internal_covariate_shift_is_explained_with_c1_c5_c6_side_by_side(full_page):
    ics = re.search(r'<div class="ics" id="ics">(.*?)</div>', full_page, re.S).group(1)
    rows = re.findall(r'<tr><td><a href="#(C\d+)">', ics)
    assert rows[:4] == ["C1", "C1", "C5", "C6"]  # C1's judged drift, then its batch drift as context
    batch_row = re.findall(r"<tr>.*?</tr>", ics, re.S)[2]
    assert "own training batch" in batch_row and "not judged" in batch_row
    words = plain(ics)
    for part in (
        "The term.",
        "The claim (Ioffe & Szegedy 2015).",
        "The objection (Santurkar et al. 2018).",
        "What to believe.",
    ):
        assert part in words


def test_the_two_figures_to_look_at_first_are_drawn(full_page):
    look = section(full_page, "look")
    assert 'id="fig-headline"' in look and 'id="fig-diagnostics"' in look
    assert "could not be drawn" not in look


def test_every_claims_verdict_is_on_the_page(lab, full_page):
    for r in lab:
        card = re.search(rf'<article class="claim" id="{r.id}">.*?</article>', full_page, re.S)
        assert card and f">{r.verdict}</span>" in card.group(0)
        assert re.search(rf'href="#{r.id}">{r.id}</a></td>.*?>{r.verdict}</span>', full_page, re.S)
    ids = [a.get("id") for _, a in Page(full_page).tags if a.get("id")]
    assert len(ids) == len(set(ids)), "element ids must be unique"


def test_claim_of_two_questions_is_shown_in_full_once(lab, full_page):
    assert full_page.count('id="C1"') == 1 and full_page.count('id="C2"') == 1
    assert full_page.count("<img ") == sum(len(r.figures) for r in lab) + 2  # + the two figures to look at first


def test_titles_come_from_the_experiment_modules():
    for cid, info in claims().items():
        assert info.title and info.source and info.question and info.rule


def test_missing_claims_show_as_not_run():
    present = [make_result("C2", figures=False), make_result("C4", figures=False)]
    page = render_page(present, ENV, demos={})
    for cid in set(claims()) - {"C2", "C4"}:
        card = re.search(rf'<article class="claim missing" id="{cid}">.*?</article>', page, re.S)
        assert card and ">not run</span>" in card.group(0), cid
        assert html.escape(claims()[cid].title) in card.group(0)
    assert f"0 reproduced · 1 not reproduced · 1 inconclusive · {len(claims()) - 2} not run" in page


def test_page_renders_with_no_results_at_all():
    page = render_page([], {})
    assert page.count(">not run</span>") >= 2 * len(claims())  # the table and each claim's card
    assert "Not measured in this report." in page  # the pitfalls without their demos


def test_page_is_self_contained(full_page):
    for tag, attrs in Page(full_page).tags:
        for name in ("src", "href", "srcset", "data", "action", "poster"):
            value = attrs.get(name)
            if value is None:
                continue
            assert not re.match(r"\s*(https?:)?//", value, re.I), f"<{tag} {name}={value[:60]}> is external"
            if name == "src":
                assert value.startswith("data:"), f"<{tag} src> must be inline data"
        assert tag not in ("script", "link", "iframe", "object", "embed"), f"<{tag}> in the page"
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", full_page), "CSS must not load anything"
    assert "@import" not in full_page


def test_text_from_results_is_escaped():
    evil = '<script>alert("x")</script>'
    r = make_result("C3", figures=False)
    r.summary = f"summary {evil} & more"
    r.finding = f"found {evil}"
    r.claim = f'claim "{evil}"'
    r.source = "<b>source</b>"
    r.numbers = {f"key {evil}": f"value {evil}", "est <i>": estimate(0.5, (0.4, 0.6), n=3)}
    r.setup = {"note": evil}
    page = render_page([r], {"bnlab": evil, "git_revision": evil}, {"C3": 'a"b<c>.csv'}, demos={})
    assert "<script" not in page and "<b>source" not in page and "<i>" not in page
    assert html.escape(evil) in page
    assert 'href="a&quot;b&lt;c&gt;.csv"' in page
    assert evil in "".join(Page(page).text)  # the reader sees the text as written


def test_backward_is_the_one_stated_in_functional():
    page = render_page([], ENV, demos={})
    # an independent reading of the docstring: the indented lines that assign dx, dweight, dbias
    lines = [ln.strip() for ln in functional.__doc__.splitlines() if re.match(r"\s+d(x|weight|bias)\s+=", ln)]
    assert len(lines) == 3
    for line in lines:
        assert html.escape(line) in page


def test_figures_are_svg_images_of_what_draw_returned(full_page):
    srcs = [a["src"] for t, a in Page(full_page).tags if t == "img"]
    assert srcs
    for src in srcs:
        assert src.startswith("data:image/svg+xml,")
        root = ET.fromstring(urllib.parse.unquote(src.split(",", 1)[1]))
        assert root.tag.endswith("svg") and float(root.get("width").rstrip("pt")) > 0


def test_a_figure_that_fails_to_draw_shows_its_error(capsys):
    def broken(data):
        raise KeyError("no such series")

    r = make_result("C8", figures=False)
    r.figures = [FigureSpec("curve", "Error vs batch size", {}, broken)]
    page = render_page([r], ENV, demos={})
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
    page = render_page([r, extra], ENV, demos={})
    assert re.search(r'<section class="question" id="other">.*id="X1"', page, re.S)


def test_a_target_never_reached_is_said_in_words():
    from bnlab.report import answers

    r = make_result("C1", figures=False)
    r.numbers = {
        "target_acc": 0.5,
        "steps_to_target_bn": estimate(1420, (1320, 1520), n=5),
        "steps_to_target_none": estimate(3100, (3100, 3100), n=5),
    }  # every seed capped at the end
    r.setup = {"steps": 3000, "seeds": [0]}
    a = answers.what_bn_does(Evidence({"C1": r}, {}, quick=False))
    assert "reached 50% in 1420 steps [1320, 1520] with BN and never in 3000 steps without (C1)" in a.text


def _part(key, verdict, share):
    from bnlab.experiments.spec import PartResult
    from bnlab.experiments.stability import Stability

    stab = Stability(verdict, share, 8, 500, {verdict: int(500 * share)}, "fake")
    return PartResult(key, key, "-", None, verdict, stab)


def test_an_answer_badges_the_part_its_sentence_rests_on_not_the_whole_claim():
    # C5's claim (noisy BN) is not reproduced, but the sentence quotes its BN vs no BN part, which is reproduced
    from bnlab.experiments.stability import Stability
    from bnlab.report import answers
    from bnlab.report.content import QUESTIONS
    from bnlab.report.render import answer_html

    c5 = make_result("C5", figures=False)
    c5.verdict = c5.rule_verdict = "not reproduced"
    c5.stability = Stability("not reproduced", 1.0, 8, 500, {"not reproduced": 500}, "fake")
    c5.numbers = {"test_acc": {"bn": estimate(0.95, (0.94, 0.96), n=8), "none": estimate(0.92, (0.91, 0.93), n=8)}}
    c5.parts = [_part("harmless", "not reproduced", 1.0), _part("bn-beats-none", "reproduced", 1.0)]
    c1 = make_result("C1", figures=False)
    c1.numbers = {
        "target_acc": 0.5,
        "steps_to_target_bn": estimate(1420, (1320, 1520), n=5),
        "steps_to_target_none": estimate(3100, (3100, 3100), n=5),
    }
    c1.setup = {"steps": 3000, "seeds": [0]}
    c1.parts = [_part("faster", "reproduced", 1.0), _part("steadier", "underpowered", 0.46)]
    c1.parts[1].stability = Stability("inconclusive", 0.46, 5, 500, {"inconclusive": 230}, "fake")
    ev = Evidence({"C5": c5, "C1": c1}, {}, quick=False)
    a = answers.what_bn_does(ev)
    assert "(BN beat no BN, C5: reproduced, 100% of resamples)" in a.text
    assert "(BN trained faster, C1: reproduced, 100% of resamples)" in a.text
    (q,) = [q for q in QUESTIONS if q.answer is answers.what_bn_does]
    links = re.findall(r"<li><a href=\"#(C\d+)\">([^<]*)</a>(.*?)</li>", answer_html(q, ev))
    c5_link = [m for cid, label, m in links if cid == "C5"]
    assert c5_link and "reproduced" in c5_link[0] and "not reproduced" not in c5_link[0]
    # the open part is said to be open where a sentence rests on it
    assert ev.said("C1", "steadier", "steadier") == "steadier: not settled (underpowered, 46% of resamples)"


def test_a_card_shows_each_part_its_margin_the_rule_version_and_the_rounds():
    from bnlab.report.cards import claim_card

    r = make_result("C1", figures=False)
    r.parts = [_part("faster", "reproduced", 1.0), _part("steadier", "not reproduced", 0.97)]
    r.parts[1].margin = {"size": 0.1, "unit": "", "why": "a tenth of the spread", "reads": "0.1 of the band's width"}
    r.rule_version = "2026-12-06"
    r.rule_history = [
        {"replaced": "2026-12-06", "rule": "the old rule", "reason": "it could not settle zero"},
        {"replaced": "2026-12-01", "rule": "an older rule", "reason": "a reason that ends its own sentence (0.3)."},
    ]
    r.rounds = {"rounds": 3, "seeds": 13, "plan": [5, 9, 13], "stopped": "cap"}
    card = plain(claim_card(r, None, None))
    assert "Why: it could not settle zero. It replaced, on 2026-12-01" in card
    assert "ends its own sentence (0.3)." in card and ".." not in card  # one full stop, whoever wrote it
    assert "Judged by part" in card and "faster" in card and "steadier" in card
    assert "Margin 0.1 of the band's width: a tenth of the spread" in card
    assert "judged by the rule of 2026-12-06" in card and "the old rule" in card and "could not settle zero" in card
    assert "13 seeds per setting in 3 round(s) of the plan 5, 9, 13" in card and "cap fixed in advance" in card


def test_the_verdict_table_shows_each_part_and_the_rounds():
    from bnlab.report.render import verdict_table

    r = make_result("C1", figures=False)
    r.parts = [_part("faster", "reproduced", 1.0), _part("steadier", "not reproduced", 0.97)]
    r.rounds = {"rounds": 2, "seeds": 9, "plan": [5, 9, 13], "stopped": "settled"}
    table = plain(verdict_table({"C1": r}, claims()))
    assert "faster: reproduced" in table and "steadier: not reproduced" in table
    assert "9 seeds in 2 round(s)" in table


def test_the_ics_reading_rests_on_c1s_steadier_part_not_on_the_whole_claim():
    from bnlab.experiments.stability import Stability
    from bnlab.report import ics

    c1 = make_result("C1", figures=False)
    c1.verdict, c1.rule_verdict = "underpowered", "inconclusive"
    c1.stability = Stability("inconclusive", 0.5, 9, 500, {"inconclusive": 250}, "fake")
    c1.numbers = {"drift_bn_minus_none": {"diff": estimate(0.01, (-0.05, 0.07), n=9), "p_t": 0.7}}
    c1.parts = [_part("faster", "reproduced", 1.0), _part("steadier", "not reproduced", 0.96)]
    ev = Evidence({"C1": c1}, {}, quick=False)
    assert ev.settled("C1", "steadier") and not ev.settled("C1")
    (said,) = ics.readings(ev)
    assert "(C1)" in said and "underpowered" not in said
    c1.parts[1].stability = Stability("not reproduced", 0.6, 9, 500, {"not reproduced": 300}, "fake")
    (said,) = ics.readings(ev)
    assert "underpowered" in said
