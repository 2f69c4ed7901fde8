"""MNIST and Fashion-MNIST from IDX files in a folder the user points at (nothing is downloaded).

The IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type byte
(0x08 unsigned byte, 0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), a byte
with the number of dimensions d, then d big-endian uint32 sizes, then the values, big-endian, in C
order. Files may be gzipped (``.gz``). Standard names::

    train-images-idx3-ubyte  train-labels-idx1-ubyte  t10k-images-idx3-ubyte  t10k-labels-idx1-ubyte

Images become float32 in [0, 1] of shape (N, 1, H, W); labels int64 (N,).
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import torch

from .dataset import Dataset

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
FORMAT = "IDX (0x0000, type byte, ndim byte, ndim big-endian uint32 sizes, big-endian values)"
FILES = {
    "x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot")


def read_idx(path: str) -> np.ndarray:
    """One IDX file (optionally gzipped) as a numpy array; a malformed file raises ValueError."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read it as {'gzipped ' if path.endswith('.gz') else ''}{FORMAT} ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise ValueError(f"{path}: expected {FORMAT} (got header bytes {raw[:4].hex() or 'none'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: expected {ndim} dimension sizes after the magic number (file ends at byte {len(raw)})")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_TYPES[raw[2]])
    want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != want:
        raise ValueError(f"{path}: expected {want} bytes of data for shape {shape} (got {len(raw) - header})")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(root: str, stem: str) -> str:
    for name in (stem, stem + ".gz"):
        path = os.path.join(root, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"expected {stem} or {stem}.gz ({FORMAT}) in {root} (not found)")


def load(name: str, root: str | None) -> Dataset:
    """``name`` is "mnist" or "fashion-mnist"; ``root`` the folder holding the four IDX files."""
    if root is None:
        raise ValueError(f"{name}: expected root= the folder with the IDX files {sorted(FILES.values())} (got None)")
    arrays = {}
    for key, stem in FILES.items():
        path = _find(root, stem)
        a = read_idx(path)
        want_dim = 3 if key.startswith("x") else 1
        if a.ndim != want_dim:
            raise ValueError(f"{path}: expected a {want_dim}D IDX array (got {a.ndim}D, shape {a.shape})")
        arrays[key] = (path, a)
    for split in ("train", "test"):
        (xp, x), (yp, y) = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{xp} has {x.shape[0]} images but {yp} has {y.shape[0]} labels (expected equal counts)")
        if y.size and (y.min() < 0 or y.max() > 9):
            raise ValueError(f"{yp}: expected labels 0..9 (got {int(y.min())}..{int(y.max())})")
    scale = lambda a: torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)  # (N, 1, H, W)
    classes = FASHION_CLASSES if name == "fashion-mnist" else tuple(str(d) for d in range(10))
    return Dataset(
        name,
        x_train=scale(arrays["x_train"][1]), y_train=torch.from_numpy(arrays["y_train"][1].astype(np.int64)),
        x_test=scale(arrays["x_test"][1]), y_test=torch.from_numpy(arrays["y_test"][1].astype(np.int64)),
        classes=classes,
    )
