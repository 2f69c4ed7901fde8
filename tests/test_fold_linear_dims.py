"""fold and doctor: Linear -> BN only where the Linear's output features are the dim BN normalizes.

A Linear acts on the last dim; BN normalizes dim 1. On an (N, C, L) input with L == C the pair has
matching sizes, yet folding changed the output by up to 4.6 (silently), and doctor called the
Linear's bias cancelled although BN does not subtract it there. The reference is the unfolded model.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bnlab
from bnlab.surgery.fold import find_pairs


def _model(bn_cls=nn.BatchNorm1d) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), bn_cls(6), nn.ReLU())
    with torch.no_grad():
        bn = model[1]
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    return model.eval()


@pytest.mark.parametrize("bn_cls", [nn.BatchNorm1d, bnlab.nn.BatchNorm1d])
def test_linear_on_the_last_dim_of_a_3d_input_is_not_folded(bn_cls):
    model = _model(bn_cls)
    x = torch.randn(4, 6, 6)  # (N, C, L) with L == C: sizes match, dims do not
    folded, report = fold_quietly(model, x)
    assert report.pairs == [] and report.left == []
    assert report.max_abs_diff == 0.0
    torch.testing.assert_close(folded(x), model(x), rtol=0, atol=0)


def fold_quietly(model, x):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return bnlab.fold(model, x, report=True)


@pytest.mark.parametrize("bn_cls", [nn.BatchNorm1d, bnlab.nn.BatchNorm1d])
def test_linear_on_a_2d_input_is_folded(bn_cls):
    model = _model(bn_cls)
    x = torch.randn(8, 6)
    folded, report = fold_quietly(model, x)
    assert report.pairs == [("0", "1")]
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


def test_without_an_example_the_linear_pair_is_left_with_a_warning():
    with pytest.warns(UserWarning, match="left unfolded: 0 -> 1: a Linear acts on the last dim"):
        folded, report = bnlab.fold(_model(), report=True)
    assert report.pairs == [] and report.left == ["0 -> 1"]
    assert isinstance(folded[1], nn.BatchNorm1d)
    conv = nn.Sequential(nn.Conv1d(3, 6, 1), nn.BatchNorm1d(6)).eval()
    assert find_pairs(conv) == [("0", "1")]  # a convolution's channels are dim 1: no example needed


def test_doctor_bias_check_follows_the_same_rule():
    model = _model()
    on_3d = bnlab.doctor(model, example_input=torch.randn(4, 6, 6))
    assert "bias-before-bn" not in {f.code for f in on_3d.findings}
    assert "fusable" not in {f.code for f in on_3d.findings}
    on_2d = bnlab.doctor(model, example_input=torch.randn(8, 6))
    assert "bias-before-bn" in {f.code for f in on_2d.hazards}


class _ByKeyword(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.bn = nn.Linear(4, 3), nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(input=self.lin(x))


def test_a_bn_called_by_keyword_is_found_by_fold_and_doctor():
    """The traced graph's neighbour of `bn(input=x)` is in the call's keywords (it was not looked at)."""
    model = _ByKeyword().eval()
    with torch.no_grad():
        model.bn.running_var.fill_(2.0)
    x = torch.randn(5, 4)
    folded, report = fold_quietly(model, x)
    assert report.pairs == [("lin", "bn")]
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
    assert {"bias-before-bn", "fusable"} <= {f.code for f in bnlab.doctor(model, example_input=x).findings}
