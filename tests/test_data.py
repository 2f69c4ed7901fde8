"""The built-in data sets: MNIST-1D generation and cache, digits, IDX and CIFAR-10 readers.

The readers are checked on tiny files written here in the published formats; the MNIST-1D
loader against the mnist1d package's own make_dataset.
"""

import gzip
import os
import pickle
import random

import numpy as np
import pytest
import torch

from bnlab import data
from bnlab.data import cifar, idx, mnist1d


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --- MNIST-1D ---------------------------------------------------------------------------------


def test_mnist1d_matches_make_dataset_defaults_and_restores_global_rngs(cache):
    from mnist1d.data import get_dataset_args, make_dataset

    random.seed(123)
    np.random.seed(123)
    want_py, want_np = random.random(), np.random.rand()
    random.seed(123)
    np.random.seed(123)
    ds = mnist1d.load()  # generates: make_dataset reseeds python's and numpy's global RNGs to 42
    assert random.random() == want_py and np.random.rand() == want_np
    ref = make_dataset(get_dataset_args())
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.input_shape == (40,) and ds.num_classes == 10
    np.testing.assert_array_equal(ds.x_train.numpy(), ref["x"].astype(np.float32))
    np.testing.assert_array_equal(ds.x_test.numpy(), ref["x_test"].astype(np.float32))
    np.testing.assert_array_equal(ds.y_train.numpy(), ref["y"])
    np.testing.assert_array_equal(ds.y_test.numpy(), ref["y_test"])
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64


@pytest.fixture
def fake_generate(monkeypatch):
    """A stand-in generator (the cache logic does not depend on what is cached) that counts calls."""
    calls = []

    def generate():
        calls.append(1)
        g = torch.Generator().manual_seed(0)
        return {
            "x_train": torch.randn(8, 40, generator=g),
            "y_train": torch.arange(8) % 10,
            "x_test": torch.randn(4, 40, generator=g),
            "y_test": torch.arange(4),
        }

    monkeypatch.setattr(mnist1d, "generate", generate)
    return calls


def test_mnist1d_second_load_reads_the_cache(cache, fake_generate):
    first = mnist1d.load()
    assert os.path.exists(mnist1d.cache_path()) and str(cache) in mnist1d.cache_path()
    again = mnist1d.load()
    assert len(fake_generate) == 1
    assert torch.equal(again.x_train, first.x_train) and torch.equal(again.y_test, first.y_test)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "tampered"])
