"""The report's markup lives in Jinja2 templates (bnlab/report/templates/): every value they print is
escaped, a name nobody passed is an error, the stylesheet is style.css inlined, and the only value
marked safe without escaping is a figure's data URI, made in one place."""

from __future__ import annotations

import ast
import importlib.resources
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import pytest

from bnlab.experiments.result import FigureSpec, Label
from bnlab.experiments.spec import PartResult
from bnlab.experiments.stability import Stability
from bnlab.report import markup, render_page
from report_fixtures import make_result

EVIL = "<evil a='1'>\"&"  # a tag if it reached the page unescaped; text a reader sees if escaped


class Parsed(HTMLParser):
    """The page as a browser's parser reads it: its tags, and its text with entities decoded."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attrs: list[str] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attrs += [v or "" for _, v in attrs]

    def handle_data(self, data):
        self.text.append(data)


def draw_nothing(data):
    from matplotlib.figure import Figure

    return Figure(figsize=(1, 1))


def hostile_result():
    """A result with EVIL in every text the page shows of it."""
    r = make_result("C3", figures=False)
    stab = Stability(f"v{EVIL}", 0.5, 4, 100, {f"o{EVIL}": 50, "other": 50}, f"m{EVIL}", note=f"n{EVIL}")
    part = PartResult("p", f"t{EVIL}", f"r{EVIL}", {"size": 1.0, "reads": f"s{EVIL}", "why": f"w{EVIL}"}, "x", stab)
    r.title, r.claim, r.source, r.rule = (f"{k}{EVIL}" for k in ("title", "claim", "source", "rule"))
    r.summary, r.finding, r.rule_version = f"summary{EVIL}", f"finding{EVIL}", f"version{EVIL}"
    r.rule_history = [{"replaced": f"when{EVIL}", "rule": f"old{EVIL}", "reason": f"why{EVIL}"}]
    r.setup = {f"key{EVIL}": f"spec_{EVIL}", "nested": {f"k{EVIL}": [f"v{EVIL}", True]}}
    r.numbers = {f"n{EVIL}": f"value{EVIL}", "labelled": 0.5, "listed": [f"item{EVIL}"]}
    r.labels = {"labelled": Label(f"label{EVIL}", "%")}
    r.stability, r.parts = stab, [part]
    r.rounds = {"seeds": 4, "rounds": 2, "plan": [2, 4], "stopped": "cap"}
    r.figures = [FigureSpec("f", f"fig{EVIL}", {}, draw_nothing, f"caption{EVIL}")]
    return r


def test_every_value_the_templates_print_is_escaped():
    r = hostile_result()
    env = {"bnlab": EVIL, "cpu": EVIL, "git_revision": EVIL, f"key{EVIL}": EVIL, "seeds": {"requested": EVIL}}
    page = render_page([r], env, {"C3": f"runs{EVIL}.csv"}, demos={})
    parsed = Parsed(page)
    assert "evil" not in parsed.tags  # no value became markup
    text = "".join(parsed.text)
    for shown in ("title", "claim", "source", "rule", "summary", "finding", "version", "when", "old", "why"):
        assert f"{shown}{EVIL}" in text, shown
    for shown in ("spec_", "label", "fig", "caption", "value", "item", "t", "r", "s", "w", "m", "n"):
        assert f"{shown}{EVIL}" in text, shown
    assert f"runs{EVIL}.csv" in parsed.attrs  # the link's href, decoded as the browser decodes it


def test_a_name_no_one_passed_is_an_error_not_an_empty_string():
    with pytest.raises(jinja2.UndefinedError):
        markup.render("card.html")
    with pytest.raises(jinja2.UndefinedError):
        markup.render("header.html", quick=False)  # no meta


def test_autoescaping_is_on_and_spells_entities_as_html_escape_does():
    env = markup.environment()
    assert env.autoescape is True
    out = env.from_string("{{ v }}|{{ v|inline }}").render(v="a'b\"<`c`>&")
    assert out == "a&#x27;b&quot;&lt;`c`&gt;&amp;|a&#x27;b&quot;&lt;<code>c</code>&gt;&amp;"


def test_the_stylesheet_is_style_css_inlined():
    css = (importlib.resources.files("bnlab.report") / "templates" / "style.css").read_text(encoding="utf-8")
    page = render_page([], {"quick": False}, demos={})
    assert f"<style>\n{css}</style>" in page


def test_a_figure_is_an_image_of_its_data_uri_unescaped():
    spec = FigureSpec("f", "t", {}, draw_nothing, "")
    fig = markup.figure(spec, "C1")
    page = markup.render("look.html", figures=[fig])
    assert f'<img src="{fig["uri"]}"' in page and "'" in fig["uri"]  # its quotes not turned into entities
    assert not set(fig["uri"]) & set('"<>&')  # nothing in it could end the attribute or open a tag


def test_only_markup_py_marks_anything_safe():
    root = Path(markup.__file__).parent
    for path in root.glob("*.py"):
        calls = [
            node
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Markup"
        ]
        assert path.name == "markup.py" or not calls, f"{path.name} builds Markup: leave that to markup.py"


def test_every_template_is_package_data():
    import tomllib

    patterns = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["bnlab"]
    root = Path(markup.__file__).parents[1]
    templates = sorted((root / "report" / "templates").iterdir())
    assert templates
    for path in templates:
        assert any(path.relative_to(root).match(p) for p in patterns), path.name
