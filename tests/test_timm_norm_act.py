"""timm's BatchNormAct2d (batch norm + drop + activation modules, the base of many timm models)
through bnlab.convert and bnlab.fold, on real timm models with random weights (nothing downloaded)."""

import pytest
import torch
from torch import nn

import bnlab
from bnlab.surgery.norm_act import is_norm_act
from bnlab.surgery.sources import is_batchnorm
from zoo import import_timm

MODELS = ["efficientnet_b0", "mobilenetv3_small_100", "regnetx_002", "rexnet_100"]


def _timm_layers(model):
    return [
        m for m in model.modules() if type(m).__name__ == "BatchNormAct2d" and type(m).__module__.startswith("timm")
    ]


def _model(name):
    timm = import_timm()
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10)
    with torch.no_grad():  # non-trivial statistics and affine parameters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model


@pytest.mark.parametrize("name", MODELS)
def test_convert_keeps_activation_drop_and_state_and_goes_back(name):
    model = _model(name)
    timm_layers = _timm_layers(model)
    assert timm_layers, f"{name} should be built on timm's BatchNormAct2d"
    ours = bnlab.convert(model, "bnlab")
    assert not _timm_layers(ours)
    converted = [m for m in ours.modules() if isinstance(m, bnlab.nn.BatchNormDropAct2d)]
    assert len(converted) == len(timm_layers)
    assert [type(m.act) for m in converted] == [type(m.act) for m in timm_layers]
    assert [type(m.drop) for m in converted] == [type(m.drop) for m in timm_layers]
    assert ours.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(4, 3, 64, 64)
    for training in (True, False):
        model.train(training)
        ours.train(training)
        with torch.no_grad():
            torch.manual_seed(1)  # the same dropout masks in both
            y_ours = ours(x)
            torch.manual_seed(1)
            torch.testing.assert_close(y_ours, model(x), rtol=1e-4, atol=1e-4)
    for a, b in zip(ours.state_dict().values(), model.state_dict().values()):
        torch.testing.assert_close(
            a, b, rtol=1e-4, atol=1e-5
        )  # running statistics updated alike (float32 noise of a deep net)
    back = bnlab.convert(ours, "torch")
    assert [type(m) for m in _timm_layers(back)] == [type(m) for m in timm_layers]
    back.eval()
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("convert_first", [False, True], ids=["timm", "bnlab"])
def test_fold_goes_through_batchnorm_act(convert_first):
    model = _model("efficientnet_b0").eval()
    if convert_first:
        model = bnlab.convert(model, "bnlab").eval()
    n_norm_act = sum(is_norm_act(m) for m in model.modules())
    x = torch.randn(2, 3, 64, 64)
    folded, report = bnlab.fold(model, x, report=True)
    folded_norm_act = {bn for _, bn in report.pairs if is_norm_act(model.get_submodule(bn))}
    assert len(folded_norm_act) == n_norm_act  # every conv -> BatchNormAct pair
    assert report.max_abs_diff < 1e-3, report.max_abs_diff
    assert not any(is_batchnorm(m) for m in folded.modules())
    acts = [type(folded.get_submodule(bn)) for bn in folded_norm_act]
    assert nn.SiLU in acts  # the activations stay where the BNs were


def test_targets_without_activation_slots_refuse():
    model = _model("mobilenetv3_small_100")
    with pytest.raises(TypeError, match="drop and activation modules"):
        bnlab.convert(model, "ghost", virtual_batch_size=2)


def test_built_directly_cannot_become_torch():
    layer = bnlab.nn.BatchNormDropAct2d(4, act=nn.ReLU())
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(
        layer(x), torch.relu(nn.functional.batch_norm(x, None, None, training=True)), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(TypeError, match="not converted from a torch-based class"):
        bnlab.convert(layer, "torch")


def test_scripted_layer_keeps_drop_and_act():
    layer = bnlab.nn.BatchNormDropAct2d(4, act=nn.SiLU(), drop=nn.Dropout(0.0))
    scripted = torch.jit.script(layer)
    x = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(scripted(x), layer(x), rtol=1e-5, atol=1e-6)
    assert bool((scripted(x) < 0).any()) and float(scripted(x).min()) > -0.3  # SiLU's range, not BN's
