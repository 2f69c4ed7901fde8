"""Where numba caches bnlab's compiled kernels, so only the first process pays the JIT.

numba writes its cache next to the source (``kernels/__pycache__``). When that folder is not
writable (a system-wide or read-only install) this module points numba at a per-user folder
instead: ``$BNLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/bnlab/numba`` (``~/.cache/bnlab/numba``), else
a folder in the temp dir. A ``NUMBA_CACHE_DIR`` set by the user always wins. It must run before the
kernels compile, so :mod:`bnlab.kernels.numba_cpu` imports it first.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numba


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
    """The folder to hand to numba, or None to keep numba's default next to the source."""
    if is_writable(package_cache):
        return None
    for folder in candidates:
        if is_writable(folder):
            return str(folder)
    return None


def configure() -> str | None:
    """Apply the choice to numba's config (unless NUMBA_CACHE_DIR is set).

    Returns the cache folder in use, or None when no folder is writable (the kernels are then
    compiled without a disk cache, once per process).
    """
    package_cache = Path(__file__).parent / "__pycache__"
    if numba.config.CACHE_DIR:
        return numba.config.CACHE_DIR
    if is_writable(package_cache):
        return str(package_cache)
    chosen = choose_cache_dir(package_cache, user_cache_dirs())
    if chosen is not None:
        numba.config.CACHE_DIR = chosen
    return chosen


CACHE_DIR = configure()
