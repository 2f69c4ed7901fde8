"""Every Python snippet of the README and of the documentation site runs: the ```python blocks of
README.md and docs/**/*.md, in order, each file's blocks in one namespace (as a reader pastes them
one after another into one session).

The snippets use names a reader has of their own (``model``, ``x``, ``loader``): EXAMPLE_NAMES
defines them, small and fast, before each block, as doctest's ``globs`` do. A block that
truly cannot run here (it needs a cluster, a GPU, a file of the reader's) is marked by the line
``<!-- snippet: not-run (REASON) -->`` just before it; the test lists those marks, so that they stay few.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"(?P<mark><!-- snippet: not-run \((?P<why>[^)]+)\) -->\n)?```python\n(?P<code>.*?)```", re.S)
MAX_NOT_RUN = 3  # a budget for the marks: raise it only with a reason

EXAMPLE_NAMES = """
import torch

torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10),
)
x = torch.randn(16, 3, 12, 12)
x_batch = torch.randn(32, 3, 12, 12) * 2 + 0.5
loader = [(torch.randn(8, 3, 12, 12), torch.randint(0, 10, (8,))) for _ in range(4)]  # (inputs, labels)
target_loader = [torch.randn(32, 3, 12, 12) * 2 + 0.5 for _ in range(4)]
criterion = torch.nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
accum_steps = 2
bn = torch.nn.BatchNorm2d(8)
s, b, m, v = (torch.rand(8).numpy() + 0.5 for _ in range(4))
"""


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def snippets(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, code, reason not run or None) of each ```python block of ``path``."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start("code")) + 1, m.group("code"), m.group("why")) for m in FENCE.finditer(text)]


@pytest.mark.parametrize("path", [p for p in documents() if snippets(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_the_python_snippets_of_a_document_run(path, tmp_path, monkeypatch):
    blocks = [b for b in snippets(path) if b[2] is None]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BNLAB_STORE", str(tmp_path / "runs.sqlite"))
    namespace: dict = {"__name__": "snippet"}
    rel = path.relative_to(ROOT)
    for line, code, _ in blocks:
        exec(compile(EXAMPLE_NAMES, "EXAMPLE_NAMES", "exec"), namespace)
        exec(compile("\n" * (line - 1) + code, str(rel), "exec"), namespace)


def test_few_snippets_are_marked_not_run():
    marked = [(p.relative_to(ROOT), line, why) for p in documents() for line, _, why in snippets(p) if why]
    assert len(marked) <= MAX_NOT_RUN, marked


def test_the_collector_finds_the_readmes_snippets_and_honours_the_mark(tmp_path):
    doc = tmp_path / "a.md"
    doc.write_text("```python\na = 1\n```\n<!-- snippet: not-run (needs a cluster) -->\n```python\nb = 2\n```\n")
    assert snippets(doc) == [(2, "a = 1\n", None), (6, "b = 2\n", "needs a cluster")]
    # The README keeps one example; its longer snippets moved to the site's pages, which the same test runs.
    assert len(snippets(ROOT / "README.md")) >= 1
    assert sum(len(snippets(p)) for p in documents()) >= 8
