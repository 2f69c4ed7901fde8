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
import math
import os
import zlib

import numpy as np
import torch

from .dataset import Dataset

_MAX_DEFLATE_RATIO = 1032  # deflate's best case: a stream cannot inflate to more than ~1032x its size
_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
FORMAT = "IDX (0x0000, type byte, ndim byte, ndim big-endian uint32 sizes, big-endian values)"
FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def read_idx(path: str) -> np.ndarray:
    """One IDX file (optionally gzipped) as a numpy array; a malformed file raises ValueError.

    The header's sizes are checked against the file before the data are read: a plain file must
    hold exactly that many bytes, a gzipped one must be able to (deflate compresses by at most
    ~1032:1), and the data are inflated only up to the size the header announces, so a small file
    with absurd sizes, or a .gz that inflates to gigabytes, fails at once.
    """
    gz = path.endswith(".gz")
    try:
        size = os.path.getsize(path)
        with (gzip.open if gz else open)(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _TYPES:
                raise ValueError(f"{path}: expected {FORMAT} (got header bytes {head.hex() or 'none'})")
            ndim = head[3]
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise ValueError(
                    f"{path}: expected {ndim} dimension sizes after the magic number "
                    f"(file ends at byte {4 + len(dims)})"
                )
            shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
            dtype = np.dtype(_TYPES[head[2]])
            want = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
            if not gz and want != size - 4 - 4 * ndim:
                raise ValueError(f"{path}: expected {want} bytes of data for shape {shape} (got {size - 4 - 4 * ndim})")
            if gz and want > _MAX_DEFLATE_RATIO * size:
                raise ValueError(
                    f"{path}: expected {want} bytes of data for shape {shape}, more than a {size}-byte "
                    f"gzip file can hold (at most about {_MAX_DEFLATE_RATIO * size})"
                )
            raw = _read_at_most(f, want)
            if len(raw) != want or f.read(1):
                got = f"{len(raw)}" if len(raw) != want else "more: the data go on"
                raise ValueError(f"{path}: expected {want} bytes of data for shape {shape} (got {got})")
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: cannot read it as {'gzipped ' if gz else ''}{FORMAT} ({e})") from None
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _read_at_most(f, n: int, chunk: int = 1 << 24) -> bytes:
    """Up to ``n`` bytes, read in chunks (one read(n) would allocate n bytes up front)."""
    parts, left = [], n
    while left > 0:
        part = f.read(min(chunk, left))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _find(root: str, stem: str) -> str:
    for name in (stem, stem + ".gz"):
        path = os.path.join(root, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"expected {stem} or {stem}.gz ({FORMAT}) in {root} (not found)")


def _check_images_and_labels(arrays: dict[str, tuple[str, np.ndarray]]) -> None:
    """Counts, label type and range (no casting), image sizes and finite pixels; ValueError naming the file."""
    (train_path, train_x) = arrays["x_train"]
    for split in ("train", "test"):
        (xp, x), (yp, y) = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{xp} has {x.shape[0]} images but {yp} has {y.shape[0]} labels (expected equal counts)")
        if y.dtype.kind not in "iu":
            raise ValueError(f"{yp}: expected integer labels (IDX type 0x08, 0x09, 0x0B or 0x0C; got {y.dtype.name})")
        if y.size and (y.min() < 0 or y.max() > 9):
            raise ValueError(f"{yp}: expected labels 0..9 (got {int(y.min())}..{int(y.max())})")
        if x.shape[1:] != train_x.shape[1:]:
            raise ValueError(
                f"{xp}: expected images of {train_x.shape[1]}x{train_x.shape[2]} pixels like "
                f"{train_path} (got {x.shape[1]}x{x.shape[2]})"
            )
        if x.dtype.kind == "f" and x.size and not np.isfinite(x).all():
            first = int(np.flatnonzero(~np.isfinite(x).reshape(x.shape[0], -1).all(axis=1))[0])
            raise ValueError(f"{xp}: expected finite pixel values (got NaN or infinity in image {first})")


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
    _check_images_and_labels(arrays)

    def scale(a):
        return torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)  # (N, 1, H, W)

    classes = FASHION_CLASSES if name == "fashion-mnist" else tuple(str(d) for d in range(10))
    return Dataset(
        name,
        x_train=scale(arrays["x_train"][1]),
        y_train=torch.from_numpy(arrays["y_train"][1].astype(np.int64)),
        x_test=scale(arrays["x_test"][1]),
        y_test=torch.from_numpy(arrays["y_test"][1].astype(np.int64)),
        classes=classes,
    )
