"""The model zoo table of docs/guide/surgery.md: real torchvision and timm models (random weights, nothing
downloaded) through bnlab.convert, bnlab.fold, bnlab.doctor and four SGD steps against torch.

    .venv/bin/python scripts/zoo_table.py   # prints the markdown table (the test extra: timm, torchvision)

Columns: BN layers after conversion; max |bnlab - torch| of the training-mode output; conv -> BN
pairs folded and the folded model's max output difference in eval mode; doctor's hazards as built
and after precise_bn on the data (batch of 4); the largest relative difference of the loss over
four SGD steps (lr 0.01, batches of 8 of 3x64x64 uniform noise, 10 classes) between the torch model
and its conversion, in float64: in float32 some of these random-weight models train chaotically
(rexnet_100's loss after four float32 steps is 33% off its own float64 run, with torch's layers as
with bnlab's), so float32 would measure the chaos, not the layers.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

import bnlab
from bnlab.surgery.sources import is_batchnorm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from zoo import import_timm, import_torchvision  # noqa: E402  (the tests' import helpers)

MODELS = [
    ("torchvision", "resnet18"),
    ("torchvision", "mobilenet_v3_small"),
    ("torchvision", "efficientnet_b0"),
    ("torchvision", "densenet121"),
    ("timm", "resnet18"),
    ("timm", "efficientnet_b0"),
    ("timm", "mobilenetv3_small_100"),
    ("timm", "regnetx_002"),
    ("timm", "rexnet_100"),
]


def build(source: str, name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if source == "timm":
        return import_timm().create_model(name, pretrained=False, num_classes=10)
    return getattr(import_torchvision().models, name)(weights=None, num_classes=10)


def data(seed: int, n: int = 8) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def row(source: str, name: str) -> str:
    ref = build(source, name)
    ours = bnlab.convert(ref, "bnlab")
    n_bn = sum(is_batchnorm(m) for m in ours.modules())
    hazards_built = len(bnlab.doctor(ours, data(1)).hazards)
    x, target = data(0), torch.arange(8) % 10
    with torch.no_grad():
        torch.manual_seed(1)
        y_ref = ref(x)
        torch.manual_seed(1)
        out_diff = float((ours(x) - y_ref).abs().max())
    losses = []
    for model in (copy.deepcopy(ref).double(), copy.deepcopy(ours).double()):
        opt, run = torch.optim.SGD(model.parameters(), lr=0.01), []
        for step in range(4):
            torch.manual_seed(100 + step)  # the same dropout masks in both
            loss = torch.nn.functional.cross_entropy(model(data(10 + step).double()), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.append(loss.item())
        losses.append(run)
    sgd_diff = max(abs(a - b) / abs(a) for a, b in zip(*losses))
    bnlab.precise_bn(ours, [data(s) for s in range(20, 24)])
    ours.eval()
    _, report = bnlab.fold(ours, data(2), report=True)
    hazards_calibrated = len(bnlab.doctor(ours, data(3, n=4)).hazards)
    return (
        f"| {source} {name} | {n_bn} | {out_diff:.1e} | {len(report.pairs)} | {report.max_abs_diff:.1e} | "
        f"{hazards_built} | {hazards_calibrated} | {sgd_diff:.1e} |"
    )


def main() -> None:
    print(
        "| model | BN layers | output vs torch | pairs folded | folded vs unfolded | doctor hazards, as built "
        "| after precise_bn | 4 SGD steps (float64), loss vs torch (rel.) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for source, name in MODELS:
        print(row(source, name), flush=True)


if __name__ == "__main__":
    main()
