"""Where generated data sets are cached: ``$BNLAB_CACHE``, else the user's cache directory.

The default follows the XDG convention: ``$XDG_CACHE_HOME/bnlab`` or ``~/.cache/bnlab``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache directory (created on first use if possible: a cache that cannot be written is
    only a slower start, so callers treat writing to it as optional)."""
    env = os.environ.get("BNLAB_CACHE")
    if env:
        path = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = Path(base) / "bnlab"
    with contextlib.suppress(OSError):  # read-only: writes will fail, and the callers say so
        path.mkdir(parents=True, exist_ok=True)
    return path
