"""bnlab's layers are batch norm to every tool that looks for one (torch, torchvision, timm).

Each test runs the real tool on a model converted to bnlab and checks the tool did its job (the
state it should change changed, the output it should produce matches torch's model).
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import bnlab
from zoo import import_timm, import_torchvision


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
        nn.BatchNorm1d(4),
    )


def _pair():
    model = _small_cnn()
    return model, bnlab.convert(model, "bnlab")


def test_layers_are_instances_of_torchs_batch_norm_classes():
    for cls, base in (
        (bnlab.nn.BatchNorm1d, nn.BatchNorm1d),
        (bnlab.nn.BatchNorm2d, nn.BatchNorm2d),
        (bnlab.nn.BatchNorm3d, nn.BatchNorm3d),
        (bnlab.nn.GhostBatchNorm2d, nn.BatchNorm2d),
        (bnlab.nn.BatchRenorm2d, nn.BatchNorm2d),
        (bnlab.nn.BatchNormAct2d, nn.BatchNorm2d),
        (bnlab.nn.MaskedBatchNorm1d, nn.BatchNorm1d),
    ):
        assert issubclass(cls, base) and issubclass(cls, nn.modules.batchnorm._BatchNorm)
    # SyncBatchNorm is batch norm to every tool but not torch's SyncBatchNorm, which DDP refuses on CPU
    assert issubclass(bnlab.nn.SyncBatchNorm, nn.modules.batchnorm._BatchNorm)
    assert not issubclass(bnlab.nn.SyncBatchNorm, nn.SyncBatchNorm)


def test_swa_update_bn_recomputes_the_running_statistics():
    torch_model, model = _pair()
    data = [torch.randn(6, 3, 8, 8) * 3 + 1 for _ in range(3)]
    torch.optim.swa_utils.update_bn(data, torch_model)
    torch.optim.swa_utils.update_bn(data, model)
    for a, b in zip(model.modules(), torch_model.modules()):
        if isinstance(b, nn.modules.batchnorm._BatchNorm):
            assert not torch.equal(a.running_mean, torch.zeros_like(a.running_mean))  # not a no-op
            torch.testing.assert_close(a.running_mean, b.running_mean)
            torch.testing.assert_close(a.running_var, b.running_var)
            assert a.momentum == b.momentum == 0.1  # update_bn restores momentum


def test_timm_freeze_batch_norm_2d_freezes_every_layer():
    timm = import_timm()
    _, model = _pair()
    frozen = timm.layers.freeze_batch_norm_2d(model)
    kinds = [type(m).__name__ for m in frozen.modules() if "BatchNorm" in type(m).__name__]
    assert kinds.count("FrozenBatchNorm2d") == 2  # both 2d layers; the 1d one is not timm's to freeze


def test_torchs_convert_sync_batchnorm_converts_them_and_keeps_their_tensors():
    _, model = _pair()
    bn = model[1]
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(synced[1], nn.SyncBatchNorm) and synced[1].weight is bn.weight
    assert synced[1].running_mean is bn.running_mean


def test_replace_all_batch_norm_modules_drops_the_running_statistics():
    _, model = _pair()
    torch.func.replace_all_batch_norm_modules_(model)
    layers = [m for m in model.modules() if isinstance(m, bnlab.nn.batchnorm._BatchNorm)]
    assert len(layers) == 3 and all(m.running_mean is None and not m.track_running_stats for m in layers)
    model.eval()
    x = torch.randn(5, 3, 8, 8)
    per_sample = torch.func.vmap(lambda xi: model(xi.unsqueeze(0).expand(2, -1, -1, -1)))(x)
    assert per_sample.shape == (5, 2, 4)


def test_quantization_fuse_modules_folds_conv_and_bn():
    from torch.ao.quantization import fuse_modules

    torch_model, model = _pair()
    torch_model.eval(), model.eval()
    fused = fuse_modules(model, [["0", "1", "2"], ["3", "4"]])
    assert isinstance(fused[1], nn.Identity) and isinstance(fused[4], nn.Identity)
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(fused(x), torch_model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_fx_symbolic_trace_gives_one_node_per_layer_that_runs_the_layer(training):
    torch_model, model = _pair()
    torch_model.train(training), model.train(training)
    traced = torch.fx.symbolic_trace(model)
    nodes = [n for n in traced.graph.nodes if n.op == "call_function" and "layer_forward" in str(n.target)]
    assert len(nodes) == 3
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(traced(x), torch_model(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        traced.get_submodule("1").running_mean, torch_model[1].running_mean
    )  # state updated once


def test_torchvision_feature_extractor_on_a_converted_resnet():
    tv = import_torchvision()
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    ref = tv.models.resnet18(num_classes=10).eval()
    model = bnlab.convert(ref, "bnlab").eval()
    nodes = {"layer2": "mid", "layer4": "last"}
    x = torch.randn(2, 3, 64, 64)
    ours, theirs = create_feature_extractor(model, nodes)(x), create_feature_extractor(ref, nodes)(x)
    for k in theirs:
        torch.testing.assert_close(ours[k], theirs[k], rtol=1e-4, atol=1e-4)


def test_a_train_mode_jit_trace_saves_loads_and_runs():
    torch_model, model = _pair()
    x = torch.randn(4, 3, 8, 8)
    traced = torch.jit.trace(copy.deepcopy(model).train(), x, check_trace=False)
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    y = loaded(x)  # the second update of the running statistics (tracing ran the first)
    torch_model.train()(x)
    torch.testing.assert_close(y, torch_model(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loaded.state_dict()["1.running_mean"], torch_model[1].running_mean)
    assert int(loaded.state_dict()["1.num_batches_tracked"]) == 2


def test_eval_mode_jit_trace_and_torch_export_match_torch():
    torch_model, model = _pair()
    torch_model.eval(), model.eval()
    x = torch.randn(4, 3, 8, 8)
    traced = torch.jit.trace(model, x)
    torch.testing.assert_close(traced(x), torch_model(x), rtol=1e-5, atol=1e-5)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), torch_model(x), rtol=1e-5, atol=1e-5)
    # the exported graph records torch's batch-norm operator, which deployment passes recognize
    # (bnlab.nn.export_graph); eager mode above ran bnlab's math
    assert sum("batch_norm" in str(n.target) for n in exported.graph.nodes) == 3


def test_onnx_export_of_a_folded_model_runs_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch_model, model = _pair()
    folded = bnlab.fold(model.eval())
    x = torch.randn(4, 3, 8, 8)
    path = tmp_path / "folded.onnx"
    torch.onnx.export(folded, (x,), str(path), dynamo=True)
    (out,) = ort.InferenceSession(str(path)).run(
        None, {ort.InferenceSession(str(path)).get_inputs()[0].name: x.numpy()}
    )
    torch.testing.assert_close(torch.from_numpy(out), torch_model.eval()(x), rtol=1e-4, atol=1e-4)
