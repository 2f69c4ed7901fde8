"""The non-finite guard: off by default (torch parity); on, a NaN/Inf batch leaves the state alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bnlab
from bnlab.nn import BatchNorm2d, GhostBatchNorm2d, MaskedBatchNorm1d, skip_nonfinite_updates


def _batches():
    gen = torch.Generator().manual_seed(0)
    good = [torch.randn(4, 3, 2, 2, generator=gen) for _ in range(2)]
    bad = good[0].clone()
    bad[1, 2, 0, 1] = float("nan")
    return good, bad


def test_off_by_default_a_nan_batch_poisons_the_running_stats_as_in_torch():
    good, bad = _batches()
    ours, ref = BatchNorm2d(3), nn.BatchNorm2d(3)
    ours(bad), ref(bad)
    assert ours.running_var.isnan().any() and ref.running_var.isnan().any()


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_guarded_layer_skips_the_bad_batch_and_counts_it(poison):
    good, bad = _batches()
    bad[bad.isnan()] = poison
    layer, ref = BatchNorm2d(3).skip_nonfinite_updates(), nn.BatchNorm2d(3)
    layer(good[0]), ref(good[0])
    with pytest.warns(RuntimeWarning, match="update was skipped"):
        layer(bad)
    layer(good[1]), ref(good[1])  # torch never saw the bad batch
    assert layer.nonfinite_batches_skipped == 1
    assert int(layer.num_batches_tracked) == int(ref.num_batches_tracked) == 2
    torch.testing.assert_close(layer.running_mean, ref.running_mean)
    torch.testing.assert_close(layer.running_var, ref.running_var)


def test_guard_covers_variants_and_can_be_turned_off():
    good, bad = _batches()
    model = nn.Sequential(GhostBatchNorm2d(3, 2), bnlab.nn.BatchNormAct2d(3))
    assert skip_nonfinite_updates(model) == 2
    with pytest.warns(RuntimeWarning):
        model(bad)
    assert all(torch.isfinite(m.running_var).all() for m in model)
    masked = MaskedBatchNorm1d(3).skip_nonfinite_updates()
    x = torch.randn(2, 3, 5)
    x[0, 0, 4] = float("nan")
    with pytest.warns(RuntimeWarning):
        masked(x, torch.ones(2, 5, dtype=torch.bool))
    masked(x, torch.arange(5) < torch.tensor([[4], [5]]))  # the NaN is padding: a normal update
    assert masked.nonfinite_batches_skipped == 1 and int(masked.num_batches_tracked) == 1
    skip_nonfinite_updates(model, False)
    model(bad)
    assert model[0].running_var.isnan().any()
