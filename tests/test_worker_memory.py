"""Sweep workers keep their freed memory: under Dask's nanny setting (MALLOC_TRIM_THRESHOLD_=65536,
which also freezes glibc's mmap threshold at 128 KiB) every large tensor of a training step was mapped
and faulted in afresh. Counted in page faults, not timed: a fresh interpreter with the nanny's
environment allocates and fills a 4 MiB tensor 200 times, with and without the worker's fix."""

import os
import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, torch
if sys.argv[1] == "fixed":
    from bnlab.train import cluster
    cluster._keep_freed_memory()
torch.ones(1 << 20).sum()  # warm up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    x = torch.empty(1 << 20)  # 4 MiB
    x.fill_(1.0)
    del x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode):
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc (mallopt) on Linux")
def test_a_worker_does_not_refault_large_blocks_under_the_nannys_setting():
    plain, fixed = _faults("plain"), _faults("fixed")
    assert plain > 100_000  # 200 x 1024 pages: the nanny's setting maps every block afresh
    assert fixed < 10_000, (plain, fixed)
