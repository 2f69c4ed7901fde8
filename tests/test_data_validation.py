"""Data files that are wrong in the ways real files are: each refused with one error that names the
file and says what was expected, before anything is cast, truncated or inflated."""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
import unprivileged

from bnlab import data
from bnlab.data import cifar, idx


def _write_idx(path, array, type_byte=0x08, gz=False, shape=None):
    shape = array.shape if shape is None else shape
    header = bytes([0, 0, type_byte, len(shape)]) + b"".join(int(s).to_bytes(4, "big") for s in shape)
    blob = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    with (gzip.open if gz else open)(str(path), "wb") as f:
        f.write(blob)


def _idx_folder(root, x_test_shape=(3, 28, 28), y_test=None, x_train=None):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8) if x_train is None else x_train,
        "y_train": rng.integers(0, 10, 5, dtype=np.uint8),
        "x_test": rng.integers(0, 256, x_test_shape, dtype=np.uint8),
        "y_test": rng.integers(0, 10, x_test_shape[0], dtype=np.uint8) if y_test is None else y_test,
    }
    types = {np.dtype(np.uint8): 0x08, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
    for key, stem in idx.FILES.items():
        _write_idx(root / stem, arrays[key], type_byte=types[arrays[key].dtype])
    return arrays


@pytest.mark.parametrize("labels", [[1.0, float("nan"), 2.0], [3.7, 1.0, 2.0]], ids=["nan", "fraction"])
def test_float_idx_labels_are_refused_not_cast(tmp_path, labels):
    _idx_folder(tmp_path, y_test=np.array(labels, dtype=np.float32))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte: expected integer labels .*got float32"):
        data.load("mnist", root=tmp_path)


def test_images_of_another_size_are_a_value_error_naming_the_file(tmp_path):
    _idx_folder(tmp_path, x_test_shape=(3, 32, 32))
    with pytest.raises(
        ValueError,
        match=r"t10k-images-idx3-ubyte: expected images of 28x28 pixels like "
        r".*train-images-idx3-ubyte \(got 32x32\)",
    ):
        data.load("mnist", root=tmp_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_pixels_are_refused(tmp_path, bad):
    x = np.random.default_rng(1).random((5, 28, 28)).astype(np.float32)
    x[3, 4, 5] = bad
    _idx_folder(tmp_path, x_train=x)
    with pytest.raises(
        ValueError,
        match=r"train-images-idx3-ubyte: expected finite pixel values "
        r"\(got NaN or infinity in image 3\)",
    ):
        data.load("mnist", root=tmp_path)


def test_header_sizes_are_checked_against_the_file_without_overflow(tmp_path):
    path = tmp_path / "huge"
    big = 2**32 - 1
    _write_idx(path, np.zeros(10, dtype=np.uint8), shape=(big, big, big))  # 7.9e28 bytes claimed, 10 there
    with pytest.raises(
        ValueError,
        match=rf"expected {big**3} bytes of data for shape \({big}, {big}, {big}\) "
        r"\(got 10\)",
    ):
        idx.read_idx(str(path))


def test_gzip_header_larger_than_the_file_can_inflate_to_fails_before_inflating(tmp_path):
    path = tmp_path / "claims.gz"
    _write_idx(path, np.zeros(1000, dtype=np.uint8), gz=True, shape=(60000, 280, 280))  # 4.7 GB claimed
    size = os.path.getsize(path)
    with pytest.raises(ValueError, match=rf"more than a {size}-byte gzip file can hold"):
        idx.read_idx(str(path))


def test_gzip_bomb_is_not_inflated_beyond_the_announced_size(tmp_path):
    path = tmp_path / "bomb.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:  # 3 labels announced, 96 MB of zeros behind them
        f.write(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes(3))
        chunk = bytes(1 << 24)
        for _ in range(6):
            f.write(chunk)
    assert os.path.getsize(path) < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"expected 3 bytes of data for shape \(3,\) \(got more"):
            idx.read_idx(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"read {peak / 2**20:.0f} MiB to find 3 labels"


def _cifar_folder(root, test_labels):
    rng = np.random.default_rng(0)
    for name in cifar.TRAIN + (cifar.TEST,):
        labels = test_labels if name == cifar.TEST else [int(v) for v in rng.integers(0, 10, 2)]
        with open(root / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": labels}, f, protocol=2)


@pytest.mark.parametrize("labels", [[3.7, 1], [float("nan"), 1], [1.0, 2.0]], ids=["fraction", "nan", "float"])
def test_cifar_float_labels_are_refused_not_cast(tmp_path, labels):
    _cifar_folder(tmp_path, labels)
    with pytest.raises(ValueError, match=r"test_batch: expected b\"labels\" as integers 0..9 \(got float64 values"):
        data.load("cifar10", root=tmp_path)


def test_cifar_integer_labels_load(tmp_path):
    _cifar_folder(tmp_path, [np.int64(7), 1])
    assert data.load("cifar10", root=tmp_path).y_test.tolist() == [7, 1]


def test_mnist1d_loads_with_a_read_only_cache_folder(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chmod(tmp_path, 0o755)
    unprivileged.make_read_only(cache)
    code = textwrap.dedent("""
        import logging, sys
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        from bnlab import data
        ds = data.load("mnist1d")
        print(tuple(ds.x_train.shape), tuple(ds.x_test.shape))
    """)
    env = {**os.environ, "BNLAB_CACHE": str(cache)}
    try:
        out = unprivileged.run([sys.executable, "-c", code], env=env, timeout=300)
    finally:
        unprivileged.make_writable(cache)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "(4000, 40) (1000, 40)"
    assert f"could not cache MNIST-1D in {cache}" in out.stderr
    assert os.listdir(cache) == []


def test_a_malformed_data_file_is_one_line_from_the_command_line(tmp_path):
    _idx_folder(tmp_path, y_test=np.array([1.0, 2.0, 3.5], dtype=np.float32))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bnlab.cli",
            "train",
            "--data",
            "mnist",
            "--data-root",
            str(tmp_path),
            "--model",
            "mlp",
            "--steps",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith(f"bnlab train: {tmp_path / 't10k-labels-idx1-ubyte'}: expected integer labels")
