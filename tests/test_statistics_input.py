"""Every statistics tool sees what a BN layer's statistics are taken over, however it is called.

precise_bn, adapt(method="stats"), ExactBNAccumulation, TestBatchNorm's prior and doctor's
train/eval check read a layer's input through one hook (:func:`bnlab.surgery._stats.watch_statistics`):
a masked layer reports its valid positions, and a layer called as ``bn(input=x)`` its keyword input.
The references are the mean and variance of the valid values computed here in float64.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import bnlab
from bnlab.nn import MaskedBatchNorm1d

TOL = {"rtol": 1e-6, "atol": 1e-6}  # float32 statistics of a few hundred values against float64


class Masked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = MaskedBatchNorm1d(3)

    def forward(self, x, mask):
        return self.bn(x, mask=mask)


def _padded(seed: int):
    """(N, C, L) sequences with valid values around 3 (variance about 4) and padding of -5."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 12, (6,), generator=gen)
    mask = torch.arange(12) < lengths[:, None]  # (N, L)
    x = torch.randn(6, 3, 12, generator=gen) * 2 + 3
    return x.masked_fill(~mask[:, None, :], -5.0), mask


def _valid_stats(batches, unbiased: bool):
    """Mean and variance of the valid values of all batches, per channel, in float64."""
    valid = torch.cat([x.double().permute(0, 2, 1)[m] for x, m in batches])  # (K, C)
    return valid.mean(0), valid.var(0, unbiased=unbiased)


def test_precise_bn_and_adapt_take_the_valid_positions_of_masked_layers():
    batches = [_padded(s) for s in range(3)]
    mean, var = _valid_stats(batches, unbiased=False)
    model = Masked()
    bnlab.precise_bn(model, batches, forward=lambda m, b: m(*b))
    torch.testing.assert_close(model.bn.running_mean.double(), mean, **TOL)
    torch.testing.assert_close(model.bn.running_var.double(), var, **TOL)

    model = Masked()
    bnlab.adapt(model, batches, method="stats", forward=lambda m, b: m(*b))
    torch.testing.assert_close(model.bn.running_mean.double(), mean, **TOL)
    torch.testing.assert_close(model.bn.running_var.double(), var, **TOL)


def test_accumulation_commits_the_statistics_of_the_valid_positions():
    batches = [_padded(s) for s in range(2)]
    mean, var = _valid_stats(batches, unbiased=True)
    model = Masked()
    with bnlab.ExactBNAccumulation(model) as acc:
        for x, mask in batches:
            model(x, mask)
        acc.commit()
    torch.testing.assert_close(model.bn.running_mean.double(), 0.1 * mean, **TOL)
    torch.testing.assert_close(model.bn.running_var.double(), 0.9 + 0.1 * var, **TOL)


def test_doctor_finds_no_gap_on_a_calibrated_masked_layer():
    mean, var = _valid_stats([_padded(s) for s in range(4)], unbiased=False)
    model = Masked()
    with torch.no_grad():  # calibrated by hand: the statistics of the valid values
        model.bn.running_mean.copy_(mean)
        model.bn.running_var.copy_(var)
    report = bnlab.doctor(model.eval(), example_input=_padded(10))
    assert not report.hazards, report.to_text()


class ByKeyword(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)  # the same Linear every time
        self.lin, self.bn = nn.Linear(4, 3), nn.BatchNorm1d(3)
        self.bn2 = bnlab.nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn2(input=self.bn(input=self.lin(x)))


def test_tools_read_the_input_of_a_layer_called_by_keyword():
    torch.manual_seed(0)
    batches = [torch.randn(16, 4) * 3 + 1 for _ in range(3)]
    model = ByKeyword()
    with torch.no_grad():
        h = model.lin(torch.cat(batches)).double()
    bnlab.precise_bn(model, batches)
    torch.testing.assert_close(model.bn.running_mean.double(), h.mean(0), **TOL)
    torch.testing.assert_close(model.bn.running_var.double(), h.var(0, unbiased=False), **TOL)

    model = ByKeyword()
    result = bnlab.adapt(model, batches, method="stats")
    assert result.layers == ["bn", "bn2"]
    torch.testing.assert_close(model.bn.running_mean.double(), h.mean(0), **TOL)

    model = ByKeyword()
    with bnlab.ExactBNAccumulation(model) as acc:
        for x in batches:
            model(x)
        acc.commit()
    torch.testing.assert_close(model.bn.running_mean.double(), 0.1 * h.mean(0), **TOL)

    with bnlab.adapt(model.eval(), method="test_batch", prior=4.0):
        assert torch.isfinite(model(batches[0])).all()
    hazards = {f.code for f in bnlab.doctor(model, example_input=batches[0]).hazards}
    assert hazards == {"bias-before-bn"}  # no train-eval gap; the Linear's bias is found through bn(input=...)


class AuxHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn, self.aux = nn.BatchNorm1d(2), nn.BatchNorm1d(2)

    def forward(self, x):
        return self.bn(x)


def test_unused_layers_are_skipped_with_a_warning_as_update_bn_does():
    torch.manual_seed(0)
    batches = [torch.randn(8, 2) + 2 for _ in range(2)]
    data = torch.cat(batches)
    reference = AuxHead()
    torch.optim.swa_utils.update_bn(batches, reference)  # torch accepts the model; its aux keeps its buffers
    for run in (lambda m: bnlab.precise_bn(m, batches), lambda m: bnlab.adapt(m, batches, method="stats")):
        model = AuxHead()
        with pytest.warns(UserWarning, match="saw no input.*aux"):
            result = run(model)
        torch.testing.assert_close(model.bn.running_mean, data.mean(0), **TOL)
        torch.testing.assert_close(model.bn.running_mean, reference.bn.running_mean, **TOL)
        assert torch.equal(model.aux.running_mean, reference.aux.running_mean)  # untouched, as update_bn
        assert torch.equal(model.aux.running_var, torch.ones(2))
    assert result.layers == ["bn"] and set(result.changed) == {"bn.running_mean", "bn.running_var"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="see data"):
            bnlab.precise_bn(AuxHead(), [])
