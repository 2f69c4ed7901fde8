"""Where the compiled kernels are cached, and that a second process loads them instead of compiling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def test_second_process_loads_compiled_code_from_the_cache(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = [json.loads(subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                                      text=True, check=True).stdout.splitlines()[-1]) for _ in range(2)]
    assert runs[0] == {"hits": 0, "misses": 1}
    assert runs[1] == {"hits": 1, "misses": 0}


def test_a_change_to_any_kernel_source_changes_the_cache_folder(monkeypatch, tmp_path):
    # numba itself only notices changes to the file a function is defined in; code inlined from
    # another file (activations, fast exp) must invalidate the cache too.
    for name in cache.KERNEL_SOURCES:
        (tmp_path / name).write_text(f"# {name}\n")
    monkeypatch.setattr(cache, "_HERE", tmp_path)
    before = cache.source_digest()
    (tmp_path / "fast_exp.py").write_text("# changed\n")
    assert cache.source_digest() != before


def test_older_cache_folders_are_removed(tmp_path):
    for name in ("kernels-old", "kernels-new", "unrelated"):
        (tmp_path / name).mkdir()
    cache._remove_older(tmp_path, "kernels-new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kernels-new", "unrelated"]
