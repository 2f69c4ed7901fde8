"""The vectorizable float32 exp used by the fused SiLU kernels, against float64 exp."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from bnlab.kernels.fast_exp import exp


@njit
def _exp_all(x, out):
    for i in range(x.shape[0]):
        out[i] = exp(x[i])


def _ulps(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    _exp_all(x, out)
    ref = np.exp(x.astype(np.float64))
    return np.abs(out.astype(np.float64) - ref) / np.spacing(ref.astype(np.float32)).astype(np.float64)


@pytest.mark.parametrize("limit, max_ulps", [(10.0, 1.1), (88.37, 5.0)])
def test_float32_exp_is_within_a_few_ulps(limit, max_ulps):
    x = np.linspace(-min(limit, 87.33), limit, 1_000_001).astype(np.float32)
    assert _ulps(x).max() <= max_ulps


def test_special_values():
    x = np.float32([np.nan, np.inf, -np.inf, 0.0, -0.0, -100.0, 89.0, 88.0])
    out = np.empty_like(x)
    _exp_all(x, out)
    assert np.isnan(out[0])
    assert out[1] == np.inf and out[2] == 0 and out[3] == 1 and out[4] == 1
    assert out[5] == 0  # below float32's smallest normal: flushed
    assert out[6] == np.inf  # exp(89) overflows float32
    assert np.isclose(out[7], np.exp(88.0), rtol=1e-6)


def test_float64_keeps_the_library_exp():
    x = np.linspace(-700, 700, 10001)
    out = np.empty_like(x)
    _exp_all(x, out)
    np.testing.assert_allclose(out, np.exp(x), rtol=1e-15)
