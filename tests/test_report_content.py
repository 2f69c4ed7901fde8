"""The page's static content: every claim has a question, and the code shown to users runs."""

from __future__ import annotations

import importlib
import re

import pytest

from bnlab.report.content import CLAIMS, backward_from_functional, questions

ALL_IDS = {f"C{i}" for i in range(1, 13)}


def _resolve(dotted: str) -> bool:
    module, _, attr = dotted.rpartition(".")
    obj = importlib.import_module(module.split(".")[0])
    for part in dotted.split(".")[1:]:
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


SNIPPETS = [(q.slug, i, c) for q in questions() for i, c in enumerate(q.code)]


def test_every_claim_is_answered_by_a_question_and_named():
    assert {cid for q in questions() for cid in q.claims} == ALL_IDS == set(CLAIMS)
    slugs = [q.slug for q in questions()]
    assert len(slugs) == len(set(slugs)) and all(re.fullmatch(r"[a-z0-9-]+", s) for s in slugs)


@pytest.mark.parametrize("slug,index,code", SNIPPETS, ids=[f"{s}-{i}" for s, i, _ in SNIPPETS])
def test_code_shown_on_the_page_runs(slug, index, code):
    """Every Python block compiles; a block runs (and its asserts hold) once the bnlab names it
    uses exist -- blocks for layers of later versions are checked when those layers land."""
    assert code.language == "python"
    compiled = compile(code.text, f"<{slug} code {index}>", "exec")
    for name in re.findall(r"\bbnlab(?:\.\w+)+", code.text):
        assert name in code.requires or any(r.startswith(name + ".") for r in code.requires), \
            f"{name} is used but not listed in requires"
    missing = [r for r in code.requires if not _resolve(r)]
    if missing:
        pytest.skip(f"needs {missing}, not in this bnlab yet")
    exec(compiled, {"__name__": f"snippet_{index}"})


def test_most_code_blocks_run_with_this_bnlab():
    runnable = [c for _, _, c in SNIPPETS if all(_resolve(r) for r in c.requires)]
    assert len(runnable) >= len(SNIPPETS) - 1  # only the alternatives block may wait for the variants


def test_backward_is_read_from_functional():
    lead, formulas = backward_from_functional()
    assert lead.startswith("The backward")
    assert [ln.split("=")[0].strip() for ln in formulas.splitlines()] == ["dbias", "dweight", "dx"]
