"""The page's questions: every claim is the evidence of one, and the code shown to users runs."""

from __future__ import annotations

import importlib
import re

import pytest

from bnlab.experiments import registry
from bnlab.report.content import QUESTIONS, backward_from_functional


def _resolve(dotted: str) -> bool:
    module, _, attr = dotted.rpartition(".")
    obj = importlib.import_module(module.split(".")[0])
    for part in dotted.split(".")[1:]:
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


SNIPPETS = [(q.slug, i, c) for q in QUESTIONS for i, c in enumerate(q.code)]


def test_every_claim_is_the_evidence_of_a_question():
    assert {cid for q in QUESTIONS for cid in q.claims} == set(registry.ids())
    slugs = [q.slug for q in QUESTIONS]
    assert len(slugs) == len(set(slugs)) and all(re.fullmatch(r"[a-z0-9-]+", s) for s in slugs)


def test_the_seed_questions_are_asked_in_order():
    slugs = [q.slug for q in QUESTIONS]
    seed = [
        "what-bn-does",
        "pytorch-batchnorm",
        "placement",
        "how-it-works",
        "gamma-beta",
        "implement",
        "layers-ics",
        "failure-modes",
    ]
    assert [s for s in slugs if s in seed] == seed


@pytest.mark.parametrize("slug,index,code", SNIPPETS, ids=[f"{s}-{i}" for s, i, _ in SNIPPETS])
def test_code_shown_on_the_page_runs(slug, index, code):
    """Every Python block compiles; a block runs (and its asserts hold) once the bnlab names it
    uses exist -- blocks for layers of later versions are checked when those layers land."""
    assert code.language == "python"
    compiled = compile(code.text, f"<{slug} code {index}>", "exec")
    for name in re.findall(r"\bbnlab(?:\.\w+)+", code.text):
        assert name in code.requires or any(r.startswith(name + ".") for r in code.requires), (
            f"{name} is used but not listed in requires"
        )
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
