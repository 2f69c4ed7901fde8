"""The code's checks, as CI runs them: ruff's lint and format check, and mypy, configured in
pyproject.toml (``[tool.ruff]``, ``[tool.mypy]``). The layering contract is tests/test_layers.py.
.pre-commit-config.yaml runs the same before a commit.

Each check runs the tool in a subprocess from the repository root and shows its report on failure.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_finds_nothing_in_src():
    out = _run("ruff", "check", "--no-cache", "src")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_tree_is_formatted_with_ruff():
    out = _run("ruff", "format", "--check", "--no-cache", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_finds_nothing_in_src():
    # mypy keeps its cache in .mypy_cache (git ignores it): about 25 s of CPU on a fresh clone, a few
    # seconds once the cache is warm
    out = _run("mypy")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success: no issues found" in out.stdout
