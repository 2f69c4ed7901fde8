"""One swap routine (bnlab.nn.swap) behind every conversion: the new layer holds the old layer's
tensors themselves, as torch's SyncBatchNorm.convert_sync_batchnorm does -- checked against torch's
own function, and for every conversion bnlab offers."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

import bnlab
from bnlab.nn import swap as swap_module
from bnlab.surgery import convert
from bnlab.surgery.convert import TARGETS
from bnlab.surgery.sources import SOURCES

STATE = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _trained_bn(cls=nn.BatchNorm2d, **kw):
    torch.manual_seed(0)
    bn = cls(4, **kw)
    bn.train()
    with torch.no_grad():
        for i in range(2):
            bn(torch.randn(6, 4, 3, 3) + i)
    return bn


def _held(m, name):
    return m._parameters.get(name) if name in m._parameters else m._buffers.get(name)


def test_bnlab_and_torch_convert_sync_batchnorm_share_the_same_tensors():
    torch_bn, bnlab_bn = _trained_bn(), _trained_bn()
    torch_old = {n: _held(torch_bn, n) for n in STATE}
    bnlab_old = {n: _held(bnlab_bn, n) for n in STATE}
    theirs = nn.SyncBatchNorm.convert_sync_batchnorm(torch_bn)
    ours = bnlab.nn.SyncBatchNorm.convert_sync_batchnorm(bnlab_bn)
    for name in STATE:  # torch's behaviour, and bnlab's
        assert _held(theirs, name) is torch_old[name], name
        assert _held(ours, name) is bnlab_old[name], name
    back = bnlab.nn.revert_sync_batchnorm(ours)
    assert all(_held(back, n) is bnlab_old[n] for n in STATE)


@pytest.mark.parametrize(
    "to, options", [("bnlab", {}), ("torch", {}), ("sync", {}), ("ghost", {"virtual_batch_size": 2})]
)
def test_every_bn_to_bn_target_shares_parameters_and_buffers(to, options):
    bn = _trained_bn()
    old = {n: _held(bn, n) for n in STATE}
    new = convert(bn, to, inplace=True, **options)
    assert all(_held(new, n) is old[n] for n in STATE)


def test_frozen_holds_the_parameters_storage_and_unfreezing_restores_the_parameters():
    bn = _trained_bn()
    bn.bias.requires_grad_(False)
    weight = bn.weight
    frozen = convert(bn, "frozen", inplace=True)
    assert list(frozen.parameters()) == [] and frozen.weight.data_ptr() == weight.data_ptr()
    assert frozen.running_var is bn.running_var
    back = convert(frozen, "torch", inplace=True)
    assert back.weight.data_ptr() == weight.data_ptr() and isinstance(back.weight, nn.Parameter)
    assert back.weight.requires_grad and not back.bias.requires_grad  # as before freezing
    assert back.num_batches_tracked is bn.num_batches_tracked and back.momentum == bn.momentum


def test_fused_layer_shares_the_bn_state():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), _trained_bn(), nn.ReLU())
    old = {n: _held(model[1], n) for n in STATE}
    fused = convert(model, "batchnorm_act", inplace=True)
    assert type(fused[1]) is bnlab.nn.BatchNormAct2d
    assert all(_held(fused[1], n) is old[n] for n in STATE)


def test_missing_tensors_get_the_new_layers_defaults_on_the_old_device_and_dtype():
    bn = nn.BatchNorm1d(3, affine=False, dtype=torch.float64)
    frozen = bnlab.nn.FrozenBatchNorm1d.from_batchnorm(bn)
    assert torch.equal(frozen.weight, torch.ones(3, dtype=torch.float64))
    assert torch.equal(frozen.bias, torch.zeros(3, dtype=torch.float64))


def test_every_conversion_runs_the_one_swap_routine(monkeypatch):
    seen = []
    real = swap_module.swap

    def spy(old, new):
        seen.append((type(old).__name__, type(new).__name__))
        return real(old, new)

    for name in ("bnlab.nn.frozen", "bnlab.nn.sync_batchnorm", "bnlab.surgery.convert", "bnlab.surgery.fuse_act"):
        monkeypatch.setattr(importlib.import_module(name), "swap", spy)
    for to, options in (
        ("bnlab", {}),
        ("torch", {}),
        ("sync", {}),
        ("ghost", {"virtual_batch_size": 2}),
        ("frozen", {}),
        ("groupnorm", {"num_groups": 2}),
    ):
        seen.clear()
        convert(_trained_bn(bnlab.nn.BatchNorm2d if to == "torch" else nn.BatchNorm2d), to, **options)
        assert len(seen) == 1, to
    seen.clear()
    convert(nn.Sequential(_trained_bn(), nn.ReLU()), "batchnorm_act")
    bnlab.nn.revert_sync_batchnorm(bnlab.nn.SyncBatchNorm.convert_sync_batchnorm(_trained_bn()))
    assert len(seen) == 3


@pytest.mark.parametrize(
    "source",
    sorted(SOURCES, key=lambda c: (c.__module__, c.__name__)),
    ids=lambda c: f"{c.__module__.split('.')[0]}.{c.__name__}",
)
@pytest.mark.parametrize("to", [name for name, t in TARGETS.items() if t.build is not None])
def test_the_target_table_converts_every_source(source, to):
    dims = SOURCES[source]
    kw = {"virtual_batch_size": 2} if source.__name__.startswith("Ghost") else {}
    layer = source(4, **kw) if "Frozen" not in source.__name__ else source(4)
    options = {"virtual_batch_size": 2} if to == "ghost" else {}
    new = convert(layer, to, dims=dims or 2, **options)
    target = TARGETS[to]
    assert not target.produces or type(new) in target.produces
    shape = {1: (6, 4), 2: (6, 4, 3, 3), 3: (2, 4, 3, 3, 3)}[dims or 2]
    new.eval()(torch.randn(shape))  # a working layer
