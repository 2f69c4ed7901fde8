"""The train/eval pitfalls of batch norm, each measured on one trained network.

The network is MNIST-1D's reference CNN with BN before each ReLU (torch.nn.BatchNorm1d), trained
for TRAIN_STEPS steps of SGD; every demo works on a copy of it and reports test accuracy (1000
test examples) or the change it causes:

* ``forget_eval`` -- predicting in training mode: each batch is normalized with its own statistics,
  so a prediction depends on what else is in the batch, and the running statistics drift toward
  the test batches;
* ``batch_of_one`` -- BatchNorm1d on (1, C) cannot train at all; in evaluation mode one example
  alone gets exactly the output it gets inside a batch;
* ``last_batch`` -- an epoch that ends with a batch of 2 (no ``drop_last``): one step on such a
  batch against one step on a normal batch;
* ``momentum`` -- PyTorch's momentum 0.1 is the weight of the new batch, Keras/Flax's 0.99 the decay
  of the old value: the running statistics re-estimated over one epoch with each reading;
* ``fine_tune`` -- fine-tuning only the head on batches of 2 (detection models fine-tune with 1-2
  images per GPU) while BN stays in training mode, against BN frozen
  (``bnlab.convert(model, to="frozen")``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from .. import data, models
from ..surgery import conventions

TRAIN_STEPS = 400  # SGD, lr 0.1, momentum 0.9, batch 100: 10 epochs of MNIST-1D's 4000 examples
BATCH = 100
SEED = 0
NORM = "torch_bn"  # torch.nn.BatchNorm1d: the layer these pitfalls are met with (bnlab's behaves the same)


def _batches(n: int, batch: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    return [perm[i : i + batch] for i in range(0, n - batch + 1, batch)]  # drop_last: full batches only


def train_cnn(ds, steps: int = TRAIN_STEPS, seed: int = SEED) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = models.build("cnn", norm=NORM)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    done = 0
    while done < steps:
        for idx in _batches(len(ds.x_train), BATCH, gen)[: steps - done]:
            loss = F.cross_entropy(model(ds.x_train[idx]), ds.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
    return model.eval()


@torch.no_grad()
def accuracy(model, x, y, batch: int = 1000, train_mode: bool = False) -> float:
    """Test accuracy in batches of ``batch``; ``train_mode`` predicts as a model left in training mode
    would (its running statistics change as a side effect: pass a copy)."""
    model.train(train_mode)
    correct = sum(int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum()) for i in range(0, len(x), batch))
    model.eval()
    return correct / len(x)


def _bn_layers(model):
    return [m for m in model.modules() if getattr(m, "running_mean", None) is not None]


def _stat_change(before, after) -> float:
    """The largest change of a running mean, in units of that channel's running standard deviation."""
    worst = 0.0
    for a, b in zip(_bn_layers(before), _bn_layers(after)):
        worst = max(worst, float(((b.running_mean - a.running_mean).abs() / a.running_var.sqrt()).max()))
    return worst


def forget_eval(model, ds) -> dict[str, Any]:
    x, y = ds.x_test, ds.y_test
    by_class = torch.argsort(y, stable=True)  # batches of one or two classes: what a sorted test set gives
    out = {"eval": accuracy(model, x, y)}
    for batch in (1000, 32, 4):
        out[f"train_mode_batch_{batch}"] = accuracy(copy.deepcopy(model), x, y, batch, train_mode=True)
    out["train_mode_sorted_batch_100"] = accuracy(copy.deepcopy(model), x[by_class], y[by_class], 100, True)
    drifted = copy.deepcopy(model)
    accuracy(drifted, x, y, 32, train_mode=True)
    out["running_mean_change"] = _stat_change(model, drifted)
    out["eval_after_train_mode_pass"] = accuracy(drifted, x, y)
    return out


