"""bnlab's Triton kernels compile for a GPU (sm_90) without one: tests/triton_aot.py in a process
without TRITON_INTERPRET. The interpreter runs Python semantics, so this is the check that the
same source also passes the GPU compiler."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="needs triton (pip install 'bnlab[gpu]')")

SCRIPT = Path(__file__).with_name("triton_aot.py")


def _run(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, str(SCRIPT), *args], check=False, env=env, capture_output=True, text=True, timeout=1800
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def test_one_variant_of_every_kernel_compiles_for_sm90():
    assert "compiled 19 variants" in _run()


@pytest.mark.slow
def test_every_kernel_variant_compiles_for_sm90():
    assert "compiled" in _run("--all")
