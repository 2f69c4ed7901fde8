"""bfloat16 as the kernels read and write it (bnlab.kernels.numba_storage), against torch's conversions.

Every one of the 65,536 bfloat16 bit patterns widens to torch's float32, bit for bit; float32 values
round to torch's bfloat16 -- random bit patterns over every exponent, every exact tie (both parities of
the kept bit) and its neighbours, infinities, the largest finite value, subnormals and signed zeros --
and NaN stays NaN.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from bnlab.kernels.numba_storage import load, store


@njit
def _widen(bits, out):
    for i in range(bits.shape[0]):
        out[i] = load(bits[i])


@njit
def _round(values, out):
    for i in range(values.shape[0]):
        out[i] = store(out, values[i])


def _torch_bits(values: np.ndarray) -> np.ndarray:
    return torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def test_every_bfloat16_widens_as_torch_widens_it():
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    out = np.empty(bits.shape[0], np.float32)
    _widen(bits, out)
    expected = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).float().numpy()
    assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))  # NaN payloads included


def test_rounding_to_bfloat16_is_torchs():
    rng = np.random.default_rng(0)
    random = rng.integers(0, 1 << 32, 100_000, dtype=np.uint64).astype(np.uint32)
    ties = (np.arange(1 << 16, dtype=np.uint32) << 16) | 0x8000  # exactly halfway between two bfloat16s
    special = np.array(
        [0, 0x80000000, 0x7F800000, 0xFF800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x00000001, 0x807FFFFF, 0x7F7F8000],
        dtype=np.uint32,
    )
    values = np.concatenate([random, ties, ties - 1, ties + 1, special]).view(np.float32)
    out = np.empty(values.shape[0], np.uint16)
    _round(values, out)
    expected = _torch_bits(values)
    nan = np.isnan(values)
    assert nan.sum() > 100 and np.array_equal(out[~nan], expected[~nan])
    widened = (out[nan].astype(np.uint32) << 16).view(np.float32)
    assert np.isnan(widened).all()
