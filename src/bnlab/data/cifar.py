"""CIFAR-10 from the python-version batches in a folder the user points at (nothing is downloaded).

Expected files (Krizhevsky's "CIFAR-10 python version"): ``data_batch_1`` .. ``data_batch_5`` and
``test_batch``, each a pickled dict with ``b"data"`` (uint8, (N, 3072): 1024 red, 1024 green, 1024
blue values of a 32x32 image in row-major order) and ``b"labels"`` (N ints 0..9); the class
names are CIFAR-10's standard ten. The pickles are read with an unpickler that only rebuilds
numpy arrays, lists, dicts and strings, so a file cannot run code.

Images become float32 in [0, 1] of shape (N, 3, 32, 32); labels int64 (N,).
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import torch

from .dataset import Dataset

TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST = "test_batch"
FORMAT = 'a pickled dict with b"data" (uint8, N x 3072) and b"labels" (N ints in 0..9)'
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# The globals a numpy-array pickle needs, and nothing else.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by python 3 spell a bytes object
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are expected)")


def read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch file: images (N, 3, 32, 32) uint8 and labels (N,) int64."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"expected {os.path.basename(path)} ({FORMAT}) in {os.path.dirname(path)} (not found)")
    try:
        with open(path, "rb") as f:
            blob = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:
        raise ValueError(f"{path}: expected {FORMAT} (unpickling failed: {e})") from e
    if not isinstance(blob, dict) or b"data" not in blob or b"labels" not in blob:
        got = sorted(blob) if isinstance(blob, dict) else type(blob).__name__
        raise ValueError(f"{path}: expected {FORMAT} (got {got})")
    data = np.asarray(blob[b"data"])
    labels = np.asarray(blob[b"labels"])  # no dtype: casting would turn 3.7 into 3 and NaN into garbage
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f'{path}: expected b"data" uint8 of shape (N, 3072) (got {data.dtype} {data.shape})')
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: expected {data.shape[0]} labels (got shape {labels.shape})")
    if labels.size and labels.dtype.kind not in "iu":
        example = next((v for v in labels.flat if not isinstance(v, (int, np.integer))), labels.flat[0])
        raise ValueError(
            f'{path}: expected b"labels" as integers 0..9 (got {labels.dtype.name} values such as {example!r})'
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: expected labels 0..9 (got {labels.min()}..{labels.max()})")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load(root: str | None) -> Dataset:
    if root is None:
        raise ValueError(f"cifar10: expected root= the folder with {', '.join(TRAIN)} and {TEST} (got None)")
    parts = [read_batch(os.path.join(root, name)) for name in TRAIN]
    x_te, y_te = read_batch(os.path.join(root, TEST))

    def scale(a):
        return torch.from_numpy(a.astype(np.float32) / 255.0)

    return Dataset(
        "cifar10",
        x_train=scale(np.concatenate([p[0] for p in parts])),
        y_train=torch.from_numpy(np.concatenate([p[1] for p in parts])),
        x_test=scale(x_te),
        y_test=torch.from_numpy(y_te),
        classes=CLASSES,
    )