def batch_of_one(model, ds) -> dict[str, Any]:
    from .. import nn as bnn

    try:
        bnn.BatchNorm1d(8).train()(torch.randn(1, 8))
        error = ""
    except ValueError as exc:  # the layer refuses, as torch's does
        error = str(exc)
    x = ds.x_test[:64]
    with torch.no_grad():
        model.eval()
        alone = torch.cat([model(x[i : i + 1]) for i in range(len(x))])
        eval_diff = float((alone - model(x)).abs().max())
        trained = copy.deepcopy(model).train()
        alone_train = torch.cat([trained(x[i : i + 1]) for i in range(len(x))])
        train_diff = float((alone_train - model(x)).abs().max())
    return {
        "error": error,
        "eval_alone_vs_batch": eval_diff,
        "train_alone_vs_eval": train_diff,
        "train_mode_batch_1": accuracy(copy.deepcopy(model), ds.x_test, ds.y_test, 1, train_mode=True),
    }


def _step(model, x, y, lr: float = 0.1) -> torch.nn.Module:
    model = copy.deepcopy(model).train()
    loss = F.cross_entropy(model(x), y)
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    return model.eval()


def last_batch(model, ds, tries: int = 10) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(SEED)
    out = {"before": accuracy(model, ds.x_test, ds.y_test)}
    for size in (2, BATCH):
        accs = []
        for _ in range(tries):
            idx = torch.randperm(len(ds.x_train), generator=gen)[:size]
            accs.append(accuracy(_step(model, ds.x_train[idx], ds.y_train[idx]), ds.x_test, ds.y_test))
        out[f"after_batch_{size}_mean"] = sum(accs) / tries
        out[f"after_batch_{size}_worst"] = min(accs)
    out["tries"] = tries
    return out


@torch.no_grad()
def _reestimate(model, ds, momentum: float, epochs: int = 1) -> float:
    """Test accuracy after resetting the running statistics and re-estimating them from ``epochs`` of
    training batches with ``momentum`` (PyTorch's meaning: the weight of the new batch)."""
    model = copy.deepcopy(model)
    for bn in _bn_layers(model):
        bn.reset_running_stats()
        bn.momentum = momentum
    model.train()
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        for idx in _batches(len(ds.x_train), BATCH, gen):
            model(ds.x_train[idx])
    return accuracy(model, ds.x_test, ds.y_test)


def momentum(model, ds) -> dict[str, Any]:
    keras = conventions.KERAS_DEFAULTS["momentum"]
    converted = conventions.decay_to_momentum(keras)
    return {
        "keras_decay": keras,
        "converted": converted,
        "batches_per_epoch": len(ds.x_train) // BATCH,
        "torch_default": _reestimate(model, ds, 0.1),
        "keras_value_typed_in": _reestimate(model, ds, keras),
        "converted_one_epoch": _reestimate(model, ds, converted),
        "converted_ten_epochs": _reestimate(model, ds, converted, epochs=10),
    }


def fine_tune(model, ds, steps: int = 300, batch: int = 2) -> dict[str, Any]:
    from .. import convert

    out = {"before": accuracy(model, ds.x_test, ds.y_test), "steps": steps, "batch": batch}
    for frozen in (False, True):
        tuned = convert(model, to="frozen") if frozen else copy.deepcopy(model)
        for name, p in tuned.named_parameters():  # only the head learns; the rest is "pretrained"
            p.requires_grad_(name.startswith("head."))
        opt = torch.optim.SGD([p for p in tuned.parameters() if p.requires_grad], lr=0.01)
        gen = torch.Generator().manual_seed(SEED)
        tuned.train()  # what a fine-tuning loop does
        for _ in range(steps):
            idx = torch.randperm(len(ds.x_train), generator=gen)[:batch]
            loss = F.cross_entropy(tuned(ds.x_train[idx]), ds.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        key = "frozen_bn" if frozen else "bn_in_training_mode"
        out[key] = accuracy(tuned, ds.x_test, ds.y_test)
        out[f"{key}_running_mean_change"] = _stat_change(model, tuned)
    return out


def run() -> dict[str, Any]:
    ds = data.load("mnist1d")
    model = train_cnn(ds)
    return {
        "train_steps": TRAIN_STEPS,
        "forget_eval": forget_eval(model, ds),
        "batch_of_one": batch_of_one(model, ds),
        "last_batch": last_batch(model, ds),
        "momentum": momentum(model, ds),
        "fine_tune": fine_tune(model, ds),
    }
