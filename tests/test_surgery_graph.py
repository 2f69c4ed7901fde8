"""One graph helper (bnlab.surgery.graph.bn_neighbours) finds the layer before and after each BN for
fold, doctor and the BN + activation fusion; doctor's checks are small functions."""

from __future__ import annotations

import importlib

import torch
from torch import nn

import bnlab
from bnlab.surgery import doctor as doctor_fn
from bnlab.surgery.fuse_act import FusedActivation
from bnlab.surgery.graph import bn_neighbours
from bnlab.surgery.sources import is_batchnorm


class Block(nn.Module):
    """conv -> BN -> ReLU in a forward of its own (not an nn.Sequential), plus a shared ReLU."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.shared = nn.ReLU()

    def forward(self, x):
        y = self.act(self.bn(self.conv(x)))
        return self.shared(self.bn2(self.conv2(y))) + self.shared(y)  # shared: called twice


def test_neighbours_from_the_trace():
    nbs = bn_neighbours(Block(), is_batchnorm)
    assert nbs["bn"].prev == "conv" and nbs["bn"].next == ["act"] and nbs["bn"].called_once("conv", "bn", "act")
    assert nbs["bn2"].next == ["shared"] and not nbs["bn2"].called_once("shared")
    assert nbs["bn"].traced


def test_fold_doctor_and_fusion_all_ask_the_one_helper(monkeypatch):
    calls = []
    real = bn_neighbours
    for name in ("bnlab.surgery.fold", "bnlab.surgery.doctor", "bnlab.surgery.fuse_act"):
        module = importlib.import_module(name)
        monkeypatch.setattr(module, "bn_neighbours", lambda *a, _n=name: calls.append(_n) or real(*a))
    model = Block().eval()
    bnlab.fold(model)
    doctor_fn(model)
    bnlab.convert(model, "batchnorm_act")
    assert {"bnlab.surgery.fold", "bnlab.surgery.doctor", "bnlab.surgery.fuse_act"} <= set(calls)


def test_fusion_follows_the_data_flow_outside_sequential_and_skips_a_shared_activation():
    torch.manual_seed(0)
    model = Block()
    fused = bnlab.convert(model, "batchnorm_act")
    assert type(fused.bn) is bnlab.nn.BatchNormAct2d and isinstance(fused.act, FusedActivation)
    assert type(fused.bn2) is nn.BatchNorm2d and type(fused.shared) is nn.ReLU  # shared ReLU: left alone
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-6)
    back = bnlab.convert(fused, "torch")
    assert type(back.bn) is nn.BatchNorm2d and type(back.act) is nn.ReLU
    torch.testing.assert_close(back(x), model(x), rtol=0, atol=0)


def test_each_doctor_check_is_a_function_of_the_model_returning_one_finding_or_none():
    doctor_module = importlib.import_module("bnlab.surgery.doctor")
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.99), nn.ReLU())
    bns = {"1": model[1]}
    ctx = doctor_module._Model(model, bns, bn_neighbours(model, is_batchnorm), dict(model.named_modules()))
    found = {check.__name__: check(ctx) for check in doctor_module.STATIC_CHECKS}
    assert found["_bias_before_bn"].code == "bias-before-bn"
    assert found["_decay_like_momentum"].code == "decay-like-momentum"
    assert found["_dead_channels"] is None and found["_frozen_bn_training"] is None
    args = (torch.randn(1, 3, 5, 5),)
    assert doctor_module._batch_size_1(ctx, args).code == "batch-size-1"
    assert {f.code for f in doctor_fn(model, args[0]).findings} >= {c.code for c in found.values() if c}
