"""MNIST-1D (Greydanus, "Scaling down deep learning", 2020), generated offline and cached.

The ``mnist1d`` package's ``make_dataset`` builds the set from ten 1D templates with its
``get_dataset_args()`` defaults: 5000 signals of length 40, split 4000 train / 1000 test, seed 42,
centred and scaled to unit standard deviation over the whole set. Its download path is never used.

The generated tensors are cached as ``mnist1d-<args hash>.pt`` in :func:`bnlab.data.cache.cache_dir`
together with a SHA-256 of their bytes; a cache file that does not load or whose digest does not
match is regenerated, never trusted. A cache folder that cannot be written costs only the time
to generate the set again next time: the set is returned all the same, with a message on the
``bnlab`` logger.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import tempfile

import numpy as np
import torch

from .cache import cache_dir
from .dataset import Dataset

CLASSES = tuple(str(d) for d in range(10))


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def generate(**overrides: float) -> dict[str, torch.Tensor]:
    """Run ``mnist1d.data.make_dataset`` with its defaults (``overrides`` replace some of its
    ``get_dataset_args()``); global RNG states are restored after."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    for name, value in overrides.items():
        setattr(args, name, value)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)  # seeds python's and numpy's global RNGs itself
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {
        "x_train": torch.from_numpy(np.asarray(data["x"], dtype=np.float32)),
        "y_train": torch.from_numpy(np.asarray(data["y"], dtype=np.int64)),
        "x_test": torch.from_numpy(np.asarray(data["x_test"], dtype=np.float32)),
        "y_test": torch.from_numpy(np.asarray(data["y_test"], dtype=np.int64)),
    }


def cache_path() -> str:
    """The cache file, named after the mnist1d version that generates it (importing mnist1d to read
    its arguments costs a second; its defaults are fixed per release)."""
    from importlib.metadata import version

    key = hashlib.sha256(f"mnist1d=={version('mnist1d')} defaults".encode()).hexdigest()[:12]
    return os.path.join(cache_dir(), f"mnist1d-{key}.pt")


def _read_cache(path: str) -> dict[str, torch.Tensor] | None:
    """The cached tensors, or None when the file is missing, unreadable or fails its digest."""
    if not os.path.exists(path):
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        tensors = {k: blob[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        if blob["sha256"] != _digest(tensors):
            return None
        return tensors
    except Exception:  # noqa: BLE001 -- any failure to read means "not cached": regenerate
        return None


def _write_cache(path: str, tensors: dict[str, torch.Tensor]) -> None:
    # Write to a temporary file and rename, so a crash mid-write never leaves a half file in place.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    os.close(fd)
    try:
        torch.save({**tensors, "sha256": _digest(tensors)}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load() -> Dataset:
    """MNIST-1D as a :class:`Dataset`: x (N, 40) float32, y (N,) int64; 4000 train, 1000 test."""
    path = cache_path()
    tensors = _read_cache(path)
    if tensors is None:
        tensors = generate()
        try:
            _write_cache(path, tensors)
        except (OSError, RuntimeError) as e:  # torch.save reports a full disk as RuntimeError
            logging.getLogger("bnlab").warning(
                "could not cache MNIST-1D in %s (%s); it is generated again "
                "next time (set BNLAB_CACHE to a writable folder)",
                os.path.dirname(path),
                getattr(e, "strerror", None) or e,
            )
    return Dataset("mnist1d", classes=CLASSES, **tensors)
