"""Built-in data sets, loaded into memory as tensors: ``bnlab.data.load(name, root=None)``.

=================  ======================================================================  ==========
name               what                                                                    needs root
=================  ======================================================================  ==========
``mnist1d``        MNIST-1D generated offline (4000 train / 1000 test, (N, 40)), cached    no
``digits``         scikit-learn's 8x8 digits, stratified split 1437 / 360, (N, 1, 8, 8)    no
``mnist``          IDX files ``train-images-idx3-ubyte[.gz]`` ... , (N, 1, 28, 28)         yes
``fashion-mnist``  the same IDX names and format                                           yes
``cifar10``        the python batches ``data_batch_1..5``, ``test_batch``, (N, 3, 32, 32)  yes
=================  ======================================================================  ==========

Shifted test sets (clean train split, corrupted test split; :mod:`bnlab.data.shifted` lists them):
``mnist1d-c/CORRUPTION/SEVERITY`` and ``digits-c/CORRUPTION/SEVERITY``, e.g. ``mnist1d-c/shear/3``.

Example::

    ds = bnlab.data.load("mnist1d")
    ds.x_train.shape, ds.num_classes, ds.input_shape   # (4000, 40), 10, (40,)

Results are memoised per process (``load`` returns the same object for the same name and root),
so sweeps over many configurations read or generate each set once.
"""

from __future__ import annotations

import functools
import os

from . import builtin, shifted
from .builtin import NAMES
from .dataset import Dataset

__all__ = ["Dataset", "load", "check_name", "NAMES"]


def check_name(name: str) -> str:
    """``name`` if it names a data set (one of :data:`NAMES` or a shifted set), else ValueError."""
    if shifted.parse(name) is None and name not in NAMES:
        raise ValueError(
            f"expected a data set name in {NAMES} or a shifted set such as 'mnist1d-c/noise/3' (got {name!r})"
        )
    return name


def load(name: str, root: str | None = None) -> Dataset:
    """The data set ``name`` (one of :data:`NAMES`); ``root`` is the folder of its files if it has any."""
    if shifted.parse(check_name(name)) is not None:
        return _load_shifted(name)
    return builtin.load(name, None if root is None else os.path.abspath(root))


@functools.lru_cache(maxsize=8)
def _load_shifted(name: str) -> Dataset:
    parsed = shifted.parse(name)
    assert parsed is not None  # load() asked parse first
    return shifted.corrupted(*parsed)