def test_mnist1d_corrupt_cache_is_regenerated(cache, fake_generate, damage):
    good = mnist1d.load()
    path = mnist1d.cache_path()
    if damage == "garbage":
        with open(path, "wb") as f:
            f.write(b"not a torch file")
    elif damage == "truncated":
        blob = open(path, "rb").read()
        with open(path, "wb") as f:
            f.write(blob[: len(blob) // 2])
    else:  # loads fine, but a value changed: the digest must catch it
        blob = torch.load(path, weights_only=True)
        blob["x_train"][0, 0] += 1.0
        torch.save(blob, path)
    again = mnist1d.load()
    assert len(fake_generate) == 2
    assert torch.equal(again.x_train, good.x_train)
    assert mnist1d._read_cache(path) is not None  # and the cache was rewritten


def test_load_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"expected a data set name in .* \(got 'mnist2d'\)"):
        data.load("mnist2d")


# --- digits -----------------------------------------------------------------------------------


def test_digits_split_is_deterministic_stratified_and_scaled():
    from sklearn.datasets import load_digits

    ds = data.load("digits")
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_test.shape == (360, 1, 8, 8)
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    # every image of the bundled set appears exactly once across the split, scaled by 1/16
    ref = np.sort((load_digits().images / 16.0).reshape(1797, -1).astype(np.float32), axis=0)
    ours = np.sort(torch.cat([ds.x_train, ds.x_test]).reshape(1797, -1).numpy(), axis=0)
    np.testing.assert_array_equal(ours, ref)
    counts = torch.bincount(ds.y_test, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37  # stratified: ~36 per class
    data.builtin.load.cache_clear()
    again = data.load("digits")
    assert torch.equal(again.x_test, ds.x_test) and torch.equal(again.y_train, ds.y_train)


# --- IDX (MNIST, Fashion-MNIST) ---------------------------------------------------------------


def _write_idx(path, array, type_byte=0x08, gz=False):
    header = bytes([0, 0, type_byte, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    blob = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if gz else open
    with opener(str(path) + (".gz" if gz else ""), "wb") as f:
        f.write(blob)


def _idx_folder(root, gz=False, n_train=5, n_test=3, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for key, stem in idx.FILES.items():
        _write_idx(root / stem, arrays[key], gz=gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_files_load_as_scaled_images(tmp_path, gz, name):
    arrays = _idx_folder(tmp_path, gz=gz)
    ds = data.load(name, root=tmp_path)
    assert ds.x_train.shape == (5, 1, 28, 28) and ds.x_test.shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(ds.x_train[:, 0].numpy(), arrays["x_train"].astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.y_test.numpy(), arrays["y_test"].astype(np.int64))
    assert ds.num_classes == 10


def test_idx_reader_handles_multibyte_big_endian_types(tmp_path):
    a = np.arange(-6, 6, dtype=np.int32).reshape(3, 4) * 1000
    _write_idx(tmp_path / "a", a, type_byte=0x0C)
    np.testing.assert_array_equal(idx.read_idx(str(tmp_path / "a")), a)


def test_idx_errors_name_the_file_and_the_format(tmp_path):
    _idx_folder(tmp_path)
    bad = tmp_path / "t10k-labels-idx1-ubyte"
    bad.write_bytes(b"\x12\x34\x08\x01")
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte: expected IDX .*\(got header bytes 12340801\)"):
        data.load("mnist", root=tmp_path)
    bad.write_bytes(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + b"\x01")  # 1 of 3 bytes
    with pytest.raises(ValueError, match=r"labels-idx1-ubyte: expected 3 bytes of data for shape \(3,\) \(got 1\)"):
        data.load("mnist", root=tmp_path)
    _write_idx(bad, np.zeros(4, dtype=np.uint8))  # 4 labels for 3 images
    with pytest.raises(ValueError, match=r"has 3 images but .*t10k-labels-idx1-ubyte has 4 labels"):
        data.load("mnist", root=tmp_path)
    bad.unlink()
    with pytest.raises(FileNotFoundError, match=r"expected t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz"):
        data.load("mnist", root=tmp_path)
    with pytest.raises(ValueError, match=r"expected root="):
        data.load("fashion-mnist")


# --- CIFAR-10 ---------------------------------------------------------------------------------


def _cifar_folder(root, per_batch=2, seed=0):
    rng = np.random.default_rng(seed)
    batches = {}
    for name in cifar.TRAIN + (cifar.TEST,):
        d = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"batch_label": b"x",
        }
        with open(root / name, "wb") as f:
            pickle.dump(d, f, protocol=2)
        batches[name] = d
    return batches


def test_cifar_batches_load_in_channel_planes(tmp_path):
    batches = _cifar_folder(tmp_path)
    ds = data.load("cifar10", root=tmp_path)
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.x_test.shape == (2, 3, 32, 32)
    raw = batches["data_batch_2"][b"data"][1]  # the 4th training image
    # row-major planes: value 1024*c + 32*h + w is channel c, row h, column w
    for c, h, w in [(0, 0, 0), (1, 5, 7), (2, 31, 31)]:
        assert float(ds.x_train[3, c, h, w]) == pytest.approx(raw[1024 * c + 32 * h + w] / 255)
    assert ds.y_train.tolist()[:4] == batches["data_batch_1"][b"labels"] + batches["data_batch_2"][b"labels"]
    assert ds.classes[0] == "airplane"


def test_cifar_errors_name_the_file_and_the_format(tmp_path):
    _cifar_folder(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"test_batch: expected b\"data\" uint8 of shape \(N, 3072\)"):
        data.load("cifar10", root=tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"labels": [0]}, f)
    with pytest.raises(ValueError, match=r"test_batch: expected a pickled dict with b\"data\""):
        data.load("cifar10", root=tmp_path)
    os.remove(tmp_path / "data_batch_3")
    with pytest.raises(FileNotFoundError, match=r"expected data_batch_3 \(a pickled dict"):
        data.load("cifar10", root=tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_reader_refuses_pickles_that_call_functions(tmp_path):
    with open(tmp_path / "evil", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": []}, f)
    with pytest.raises(ValueError, match=r"refusing to load .*system"):
        cifar.read_batch(str(tmp_path / "evil"))
