"""Every layer takes the fast backend wherever plain BatchNorm does, and only the primitives it needs.

Each primitive call is recorded on both backends (the numba CPU one and the reference); a training
step (forward, backward) and an eval forward of each variant on an input plain BN runs fast must
never reach the reference. SyncBatchNorm's primitives (local statistics, backward sums) are checked
with two real processes in tests/test_sync_batchnorm.py.
"""

from __future__ import annotations

import pytest
import torch

from bnlab import nn as bnn
from bnlab.core import dispatch
from bnlab.core import math as M

FAST = dispatch.FAST_BACKENDS["cpu"]
PRIMITIVES = (
    "forward",
    "stats",
    "normalize",
    "backward",
    "backward_reduce",
    "backward_elemt",
    "eval",
    "update_running_stats",
)


@pytest.fixture
def calls(monkeypatch):
    """{"fast": [...], "reference": [...]}: the primitives each backend ran, in order."""
    seen = {"fast": [], "reference": []}
    for name, backend in (("fast", FAST), ("reference", dispatch.REFERENCE)):
        for primitive in PRIMITIVES:
            real = getattr(backend, primitive)

            def spy(*args, _real=real, _log=seen[name], _p=primitive):
                _log.append(_p)
                return _real(*args)

            monkeypatch.setattr(backend, primitive, spy)
    return seen


def _masked(c):
    layer = bnn.MaskedBatchNorm1d(c)
    mask = torch.arange(9) < torch.tensor([9, 5, 7, 3, 8, 9])[:, None]  # (6, 9)
    return layer, (lambda m, x: m(x, mask))


# name -> (layer, input shape, channels_last, how to call it)
VARIANTS = {
    "BatchNorm2d": (lambda c: bnn.BatchNorm2d(c), (6, 4, 5, 5), False),
    "BatchNorm2d planes": (lambda c: bnn.BatchNorm2d(c), (3, 4, 9, 9), False),
    "BatchNorm2d channels_last": (lambda c: bnn.BatchNorm2d(c), (6, 4, 5, 5), True),
    "BatchNorm1d (N, C)": (lambda c: bnn.BatchNorm1d(c), (16, 4), False),
    "BatchNorm1d momentum=None": (lambda c: bnn.BatchNorm1d(c, momentum=None), (6, 4, 7), False),
    "GhostBatchNorm2d": (lambda c: bnn.GhostBatchNorm2d(c, virtual_batch_size=2), (6, 4, 5, 5), False),
    "GhostBatchNorm1d uneven": (lambda c: bnn.GhostBatchNorm1d(c, virtual_batch_size=4), (10, 4), False),
    "BatchRenorm2d": (lambda c: bnn.BatchRenorm2d(c, r_max=1.5, d_max=0.5), (6, 4, 5, 5), False),
    "BatchNormAct2d silu": (lambda c: bnn.BatchNormAct2d(c, act="silu"), (6, 4, 5, 5), False),
    "BatchNormAct2d leaky save_output": (
        lambda c: bnn.BatchNormAct2d(c, act="leaky_relu", save_output=True),
        (6, 4, 5, 5),
        True,
    ),
    "MaskedBatchNorm1d": (_masked, (6, 4, 9), False),
}


def _build(name):
    make, shape, channels_last = VARIANTS[name]
    built = make(shape[1])
    layer, call = built if isinstance(built, tuple) else (built, lambda m, x: m(x))
    x = torch.randn(shape) * 2 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return layer, call, x


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_trains_and_evaluates_on_the_fast_backend(name, calls):
    layer, call, x = _build(name)
    x.requires_grad_()
    for _ in range(2):
        call(layer, x).square().sum().backward()
    layer.eval()
    with torch.no_grad():
        call(layer, x)
    assert calls["reference"] == [], f"{name} reached the reference: {calls['reference']}"
    assert "backward" in calls["fast"] and calls["fast"][-1] == "eval"


def test_plain_bn_training_is_one_forward_and_one_backward_call(calls):
    layer, call, x = _build("BatchNorm2d")
    call(layer, x.requires_grad_()).sum().backward()
    assert calls["fast"] == ["forward", "backward"]  # the running-stat update is inside the forward


def test_batch_renorm_computes_the_batch_statistics_once(calls, monkeypatch):
    torch_stats = []
    real = M.batch_stats
    monkeypatch.setattr(M, "batch_stats", lambda x: torch_stats.append(1) or real(x))
    layer, call, x = _build("BatchRenorm2d")
    call(layer, x.requires_grad_()).sum().backward()
    assert calls["fast"] == ["stats", "normalize", "update_running_stats", "backward"]
    assert torch_stats == []


def test_frozen_bn_evaluates_on_the_fast_backend_with_and_without_a_graph(calls):
    frozen = bnn.FrozenBatchNorm2d(4)
    with torch.no_grad():
        frozen.weight.uniform_(0.5, 2.0)
        frozen.running_var.uniform_(0.5, 2.0)
    x = torch.randn(6, 4, 5, 5)
    with torch.no_grad():
        frozen(x)
    assert calls["fast"] == ["eval"] and calls["reference"] == []
    # Recorded by autograd, eval runs the same kernel (bnlab.core.autograd.BatchNormEval: the same bits
    # with grad mode on or off) and differentiates in closed form: d(sum y)/dx = gamma / sqrt(var + eps).
    frozen(x.requires_grad_()).sum().backward()
    plain = bnn.BatchNorm2d(4).eval()
    plain(x).sum().backward()
    assert calls["fast"] == ["eval", "eval", "eval"] and calls["reference"] == []
    scale = frozen.weight / (frozen.running_var + frozen.eps).sqrt() + 1 / (1 + plain.eps) ** 0.5
    torch.testing.assert_close(x.grad, scale.view(1, 4, 1, 1).expand_as(x), rtol=1e-6, atol=1e-6)


def test_bn_act_runs_the_fused_kernels(monkeypatch):
    from bnlab.kernels import numba_cpu

    tags = []
    for entry, act_arg in (("forward_rows", 5), ("backward_rows", 8)):  # where each takes the act tag
        real = getattr(numba_cpu, entry)

        def spy(*args, _real=real, _i=act_arg):
            tags.append(args[_i])
            return _real(*args)

        monkeypatch.setattr(numba_cpu, entry, spy)
    x = torch.randn(6, 4, 5, 5, requires_grad=True)
    bnn.BatchNormAct2d(4, act="silu")(x).sum().backward()
    assert [t.dtype for t in tags] == [numba_cpu.ACT_TAGS["silu"].dtype] * 2
