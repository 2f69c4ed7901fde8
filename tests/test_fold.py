"""bnlab.fold: the folded model computes what the model with eval-mode BN computes."""

import pytest
import torch
from torch import nn

import bnlab
from bnlab.surgery.fold import bench_models, find_pairs, fold, fold_weights

# float64 throughout: folding reorders a few multiplications, nothing more.
TOL = dict(rtol=1e-10, atol=1e-10)


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "running_var") and m.running_var is not None:
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen, dtype=torch.float64))
                m.running_var.copy_(torch.rand(n, generator=gen, dtype=torch.float64) + 0.2)
                if m.weight is not None:
                    m.weight.copy_(torch.randn(n, generator=gen, dtype=torch.float64))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(n, generator=gen, dtype=torch.float64))
    return model.eval()


LAYERS = [
    (lambda: nn.Conv1d(4, 6, 3, bias=False), 1, (5, 4, 9)),
    (lambda: nn.Conv2d(4, 6, 3, groups=2), 2, (5, 4, 7, 7)),
    (lambda: nn.Conv3d(4, 6, 2, stride=2), 3, (2, 4, 4, 6, 4)),
    (lambda: nn.ConvTranspose1d(4, 6, 3, stride=2), 1, (5, 4, 9)),
    (lambda: nn.ConvTranspose2d(4, 6, 3, groups=2, bias=False), 2, (5, 4, 5, 5)),
    (lambda: nn.ConvTranspose3d(6, 9, 2, groups=3, stride=2), 3, (2, 6, 3, 3, 3)),
    (lambda: nn.Linear(4, 6), 1, (5, 4)),
]


@pytest.mark.parametrize("make_layer,dims,shape", LAYERS)
@pytest.mark.parametrize("bn_lib", ["torch", "bnlab"])
def test_folded_layer_equals_layer_then_eval_bn(make_layer, dims, shape, bn_lib):
    torch.manual_seed(0)
    layer = make_layer().double()
    out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    bn_cls = {"torch": nn, "bnlab": bnlab.nn}[bn_lib]
    bn = getattr(bn_cls, f"BatchNorm{dims}d")(out, eps=1e-3, dtype=torch.float64)
    model = _randomize_bn(nn.Sequential(layer, bn, nn.ReLU()))
    x = torch.randn(shape, dtype=torch.float64)
    folded, rep = fold(model, x, report=True)
    assert rep.pairs == [("0", "1")] and isinstance(folded[1], nn.Identity)
    torch.testing.assert_close(folded(x), model(x), **TOL)
    assert rep.max_abs_diff < 1e-10


def test_fold_weights_matches_torch_fusion_for_ungrouped_layers():
    torch.manual_seed(0)
    for transpose, w in ((False, torch.randn(6, 4, 3, 3)), (True, torch.randn(4, 6, 3, 3))):
        b, rm, rv, g, beta = torch.randn(6), torch.randn(6), torch.rand(6) + 0.1, torch.randn(6), torch.randn(6)
        ours = fold_weights(w, b, rm, rv, 1e-5, g, beta, transpose=transpose)
        ref = torch.nn.utils.fusion.fuse_conv_bn_weights(w, b, rm, rv, 1e-5, g, beta, transpose=transpose)
        torch.testing.assert_close(ours[0], ref[0].detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ours[1], ref[1].detach(), rtol=1e-6, atol=1e-6)


class Net(nn.Module):
    """BN called from forward (not a Sequential), plus a branch that must not be folded."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.skip = nn.Conv2d(4, 4, 1)
        self.bn_skip = nn.BatchNorm2d(4)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        s = self.skip(h)
        return self.bn_skip(s) + s  # s feeds the BN and the sum: not foldable


def test_fx_trace_finds_pairs_outside_sequential_and_skips_shared_outputs():
    model = _randomize_bn(Net().double())
    assert find_pairs(model) == [("conv", "bn")]
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    folded = fold(model)
    assert isinstance(folded.bn, nn.Identity) and isinstance(folded.bn_skip, nn.BatchNorm2d)
    torch.testing.assert_close(folded(x), model(x), **TOL)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            return self.body(x)
        return self.body(-x)


def test_untraceable_model_falls_back_to_sequential_neighbours():
    model = _randomize_bn(Untraceable().double())
    assert find_pairs(model) == [("body.0", "body.1")]
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(fold(model)(x), model(x), **TOL)


def test_fold_refuses_training_mode_and_leaves_the_original_untouched():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="expected the model in eval mode"):
        fold(model)
    model.eval()
    folded = fold(model)
    assert isinstance(model[1], nn.BatchNorm2d) and isinstance(folded[1], nn.Identity)


def test_untracked_bn_and_channel_mismatch_are_not_folded():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    assert find_pairs(model) == []


def test_float16_overflow_warns():
    model = _randomize_bn(nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).double())
    with torch.no_grad():
        model[1].weight.fill_(1e6)
    with pytest.warns(UserWarning, match="float16 range"):
        _, rep = fold(model, torch.randn(4, 3, dtype=torch.float64), report=True)  # a 2D input: foldable
    assert rep.float16_overflow == ["0"]


@pytest.mark.parametrize("bn", ["torch", "bnlab"])
def test_bench_models_fold_every_bn_and_agree(bn):
    model, folded, x = bench_models(batch=4, channels=8, size=16, bn=bn)
    assert sum(isinstance(m, (nn.BatchNorm2d, bnlab.nn.BatchNorm2d)) for m in model.modules()) == 3
    assert not any(isinstance(m, (nn.BatchNorm2d, bnlab.nn.BatchNorm2d)) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)  # float32
