"""``torch.jit.script`` of models with bnlab's layers: the scripted layer runs bnlab's math.

Each test scripts a real model (a small CNN, torchvision's resnet18 converted with
``bnlab.convert``; random weights) and compares it with the same model in eager mode -- bnlab's
layers (fast kernels) and torch's own model as the independent reference. Tolerance: float32,
``atol = rtol = 1e-5`` per layer-sized output, 1e-4 through resnet18's 20 layers (the scripted
layer computes in torch operations, the eager one in the compiled kernels: summation orders differ).
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import bnlab
from zoo import import_torchvision

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script is deprecated in 2.13

TOL = dict(atol=1e-5, rtol=1e-5)
DEEP_TOL = dict(atol=1e-4, rtol=1e-4)


def _small_cnn(momentum: float | None = 0.1) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8, momentum=momentum),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8, momentum=momentum),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
        nn.BatchNorm1d(4, momentum=momentum),
    )


def _bn_buffers(model: nn.Module) -> list[torch.Tensor]:
    return [
        b
        for name, b in model.named_buffers()
        if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
    ]


def _assert_same_buffers(a: nn.Module, b: nn.Module, tol=TOL) -> None:
    bufs_a, bufs_b = _bn_buffers(a), _bn_buffers(b)
    assert len(bufs_a) == len(bufs_b) > 0
    for x, y in zip(bufs_a, bufs_b):
        torch.testing.assert_close(x, y, **tol)


def _triple(model: nn.Module):
    """torch's model, the bnlab eager model, and bnlab's model scripted (each with its own state)."""
    eager = bnlab.convert(model, "bnlab")
    return model, eager, torch.jit.script(copy.deepcopy(eager))


def test_scripted_layer_runs_bnlabs_forward_not_torchs_batch_norm():
    scripted = torch.jit.script(bnlab.nn.BatchNorm2d(8))
    graph = str(scripted.inlined_graph)
    assert "batch_norm" not in graph  # neither aten::batch_norm nor native_batch_norm
    assert "aten::rsqrt" in graph and "aten::lerp" in graph  # bnlab's math: normalize, running average
    assert scripted.original_name == "BatchNorm2d"


@pytest.mark.parametrize("momentum", [0.1, None])
def test_scripted_small_cnn_matches_eager_in_training_and_eval(momentum):
    torch_model, eager, scripted = _triple(_small_cnn(momentum))
    for step in range(3):  # several steps: momentum=None averages 1/num_batches_tracked
        x = torch.randn(6, 3, 8, 8) * 2 + 0.5
        y_ref, y_eager, y_script = torch_model(x), eager(x), scripted(x)
        torch.testing.assert_close(y_script, y_eager, **TOL)
        torch.testing.assert_close(y_script, y_ref, **TOL)
    _assert_same_buffers(scripted, eager)
    _assert_same_buffers(scripted, torch_model)
    assert all(int(b) == 3 for n, b in scripted.named_buffers() if n.endswith("num_batches_tracked"))
    assert not torch.equal(getattr(scripted, "1").running_var, torch.ones(8))  # the statistics did move

    for m in (torch_model, eager, scripted):
        m.eval()
    x = torch.randn(5, 3, 8, 8)
    torch.testing.assert_close(scripted(x), eager(x), **TOL)
    torch.testing.assert_close(scripted(x), torch_model(x), **TOL)
    _assert_same_buffers(scripted, eager)  # eval leaves the statistics alone


@pytest.mark.parametrize("affine,track", [(False, True), (True, False), (False, False)])
def test_scripted_layer_without_parameters_or_running_statistics_matches_torch(affine, track):
    torch_bn, eager, scripted = _triple(nn.BatchNorm1d(6, affine=affine, track_running_stats=track))
    for mode in ("train", "eval"):  # without running statistics, eval normalizes with the batch's
        x = torch.randn(5, 6, 7) * 3 - 1
        y = scripted(x)
        torch.testing.assert_close(y, eager(x), **TOL)
        torch.testing.assert_close(y, torch_bn(x), **TOL)
        if track:
            _assert_same_buffers(scripted, torch_bn)
        for m in (torch_bn, eager, scripted):
            m.eval()


def test_scripted_gradients_match_eager():
    # no parameter ahead of a BN that cancels it (a bias before BN has gradient 0: only rounding to compare)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    _, eager, scripted = _triple(model)
    x = torch.randn(6, 3, 8, 8)
    xe, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
    eager(xe).square().sum().backward()
    scripted(xs).square().sum().backward()
    torch.testing.assert_close(xs.grad, xe.grad, **TOL)
    for (name, pe), ps in zip(eager.named_parameters(), scripted.parameters()):
        torch.testing.assert_close(ps.grad, pe.grad, **TOL, msg=name)


def test_scripted_layer_keeps_channels_last_as_torch_does():
    torch_bn, _, scripted = _triple(nn.BatchNorm2d(8))
    x = torch.randn(4, 8, 5, 5).to(memory_format=torch.channels_last)
    y = scripted(x)
    torch.testing.assert_close(y, torch_bn(x), **TOL)
    assert y.stride() == torch_bn(x).stride()


def test_scripted_layer_checks_its_input_and_hyperparameters():
    scripted = torch.jit.script(bnlab.nn.BatchNorm2d(8))
    with pytest.raises(torch.jit.Error, match="expected input with 8 channels"):
        scripted(torch.randn(2, 4, 3, 3))
    with pytest.raises(torch.jit.Error, match=r"expected 4D input \(got 3D input\)"):
        scripted(torch.randn(2, 8, 3))
    with pytest.raises(torch.jit.Error, match="more than 1 value per channel"):
        scripted(torch.randn(1, 8, 1, 1))
    scripted = torch.jit.script(bnlab.nn.BatchNorm2d(8, eps=0.0))  # torch checks eps at the forward, so does bnlab
    scripted.eval()(torch.randn(2, 8, 3, 3))  # eps = 0 is allowed in eval
    with pytest.raises(torch.jit.Error, match="eps must be positive during training"):
        scripted.train()(torch.randn(2, 8, 3, 3))
    scripted = torch.jit.script(bnlab.nn.BatchNorm2d(8, momentum=1.5))
    with pytest.raises(torch.jit.Error, match=r"expected momentum in \[0, 1\]"):
        scripted(torch.randn(2, 8, 3, 3))


def test_scripted_resnet18_matches_eager_and_torch():
    tv = import_torchvision()
    torch.manual_seed(0)
    torch_model, eager, scripted = _triple(tv.models.resnet18(num_classes=10))
    assert sum(isinstance(m, bnlab.nn.BatchNorm2d) for m in eager.modules()) == 20
    for mode in ("train", "eval"):
        x = torch.randn(4, 3, 32, 32)
        y_ref, y_eager, y_script = torch_model(x), eager(x), scripted(x)
        torch.testing.assert_close(y_script, y_eager, **DEEP_TOL)
        torch.testing.assert_close(y_script, y_ref, **DEEP_TOL)
        _assert_same_buffers(scripted, eager, DEEP_TOL)
        _assert_same_buffers(scripted, torch_model, DEEP_TOL)
        for m in (torch_model, eager, scripted):
            m.eval()


def test_scripted_model_saves_and_loads_in_training_and_eval():
    torch_model, eager, scripted = _triple(_small_cnn(momentum=None))
    x = torch.randn(6, 3, 8, 8)
    scripted(x), eager(x)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    assert loaded.training
    _assert_same_buffers(loaded, scripted)
    x = torch.randn(6, 3, 8, 8) + 1
    torch.testing.assert_close(loaded(x), eager(x), **TOL)  # training: the loaded model updates its buffers
    _assert_same_buffers(loaded, eager)
    assert int(getattr(loaded, "1").num_batches_tracked) == 2
    loaded.eval(), eager.eval()
    x = torch.randn(3, 3, 8, 8)
    torch.testing.assert_close(loaded(x), eager(x), **TOL)


@pytest.mark.parametrize("act", ["identity", "relu", "leaky_relu", "silu"])
def test_scripted_bn_activation_layer_matches_eager(act):
    torch.manual_seed(1)
    eager = bnlab.nn.BatchNormAct2d(8, act=act, negative_slope=0.2)
    nn.init.normal_(eager.weight), nn.init.normal_(eager.bias)
    scripted = torch.jit.script(copy.deepcopy(eager))
    for _ in range(2):
        x = torch.randn(4, 8, 5, 5)
        torch.testing.assert_close(scripted(x), eager(x), **TOL)
    _assert_same_buffers(scripted, eager)
    eager.eval(), scripted.eval()
    x = torch.randn(4, 8, 5, 5)
    y = scripted(x)
    torch.testing.assert_close(y, eager(x), **TOL)
    if act == "relu":
        assert (y >= 0).all() and (y == 0).any()  # the activation ran


def test_scripted_frozen_model_matches_eager_and_torchs_eval():
    torch_model = _small_cnn()
    torch_model(torch.randn(6, 3, 8, 8) * 2 + 1)  # running statistics that are not the defaults
    frozen = bnlab.convert(torch_model, "frozen")
    assert sum(isinstance(m, bnlab.nn.FrozenBatchNorm2d) for m in frozen.modules()) == 2
    scripted = torch.jit.script(frozen)  # train mode: a frozen layer is its eval map in every mode
    x = torch.randn(4, 3, 8, 8).to(memory_format=torch.channels_last)
    y = scripted(x)
    torch.testing.assert_close(y, frozen(x), **TOL)
    torch.testing.assert_close(y, torch_model.eval()(x), **TOL)
    _assert_same_buffers(scripted, frozen)


@pytest.mark.parametrize(
    "make",
    [
        lambda: bnlab.nn.GhostBatchNorm2d(8, virtual_batch_size=2),
        lambda: bnlab.nn.BatchRenorm2d(8),
        lambda: bnlab.nn.MaskedBatchNorm1d(8),
        lambda: bnlab.nn.SyncBatchNorm(8),
        lambda: bnlab.nn.BatchNorm2d(8).skip_nonfinite_updates(),
    ],
    ids=["ghost", "renorm", "masked", "sync", "nonfinite-guard"],
)
def test_variants_whose_training_is_not_plain_bn_refuse_to_be_scripted(make):
    model = nn.Sequential(nn.Conv2d(8, 8, 1), make())
    with pytest.raises(TypeError, match="cannot be scripted|non-finite guard"):
        torch.jit.script(model)
