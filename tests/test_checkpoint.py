"""Activation checkpointing (``torch.utils.checkpoint``) updates bnlab's running statistics as it
updates torch's: on the forward and again on the recompute, on the kernels and on the reference.

The reference for each case is the same model with torch's BatchNorm, checkpointed the same way.
float64 models (their buffers then agree to rounding: 1e-12); the autocast case is float32 under
bfloat16 autocast, where both models see the same bfloat16 convolution outputs: buffers to 1e-5,
gradients (computed from bfloat16 values, rounded differently by the two backwards) to 1.6e-2 of
their largest magnitude, bfloat16's resolution twice over.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint, checkpoint_sequential, set_checkpoint_early_stop

import bnlab
from bnlab.core import dispatch
from zoo import import_torchvision

F64 = {"rtol": 1e-12, "atol": 1e-12}
AUTOCAST = {"rtol": 1e-5, "atol": 1e-5}


def _segment(momentum, act: bool, dtype) -> nn.Module:
    """conv -> BN (-> ReLU): the BN's autograd Function is the segment's last saved tensor
    without the activation, the case early stop cuts short."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8, momentum=momentum)]
    if act:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers).to(dtype)


def _train_checkpointed(model, batches, reentrant: bool, early_stop: bool, autocast: bool):
    with set_checkpoint_early_stop(early_stop):
        for x in batches:
            x = x.clone().requires_grad_()  # reentrant checkpointing needs an input that requires grad
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                y = checkpoint(model, x, use_reentrant=reentrant)
            y.float().square().sum().backward()


def _bn_layers(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _assert_same_training(ours, theirs, tol, grad_rtol: float | None = None):
    """Buffers within ``tol``; gradients within ``tol``, or within ``grad_rtol`` times the largest
    gradient magnitude of each parameter when given."""
    for a, b in zip(_bn_layers(ours), _bn_layers(theirs), strict=True):
        assert int(a.num_batches_tracked) == int(b.num_batches_tracked)
        torch.testing.assert_close(a.running_mean, b.running_mean, **tol)
        torch.testing.assert_close(a.running_var, b.running_var, **tol)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        if grad_rtol is None:
            torch.testing.assert_close(p.grad, q.grad, **tol, msg=name)
        else:
            assert (p.grad - q.grad).abs().max() <= grad_rtol * q.grad.abs().max(), name


@pytest.mark.parametrize("fast", [True, False], ids=["kernels", "reference"])
@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
@pytest.mark.parametrize("early_stop", [True, False], ids=["early-stop", "full-recompute"])
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
@pytest.mark.parametrize("fused_act", [False, True], ids=["bn", "bn-act"])
def test_checkpointed_running_statistics_equal_torchs(fast, reentrant, early_stop, momentum, fused_act):
    theirs = _segment(momentum, fused_act, torch.float64)
    ours = bnlab.convert(copy.deepcopy(theirs), "batchnorm_act" if fused_act else "bnlab")
    assert isinstance(ours[1], bnlab.nn.BatchNormAct2d if fused_act else bnlab.nn.BatchNorm2d)
    torch.manual_seed(1)
    batches = [torch.randn(4, 3, 6, 6, dtype=torch.float64) * (i + 1) + i for i in range(3)]
    assert not fast or dispatch.why_reference(batches[0]) is None  # the kernels run this case
    context = contextlib.nullcontext() if fast else dispatch.reference_only()
    _train_checkpointed(theirs, batches, reentrant, early_stop, autocast=False)
    with context:
        _train_checkpointed(ours, batches, reentrant, early_stop, autocast=False)
    assert int(theirs[1].num_batches_tracked) == 6  # each batch counted on the forward and the recompute
    _assert_same_training(ours, theirs, F64)


@pytest.mark.parametrize("early_stop", [True, False], ids=["early-stop", "full-recompute"])
def test_checkpointed_running_statistics_under_cpu_autocast_equal_torchs(early_stop):
    theirs = _segment(0.1, False, torch.float32)
    ours = bnlab.convert(copy.deepcopy(theirs), "bnlab")
    torch.manual_seed(1)
    batches = [torch.randn(4, 3, 6, 6) * (i + 1) + i for i in range(3)]
    _train_checkpointed(theirs, batches, False, early_stop, autocast=True)
    _train_checkpointed(ours, batches, False, early_stop, autocast=True)
    _assert_same_training(ours, theirs, AUTOCAST, grad_rtol=1.6e-2)


@pytest.mark.parametrize("layer", ["ghost", "renorm"])
def test_checkpointed_variants_update_as_often_as_uncheckpointed_ones(layer):
    """No torch counterpart: the reference is the same layer run twice (the forward and the
    recompute), once without checkpointing."""
    torch.manual_seed(0)
    bn = bnlab.nn.GhostBatchNorm2d(8, 2) if layer == "ghost" else bnlab.nn.BatchRenorm2d(8, r_max=3.0, d_max=5.0)
    checkpointed = nn.Sequential(nn.Conv2d(3, 8, 3), bn).double()
    twice = copy.deepcopy(checkpointed)
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    checkpoint(checkpointed, x, use_reentrant=False).sum().backward()
    twice(x)
    twice(x).sum().backward()
    _assert_same_training(checkpointed, twice, F64)


@pytest.mark.parametrize("fast", [True, False], ids=["kernels", "reference"])
def test_checkpoint_sequential_over_mobilenet_v3_small_matches_torch(fast):
    tv = import_torchvision()
    torch.manual_seed(0)
    theirs = tv.models.mobilenet_v3_small(num_classes=10).double().train()
    ours = bnlab.convert(copy.deepcopy(theirs), "bnlab")
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, requires_grad=True)
    context = contextlib.nullcontext() if fast else dispatch.reference_only()
    for model, ctx in ((theirs, contextlib.nullcontext()), (ours, context)):
        with ctx:
            checkpoint_sequential(model.features, 4, x, use_reentrant=False).square().sum().backward()
    counts = [int(m.num_batches_tracked) for m in _bn_layers(theirs)]
    assert len(counts) == 34 and counts.count(2) >= 20  # the last segment runs without checkpointing
    for a, b in zip(_bn_layers(ours), _bn_layers(theirs), strict=True):
        assert int(a.num_batches_tracked) == int(b.num_batches_tracked)
        torch.testing.assert_close(a.running_mean, b.running_mean, **F64)
        torch.testing.assert_close(a.running_var, b.running_var, **F64)
    # Gradients to 1e-12 of the model's largest: several BN biases have a gradient that is 0 in
    # exact arithmetic (1e-14 of rounding either way), so no per-parameter relative tolerance.
    scale = max(q.grad.abs().max() for q in theirs.features.parameters())
    for (name, p), q in zip(ours.features.named_parameters(), theirs.features.parameters(), strict=True):
        assert (p.grad - q.grad).abs().max() <= 1e-12 * scale, name
