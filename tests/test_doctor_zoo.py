"""bnlab.doctor on a zoo of real models (torchvision and timm, random weights, nothing downloaded):
no spurious hazard on a model as built, after a few warm-up batches, or with its statistics
calibrated on its data -- and the train/eval gap still caught when the data changes."""

import pytest
import torch

import bnlab
from zoo import import_timm, import_torchvision


def _torchvision(name, **kw):
    return lambda: getattr(import_torchvision().models, name)(weights=None, num_classes=10, **kw)


def _timm(name):
    return lambda: import_timm().create_model(name, pretrained=False, num_classes=10)


ZOO = {
    "resnet18-zero-init-residual": _torchvision("resnet18", zero_init_residual=True),
    "mobilenet_v2": _torchvision("mobilenet_v2"),
    "timm-resnet18": _timm("resnet18"),  # zero-initialized last BN of each block
    "timm-efficientnet_b0": _timm("efficientnet_b0"),  # timm's BatchNormAct2d
}


def _data(seed, n=16):
    return torch.rand(n, 3, 48, 48, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_no_spurious_hazards(name):
    torch.manual_seed(0)
    model = ZOO[name]()
    fresh = bnlab.doctor(model, _data(0))  # as built: initial running statistics, not judged
    assert fresh.hazards == [], fresh.to_text()
    if name.endswith("zero-init-residual") or name == "timm-resnet18":
        assert "zero-init-bn" in {f.code for f in fresh.findings}
    bnlab.precise_bn(model, [_data(seed) for seed in range(10, 14)])
    model.eval()
    calibrated = bnlab.doctor(model, _data(20, n=4))
    assert calibrated.hazards == [], calibrated.to_text()
    scaled = bnlab.doctor(model, _data(20) * 1.5)  # data the statistics do not describe
    gap = [f for f in scaled.hazards if f.code == "train-eval-gap"]
    assert gap and "bnlab.adapt" in gap[0].fix, scaled.to_text()


def test_few_training_batches_are_named_in_the_gap_finding():
    """After 2 training batches the running statistics are 81% initial: eval mode does not describe
    the data, and the finding says why."""
    model = ZOO["resnet18-zero-init-residual"]().train()
    with torch.no_grad():
        for seed in range(2):
            model(_data(seed))
    gap = [f for f in bnlab.doctor(model, _data(5)).hazards if f.code == "train-eval-gap"]
    assert gap and "seen few training batches" in gap[0].message and ": 2)" in gap[0].message
