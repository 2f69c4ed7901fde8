"""Execute the tutorials (docs/tutorials/*.ipynb) with nbclient: in place, so that every output the
site shows comes from a run (``sh scripts/notebooks``), or on copies (tests/test_notebooks.py).
Any error in a cell fails the run. Prints each notebook's wall time.

    python docs/run_notebooks.py [--check] [NOTEBOOK ...]   # --check: run copies, write nothing
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

TUTORIALS = Path(__file__).resolve().parent / "tutorials"
CELL_TIMEOUT_S = 300


def execute(path: Path, write: bool) -> float:
    """Run every cell of ``path`` in a fresh kernel (cwd: the notebook's folder); seconds taken."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("jupytext", None)
    # The kernel inherits this environment; a non-interactive MPLBACKEND (Agg) would keep the
    # figures out of the notebook.
    backend = os.environ.pop("MPLBACKEND", None)
    started = time.perf_counter()
    try:
        client = NotebookClient(
            nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        )
        client.execute()
    finally:
        if backend is not None:
            os.environ["MPLBACKEND"] = backend
    seconds = time.perf_counter() - started
    if write:
        nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="execute without writing the outputs back")
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    for path in args.notebooks or sorted(TUTORIALS.glob("*.ipynb")):
        seconds = execute(path, write=not args.check)
        print(f"{path.name}: executed in {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
