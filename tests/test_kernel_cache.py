"""Where the compiled kernels are cached, and that a second process loads them instead of compiling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bnlab.kernels import cache, numba_cpu


def test_package_folder_is_used_when_writable(tmp_path):
    assert cache.choose_cache_dir(tmp_path / "__pycache__", [tmp_path / "user"]) == str(tmp_path / "__pycache__")


def test_unwritable_package_folder_falls_back_to_a_user_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    unwritable = blocker / "__pycache__"  # cannot be created: its parent is a file
    chosen = cache.choose_cache_dir(unwritable, [blocker / "also_not", tmp_path / "user"])
    assert chosen == str(tmp_path / "user")
    assert cache.is_writable(chosen)


def test_nothing_writable_means_no_disk_cache(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert cache.choose_cache_dir(blocker / "p", [blocker / "u"]) is None


def test_user_cache_dirs_honour_bnlab_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("BNLAB_CACHE_DIR", str(tmp_path))
    assert cache.user_cache_dirs()[0] == tmp_path / "numba"


def test_kernels_are_compiled_with_the_disk_cache():
    assert cache.CACHE_DIR is not None
    assert Path(cache.CACHE_DIR).name == f"kernels-{cache.source_digest()}"
    assert numba_cpu.forward_rows._cache.cache_path  # a real on-disk cache, not the null cache


_CHILD = """
import json, torch
from bnlab.core import dispatch
from bnlab.kernels import numba_cpu
x = torch.randn(2, 3, 4)
with torch.no_grad():
    dispatch.FAST_BACKENDS["cpu"].forward(x, None, None, 1e-5, "identity", 0.0, None)
stats = numba_cpu.forward_rows.stats
print(json.dumps({"hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values())}))
"""


def test_every_process_loads_compiled_code_from_the_cache(tmp_path):
    # The first process finds an empty cache: a child process compiles the kernel into it, and the
    # process loads it from there like the second one (bnlab never runs a kernel compiled in-process).
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True
            ).stdout.splitlines()[-1]
        )
        for _ in range(2)
    ]
    assert runs[0] == {"hits": 1, "misses": 0}
    assert runs[1] == {"hits": 1, "misses": 0}


_BITS = """
import hashlib, torch
torch.set_num_threads(1)
from bnlab.core import dispatch
from bnlab.kernels import numba_cpu
backend = dispatch.FAST_BACKENDS["cpu"]
torch.manual_seed(0)
x, dy = torch.randn(100, 32, 64), torch.randn(100, 32, 64)  # planes of 64: the planes kernels
w, b = torch.rand(32) + 0.5, torch.randn(32)
with torch.no_grad():
    y, mean, var = backend.forward(x, w, b, 1e-5, "identity", 0.0, None)
    grads = backend.backward(dy, x, w, b, mean, var, 1e-5, "identity", 0.0, (True, True, True))
h = hashlib.sha256()
for t in (y, mean, var, *grads):
    h.update(t.numpy().tobytes())
print(h.hexdigest(), len(list(__import__("pathlib").Path(numba_cpu.CACHE_DIR).iterdir())))
"""


def test_results_are_bit_identical_whether_the_kernels_were_just_compiled_or_loaded_from_the_cache(tmp_path):
    # Before the kernels compiled out of process, a process that compiled them got y 2.4e-7 and
    # dweight 7.6e-6 away from a process that loaded them (numba's linked copies of the helpers).
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    cold, warm = (
        subprocess.run(
            [sys.executable, "-c", _BITS], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    )
    assert int(cold[1]) > 0  # the first run filled the empty cache
    assert cold[0] == warm[0]


_BITS_ALL = """
import hashlib, torch
torch.set_num_threads(2)
from bnlab.core import dispatch
backend = dispatch.FAST_BACKENDS["cpu"]
h = hashlib.sha256()
for shape, channels_last in (((100, 32, 64), False), ((100, 32, 40), False), ((8, 32, 16, 16), True)):
    for act in ("identity", "silu"):
        torch.manual_seed(0)
        x, dy = torch.randn(shape) * 2 + 0.5, torch.randn(shape)
        if channels_last:
            x, dy = (t.contiguous(memory_format=torch.channels_last) for t in (x, dy))
        w, b = torch.rand(shape[1]) + 0.5, torch.randn(shape[1])
        with torch.no_grad():
            y, mean, var = backend.forward(x, w, b, 1e-5, act, 0.0, None)
            grads = backend.backward(dy, x, w, b, mean, var, 1e-5, act, 0.0, (True, True, True))
            sums = backend.backward_reduce(dy, x, w, b, mean, var, 1e-5, act, 0.0)
        for t in (y, mean, var, *grads, *sums):
            h.update(t.contiguous().numpy().tobytes())
print(h.hexdigest())
"""


@pytest.mark.slow
def test_parallel_and_fused_kernels_are_bit_identical_compiled_or_cache_loaded(tmp_path):
    # 2 threads: the parallel drivers, whose prange bodies numba always compiles as libraries of
    # their own (inlining the helpers does not cover them); both memory families, plain and SiLU.
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    cold, warm = (
        subprocess.run(
            [sys.executable, "-c", _BITS_ALL], env=env, capture_output=True, text=True, check=True
        ).stdout.split()[-1]
        for _ in range(2)
    )
    assert cold == warm


_CONV = """
import hashlib, json, torch
from bnlab.kernels import numba_conv
from bnlab.train.grouped import GroupedConv1d
torch.manual_seed(0)
layer = GroupedConv1d([torch.nn.Conv1d(1, 25, 5, 2, 1) for _ in range(4)])
x = torch.randn(20, 4, 40)
y = layer(x)
y.backward(torch.randn_like(y))
h = hashlib.sha256()
for t in (y, layer.weight.grad, layer.bias.grad):
    h.update(t.detach().contiguous().numpy().tobytes())
hits = sum(sum(f.stats.cache_hits.values()) for f in (numba_conv.conv1_forward, numba_conv.conv1_backward))
misses = sum(sum(f.stats.cache_misses.values()) for f in (numba_conv.conv1_forward, numba_conv.conv1_backward))
print(json.dumps({"bits": h.hexdigest(), "hits": hits, "misses": misses}))
"""


def test_the_grouped_first_convolution_loads_from_the_cache_with_the_same_bits(tmp_path):
    """bnlab's other kernel module (bnlab.kernels.numba_conv) compiles out of process too: both processes
    load both kernels from the cache, and compute the same bits."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    cold, warm = (
        json.loads(
            subprocess.run(
                [sys.executable, "-c", _CONV], env=env, capture_output=True, text=True, check=True
            ).stdout.splitlines()[-1]
        )
        for _ in range(2)
    )
    assert (cold["hits"], cold["misses"]) == (2, 0) and (warm["hits"], warm["misses"]) == (2, 0)
    assert cold["bits"] == warm["bits"]
