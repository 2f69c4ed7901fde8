"""local_moments + combine_moments (Chan's formula) against statistics of the whole batch."""

from __future__ import annotations

import torch

from bnlab import functional as F


def _combined(x, sizes):
    count, mean, m2 = (torch.stack(t) for t in zip(*(F.local_moments(p) for p in x.split(sizes))))
    total, mu, m2_all = F.combine_moments(count, mean, m2)
    return total, mu, m2_all / total


def test_combined_moments_of_uneven_parts_equal_the_whole_batch():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(23, 5, 7, generator=gen, dtype=torch.float64) * 3 + 2
    total, mean, var = _combined(x, [1, 0, 9, 13])
    assert total.item() == 23 * 7
    torch.testing.assert_close(mean, x.mean((0, 2)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var, x.var((0, 2), unbiased=False), rtol=1e-12, atol=1e-12)


def test_combination_does_not_cancel_catastrophically_in_float32():
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(23, 5, 7, generator=gen, dtype=torch.float64) * 0.1 + 1e4).float()  # offset 1e4, spread 0.1
    _, _, var = _combined(x, [1, 0, 9, 13])
    exact = x.double().var((0, 2), unbiased=False)
    naive = (x * x).mean((0, 2)) - x.mean((0, 2)) ** 2  # E[x^2]-E[x]^2 is off by orders of magnitude here
    assert ((naive.double() / exact - 1).abs() > 1).any()
    # float32 resolves the mean of values near 1e4 to ~1e-3, so ~1e-3 of a 0.01 variance is the floor
    torch.testing.assert_close(var.double(), exact, rtol=1e-2, atol=0)


def test_empty_part_has_zero_count_and_finite_moments():
    count, mean, m2 = F.local_moments(torch.empty(0, 3, 4))
    assert count.item() == 0 and torch.equal(mean, torch.zeros(3)) and torch.equal(m2, torch.zeros(3))
