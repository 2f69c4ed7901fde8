"""``bnlab bench --device cuda`` without a GPU, and what its plan covers (the timings themselves need a
GPU: scripts/gpu-check)."""

import math
import subprocess
import sys

import pytest
import torch

from bnlab.bench import cuda


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the run without a GPU")
def test_skipped_cleanly_without_a_gpu():
    run = subprocess.run(
        [sys.executable, "-m", "bnlab", "bench", "--device", "cuda"], check=False, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert (
        run.stdout.strip() == "bnlab bench --device cuda: skipped, no CUDA device (torch.cuda.is_available() is False)"
    )


def test_plan_covers_every_goal_before_the_rest_of_resnet50():
    full, quick = cuda.plan(False), cuda.plan(True)
    bn = [c for c in full if c[0] == "bn" and c[-1] == "resnet50"]
    assert {(c[1][1], c[1][2]) for c in bn} == set(cuda.RESNET50)
    assert {(c[2], c[3]) for c in bn} == {(d, layout) for d in cuda.DTYPES for layout in ("nchw", "channels_last")}
    labels = [c[-1] for c in quick]
    assert "few channels, huge N*L" in labels and "small input" in labels
    assert any(c[0] == "bn" and c[1][0] > 100_000 for c in quick)  # BatchNorm1d with > 100k rows
    assert all(math.prod(c[1]) < 256 * 1024 for c in quick if c[-1] == "small input")
    assert {c[2] for c in quick if c[0] == "fused"} == {"relu", "silu"}


def test_goals_are_not_measured_without_rows():
    assert all(g["met"] is None for g in cuda.goals([]))
