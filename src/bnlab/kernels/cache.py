"""Where numba caches bnlab's compiled kernels, so only the first process pays the JIT.

The cache lives in ``kernels/__pycache__``; when that folder is not writable (a system-wide or
read-only install), in a per-user folder instead: ``$BNLAB_CACHE_DIR``, else
``$XDG_CACHE_HOME/bnlab/numba`` (``~/.cache/bnlab/numba``), else a folder in the temp dir. A
``NUMBA_CACHE_DIR`` set by the user is used in their place.

numba keys a cached function by its own source file's time stamp only, but the kernels inline code
from other files (activations, the fast exp): a change there would silently reuse stale machine
code. So the kernels get a subfolder named after a digest of every kernel source file
(:data:`KERNEL_SOURCES`); a change to any of them compiles afresh, and in the package folder the
subfolders of older digests are removed. This must run before the kernels compile, so
:mod:`bnlab.kernels.numba_cpu` imports it first.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numba


# The files whose code ends up in the compiled kernels (numba inlines across them).
KERNEL_SOURCES = ("numba_cpu.py", "numba_tags.py", "fast_exp.py", "cache.py")
_HERE = Path(__file__).parent


def source_digest() -> str:
    """12 hex digits of the SHA-256 of the kernel sources (and numba's version)."""
    h = hashlib.sha256(numba.__version__.encode())
    for name in KERNEL_SOURCES:
        h.update((_HERE / name).read_bytes())
    return h.hexdigest()[:12]


def is_writable(folder: str | os.PathLike) -> bool:
    """True if ``folder`` exists (or can be made) and a file can be created in it."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def user_cache_dirs() -> list[Path]:
    """The per-user folders tried, in order, when the package folder is not writable."""
    dirs = []
    if os.environ.get("BNLAB_CACHE_DIR"):
        dirs.append(Path(os.environ["BNLAB_CACHE_DIR"]) / "numba")
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    dirs.append(Path(xdg) / "bnlab" / "numba")
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    dirs.append(Path(tempfile.gettempdir()) / f"bnlab-numba-cache-{uid}")
    return dirs


def choose_cache_dir(package_cache: str | os.PathLike, candidates: list[Path]) -> str | None:
    """The first writable folder of ``package_cache`` and then ``candidates``; None if none is."""
    for folder in [Path(package_cache), *candidates]:
        if is_writable(folder):
            return str(folder)
    return None


def _remove_older(base: Path, keep: str) -> None:
    for old in base.glob("kernels-*"):
        if old.name != keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)  # another process may be using it: best effort


def configure() -> str | None:
    """Point numba's cache at ``<base>/kernels-<digest>`` (base as in the module docstring).

    Returns the cache folder in use, or None when no folder is writable (the kernels are then
    compiled without a disk cache, once per process).
    """
    package_cache = _HERE / "__pycache__"
    sub = f"kernels-{source_digest()}"
    user_base = os.environ.get("NUMBA_CACHE_DIR")
    base = user_base if user_base else choose_cache_dir(package_cache, user_cache_dirs())
    if base is None or not is_writable(Path(base) / sub):
        return None
    if Path(base) == package_cache:
        _remove_older(package_cache, sub)
    numba.config.CACHE_DIR = str(Path(base) / sub)
    return numba.config.CACHE_DIR


CACHE_DIR = configure()
