"""Sync converters and BN + activation layers: bnlab's converter keeps the activation, and doctor
reports the activation torch's converter leaves behind, unused."""

from __future__ import annotations

import torch
from torch import nn

import bnlab
from zoo import import_timm


def _codes(model) -> list[str]:
    return [f.code for f in bnlab.doctor(model).hazards]


def _fused() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    return bnlab.convert(model, "batchnorm_act")


def test_bnlab_sync_conversion_keeps_the_fused_activation():
    model = _fused().eval()
    assert isinstance(model[1], bnlab.nn.BatchNormAct2d)
    x = torch.randn(4, 3, 8, 8)
    expected = model(x)
    synced = bnlab.convert(model, "sync").eval()
    assert isinstance(synced[1], bnlab.nn.SyncBatchNorm) and isinstance(synced[2], nn.ReLU)
    torch.testing.assert_close(synced(x), expected, rtol=1e-6, atol=1e-6)  # eval: one process suffices
    assert "unused-act-children" not in _codes(synced)


def test_doctor_reports_the_activation_torchs_converter_strands():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), bnlab.nn.BatchNormDropAct2d(8, act=nn.ReLU()))
    assert "unused-act-children" not in _codes(model)  # the layer calls its act
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert type(synced[1]) is nn.SyncBatchNorm and isinstance(synced[1].act, nn.ReLU)  # kept, never called
    finding = next(f for f in bnlab.doctor(synced).hazards if f.code == "unused-act-children")
    assert finding.where == ["1"] and "bnlab.convert(model, 'sync')" in finding.fix


def test_doctor_reports_timms_layer_after_torchs_converter():
    timm = import_timm()
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), timm.layers.BatchNormAct2d(8, act_layer=nn.ReLU))
    assert "unused-act-children" not in _codes(model)
    assert "unused-act-children" in _codes(nn.SyncBatchNorm.convert_sync_batchnorm(model))
