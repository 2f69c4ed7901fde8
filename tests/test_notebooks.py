"""The tutorials (docs/tutorials/*.ipynb): their stored outputs come from one complete run, and
(marked ``site``: about 40-100 s each on 2 shared cores) they execute from top to bottom without an error. The
from-scratch notebook asserts its layer against torch.nn and that BN reaches 90% sooner; the
new-data one asserts that doctor finds the gap and AdaBN wins back more than half of the error."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.ipynb"))
nbformat = pytest.importorskip("nbformat", reason="the docs extra (nbformat, nbclient) is not installed")


def test_there_are_the_two_tutorials():
    assert [p.name for p in TUTORIALS] == ["from_scratch.ipynb", "new_data.ipynb"]


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_stored_outputs_come_from_one_complete_run(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    # Executed in order, every cell once, in one kernel: counts 1..n (a hand-edited or partly run
    # notebook breaks the sequence), and no cell ended in an error.
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert code[-1].outputs, "the last cell prints the notebook's run time"


@pytest.mark.site
@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_the_notebook_executes_without_error(path, tmp_path, monkeypatch):
    pytest.importorskip("nbclient")
    sys.path.insert(0, str(ROOT / "docs"))
    from run_notebooks import execute

    monkeypatch.setenv("BNLAB_STORE", str(tmp_path / "runs.sqlite"))
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    seconds = execute(copy, write=False)  # raises CellExecutionError on the first failing cell
    print(f"{path.name}: {seconds:.0f} s")
    assert seconds < 300
