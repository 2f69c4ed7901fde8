"""Inside a saturating network, with and without BN: what each layer's activations and gradients do.

A tanh MLP (HIDDEN layers of WIDTH units) on MNIST-1D whose weights start too large (standard
deviation GAIN / sqrt(fan_in)), so that without BN most tanh units sit in their flat tails; the
same network with BN before every tanh starts and trains from the same weights. After STEPS steps
of SGD each network is measured on one fixed batch of 1000 training examples (in training mode, on
a copy, so the running statistics are left alone):

* the distribution of every hidden layer's tanh output (a histogram) and its saturation, the share
  of outputs with ``|tanh| > SATURATED``, where the derivative 1 - tanh^2 is below 0.06;
* the gradient-to-data ratio of every linear layer, std(dL/dW) / std(W): how strongly one gradient
  step would change that layer relative to its size. Layers that learn at very different rates
  show ratios orders of magnitude apart.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import data, models

HIDDEN, WIDTH = 5, 100
GAIN = 3.0  # weights' std = GAIN / sqrt(fan_in): pre-activations of std ~2-3, deep in tanh's tails
STEPS, LR, BATCH = 1000, 0.1, 100
SATURATED = 0.97
BINS = 40
SEED = 0
NORM = "torch_bn"  # torch.nn.BatchNorm1d (bnlab's computes the same; torch's is faster at this tiny size)


def build(norm: str) -> nn.Module:
    torch.manual_seed(SEED)
    model = models.build("mlp", norm=norm, act="tanh", widths=(WIDTH,) * HIDDEN)
    gen = torch.Generator().manual_seed(SEED)  # the same weights with and without BN
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * GAIN / math.sqrt(m.in_features))
                m.bias.zero_()
    return model


def _linears(model) -> list[nn.Linear]:
    return [block.op for block in model.blocks] + [model.head]


def measure(model, x, y) -> dict[str, Any]:
    """Histograms and saturation of every hidden tanh output; gradient-to-data ratio of every linear."""
    model = copy.deepcopy(model).train()
    outputs = []
    hooks = [block.act.register_forward_hook(lambda m, i, o: outputs.append(o.detach())) for block in model.blocks]
    loss = F.cross_entropy(model(x), y)
    model.zero_grad()
    loss.backward()
    for h in hooks:
        h.remove()
    edges = torch.linspace(-1, 1, BINS + 1)
    return {
        "loss": float(loss.detach()),
        "hist": [(torch.histc(o.clamp(-1, 1), BINS, -1, 1) / o.numel()).tolist() for o in outputs],
        "edges": edges.tolist(),
        "saturation": [float((o.abs() > SATURATED).float().mean()) for o in outputs],
        "grad_to_data": [float(lin.weight.grad.std() / lin.weight.detach().std()) for lin in _linears(model)],  # type: ignore[union-attr]  # after backward
    }


def train(model, ds) -> nn.Module:
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(STEPS):
        idx = torch.randint(len(ds.x_train), (BATCH,), generator=gen)
        loss = F.cross_entropy(model(ds.x_train[idx]), ds.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@torch.no_grad()
def test_accuracy(model, ds) -> float:
    model.eval()
    return float((model(ds.x_test).argmax(1) == ds.y_test).float().mean())


def run() -> dict[str, Any]:
    ds = data.load("mnist1d")
    x, y = ds.x_train[:1000], ds.y_train[:1000]
    out: dict[str, Any] = {
        "hidden": HIDDEN,
        "width": WIDTH,
        "gain": GAIN,
        "steps": STEPS,
        "lr": LR,
        "saturated": SATURATED,
        "layers": [f"layer {i + 1}" for i in range(HIDDEN)],
    }
    for key, norm in (("none", "none"), ("bn", NORM)):
        model = build(norm)
        at_init = measure(model, x, y)
        model = train(model, ds)
        out[key] = {"init": at_init, "trained": measure(model, x, y), "test_acc": test_accuracy(model, ds)}
    return out
