"""The built-in data sets (:data:`NAMES`), memoised per process; :func:`bnlab.data.load` also knows
the shifted sets of :mod:`bnlab.data.shifted`, which start from these.
"""

from __future__ import annotations

import functools

from .dataset import Dataset

NAMES = ("mnist1d", "digits", "mnist", "fashion-mnist", "cifar10")


@functools.lru_cache(maxsize=8)
def load(name: str, root: str | None = None) -> Dataset:
    """The built-in set ``name`` (one of :data:`NAMES`, checked by the caller) from ``root``, memoised."""
    if name == "mnist1d":
        from . import mnist1d

        return mnist1d.load()
    if name == "digits":
        from . import digits

        return digits.load()
    if name in ("mnist", "fashion-mnist"):
        from . import idx

        return idx.load(name, root)
    from . import cifar

    return cifar.load(root)
