"""The next ring of tools around batch norm, each run on a model with torch's BN and the same
model converted to bnlab (same weights, same data), compared with a stated tolerance."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import bnlab
from zoo import import_timm, import_torchvision


def _cnn(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3),
        nn.BatchNorm2d(8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).to(dtype)


def _assert_same_state(ours: nn.Module, theirs: nn.Module, **tol) -> None:
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, **tol, msg=name)


@pytest.mark.slow  # ~20 s of autotuning; torch.compile's default mode is in the default suite (test_transforms.py)
def test_compile_max_autotune_dynamic_trains_as_torch():
    theirs = _cnn()
    ours = bnlab.convert(copy.deepcopy(theirs), "bnlab")
    compiled = torch.compile(ours, mode="max-autotune-no-cudagraphs", dynamic=True)
    for n in (4, 6, 5):  # several batch sizes: one dynamic graph
        x = torch.randn(n, 3, 8, 8) * 2 + 1
        torch.testing.assert_close(compiled(x), theirs(x), rtol=1e-5, atol=1e-5)
    _assert_same_state(ours, theirs, rtol=1e-5, atol=1e-6)
    assert int(ours[1].num_batches_tracked) == 3


def test_averaged_model_with_buffers_averages_as_torch():
    theirs = _cnn(torch.float64)
    ours = bnlab.convert(copy.deepcopy(theirs), "bnlab")
    averages = [torch.optim.swa_utils.AveragedModel(m, use_buffers=True) for m in (theirs, ours)]
    for step in range(3):
        x = torch.randn(4, 3, 8, 8, dtype=torch.float64) + step
        for model, avg in zip((theirs, ours), averages):
            model(x)
            avg.update_parameters(model)
    _assert_same_state(averages[1].module, averages[0].module, rtol=1e-12, atol=1e-12)
    assert not torch.equal(averages[1].module[1].running_mean, torch.zeros(8, dtype=torch.float64))


def test_timm_model_ema_follows_the_buffers_as_torch():
    timm = import_timm()
    theirs = _cnn(torch.float64)
    ours = bnlab.convert(copy.deepcopy(theirs), "bnlab")
    emas = [timm.utils.ModelEmaV3(m, decay=0.9) for m in (theirs, ours)]
    assert isinstance(emas[1].module[1], bnlab.nn.BatchNorm2d)
    for step in range(3):
        x = torch.randn(4, 3, 8, 8, dtype=torch.float64) + step
        for model, ema in zip((theirs, ours), emas):
            model(x)
            ema.update(model, step=step)
    _assert_same_state(emas[1].module, emas[0].module, rtol=1e-12, atol=1e-12)


def test_hugging_face_model_converted_after_from_pretrained(tmp_path):
    import_torchvision()  # transformers imports torchvision when it is installed
    transformers = pytest.importorskip("transformers")
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    torch.manual_seed(0)
    transformers.ResNetForImageClassification(config).save_pretrained(tmp_path / "tiny")
    theirs = transformers.ResNetForImageClassification.from_pretrained(tmp_path / "tiny").train()
    ours = bnlab.convert(copy.deepcopy(theirs), "bnlab")
    assert sum(isinstance(m, bnlab.nn.BatchNorm2d) for m in ours.modules()) > 0
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(ours(x).logits, theirs(x).logits, rtol=1e-5, atol=1e-5)
    _assert_same_state(ours, theirs, rtol=1e-5, atol=1e-6)
    # saved after conversion, from_pretrained builds the class's own (torch) layers: convert after loading
    ours.save_pretrained(tmp_path / "converted")
    loaded = transformers.ResNetForImageClassification.from_pretrained(tmp_path / "converted")
    assert not any(isinstance(m, bnlab.nn.BatchNorm2d) for m in loaded.modules())
    _assert_same_state(loaded, ours, rtol=0, atol=0)


def test_lightning_single_process_trains_as_torch(tmp_path):
    import_torchvision()
    L = pytest.importorskip("lightning")

    class Module(L.LightningModule):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(16, 3, 8, 8, dtype=torch.float64), torch.randint(0, 4, (16,)))
    theirs = _cnn(torch.float64)
    nets = (theirs, bnlab.convert(copy.deepcopy(theirs), "bnlab"))
    for net in nets:
        trainer = L.Trainer(
            max_epochs=1,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
        )
        trainer.fit(Module(net), torch.utils.data.DataLoader(data, batch_size=4))
    assert int(nets[1][1].num_batches_tracked) == 4
    _assert_same_state(nets[1], nets[0], rtol=1e-10, atol=1e-12)  # float64: 4 SGD steps


class _Positive(nn.Module):
    def forward(self, w):
        return w.abs()


def test_convert_refuses_a_parametrized_bn_weight_clearly():
    model = _cnn()
    parametrize.register_parametrization(model[1], "weight", _Positive())
    with pytest.raises(TypeError, match=r"batch norm at '1' has a parametrized weight .*remove it first"):
        bnlab.convert(model, "bnlab")


def test_fold_refuses_a_parametrized_conv_weight_clearly():
    model = bnlab.convert(_cnn(), "bnlab")
    parametrize.register_parametrization(model[0], "weight", _Positive())
    model.eval()
    with pytest.raises(ValueError, match=r"parametrized 0\.weight.*remove_parametrizations"):
        bnlab.fold(model)
    parametrize.remove_parametrizations(model[0], "weight")  # the fix named
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(bnlab.fold(model)(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # ~21 s compiling C++; torch.export of bnlab's layers is in the default suite (test_quantization.py)
def test_aot_inductor_package_of_an_exported_model_runs_as_torch(tmp_path):
    theirs = _cnn().eval()
    ours = bnlab.convert(copy.deepcopy(theirs), "bnlab").eval()
    x = torch.randn(2, 3, 8, 8)
    path = torch._inductor.aoti_compile_and_package(
        torch.export.export(ours, (x,)), package_path=str(tmp_path / "model.pt2")
    )
    torch.testing.assert_close(torch._inductor.aoti_load_package(path)(x), theirs(x), rtol=1e-5, atol=1e-5)
