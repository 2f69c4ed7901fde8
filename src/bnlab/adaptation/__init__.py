"""Adapt a trained model's batch norm to new (shifted) data without labels: ``bnlab.adapt``.

Under covariate shift -- new sensors, lighting, noise, a new site -- a BN model's running
statistics describe the training data, not the data it now sees, and its accuracy drops. Three
published fixes change only BN:

=================  ===============================================================  =====================
method             what changes                                                     source
=================  ===============================================================  =====================
``"stats"``        running statistics := those of the target data (AdaBN)           Li et al. 2016
``"test_batch"``   nothing stored: BN normalizes with each test batch's statistics  Nado et al. 2020;
                   (optionally mixed with the source ones by a prior N/(N+n))       Schneider et al. 2020
``"tent"``         γ and β, by minimizing the prediction entropy on target batches  Wang et al. 2021
=================  ===============================================================  =====================

Example::

    import bnlab

    # AdaBN: re-estimate the statistics on unlabeled target batches, then predict in eval mode.
    result = bnlab.adapt(model, target_loader, method="stats")
    model.eval(); logits = model(x)
    result.restore(model)                     # back to the source statistics

    # Test-time batch statistics: a context; nothing stored changes.
    with bnlab.adapt(model, method="test_batch"):            # prior=16 mixes in the source
        logits = model(x_batch)

    # TENT: online entropy minimization of γ/β; the predictions are made as it adapts.
    result = bnlab.adapt(model, target_loader, method="tent", keep_outputs=True)
    result.outputs                            # logits per batch, each before its batch's update
    result.changed                            # {"bn1.weight": value before, ...}

The classes behind them -- :class:`TestBatchNorm`, :class:`Tent` -- are for online use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ._layers import default_forward, first_batch
from .stats import adapt_statistics
from .tent import Tent, softmax_entropy
from .test_batch import TestBatchNorm, mix_statistics

__all__ = ["adapt", "Adaptation", "TestBatchNorm", "Tent", "softmax_entropy", "mix_statistics", "METHODS"]

METHODS = ("stats", "test_batch", "tent")


@dataclasses.dataclass
class Adaptation:
    """What :func:`adapt` did to a model."""

    method: str
    layers: list[str]  # the BN layers adapted
    changed: dict[str, Tensor]  # state_dict name -> its value before adaptation (a copy)
    samples: int  # target samples seen (the leading dim of each batch's first tensor)
    batches: int
    outputs: list[Tensor] | None = None  # with keep_outputs=True: the model's output per batch
    entropies: list[float] = dataclasses.field(default_factory=list)  # tent: mean entropy per step

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        """Put the values in :attr:`changed` back into ``model`` (undo the adaptation)."""
        state: dict[str, Tensor] = dict(model.named_parameters())
        state.update(model.named_buffers())
        for name, value in self.changed.items():
            state[name].copy_(value)


def _size(batch: Any) -> int:
    if isinstance(batch, Tensor):
        return batch.shape[0] if batch.dim() else 0
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (tuple, list)) else ()
    for item in items:
        n = _size(item)
        if n:
            return n
    return 0


def adapt(
    model: nn.Module,
    batches: Iterable[Any] | None = None,
    method: str = "stats",
    *,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    num_samples: int | None = None,
    prior: float | None = None,
    optimizer: str | Callable = "adam",
    lr: float = 1e-3,
    steps: int = 1,
    episodic: bool = False,
    keep_outputs: bool = False,
) -> Adaptation | TestBatchNorm:
    """Adapt the BN layers of ``model`` to the target data in ``batches`` (no labels needed).

    Args:
        model: any model with torch or bnlab BN layers (1d/2d/3d, SyncBatchNorm, ghost, fused
            activation, masked; also after :func:`bnlab.convert`). Changed in place.
        batches: an iterable of target batches (a DataLoader, a list of tensors, ...); labels in a
            ``(inputs, targets)`` batch are ignored. Optional for "test_batch".
        method: "stats" (AdaBN), "test_batch" or "tent" (see :mod:`bnlab.adaptation`). Default: "stats"
        forward: ``forward(model, batch)`` runs the model on one batch, for any batch structure
            (for "tent" it must return logits (N, classes)). Default: ``model(batch)``, or
            ``model(batch[0])`` for a tuple/list batch.
        num_samples: "stats" only: use at most this many samples. Default: all
        prior: "test_batch" only: Schneider et al.'s prior strength N (weight N/(N+n) on the source
            statistics for a batch of n). Default: ``None`` (the batch alone)
        optimizer, lr, steps, episodic: "tent" only, see :class:`Tent`. Defaults: the paper's
            (Adam, lr 1e-3, 1 step per batch, online: not episodic).
        keep_outputs: keep the model's output for every batch in ``result.outputs`` ("tent":
            the online predictions, each made before its batch's update; "test_batch": with
            the batch statistics). Default: False

    Returns:
        An :class:`Adaptation` (what changed, and how to undo it); for "test_batch" without
        ``batches``, a :class:`TestBatchNorm` context manager in which BN normalizes with each
        batch's statistics.

    Note:
        TENT's γ/β are fit for normalization with target-batch statistics: predict with them under
        ``TestBatchNorm(model)`` (as TENT does), or run ``adapt(model, batches, method="stats")``
        after it to predict in eval mode with target population statistics. With
        ``episodic=True`` the model ends as it started; the outputs are the result.

    Raises:
        ValueError: unknown method, a model without BN layers, only frozen BN layers (nothing to
            adapt), nothing of the kind the method changes, an empty ``batches``, bad arguments.
        TypeError: not a module, Batch Renorm layers with "test_batch"/"tent".
    """
    if method not in METHODS:
        raise ValueError(f"expected method in {METHODS} (got {method!r})")
    given = {
        "num_samples": num_samples is not None,
        "prior": prior is not None,
        "episodic": episodic,
        "steps": steps != 1,
        "lr": lr != 1e-3,
        "optimizer": optimizer != "adam",
    }
    allowed = {"stats": {"num_samples"}, "test_batch": {"prior"}, "tent": {"episodic", "steps", "lr", "optimizer"}}[
        method
    ]
    stray = sorted(k for k, v in given.items() if v and k not in allowed)
    if stray:
        raise ValueError(
            f"expected only {sorted(allowed) or 'no method options'} with method={method!r} (got {', '.join(stray)})"
        )
    if method == "stats":
        if batches is None:
            raise ValueError("expected target batches for method='stats' (got None)")
        layers, before, samples, n = adapt_statistics(model, batches, forward=forward, num_samples=num_samples)
        return Adaptation(method, layers, before, samples, n)
    if method == "test_batch":
        context = TestBatchNorm(model, prior)
        if batches is None:
            return context
        return _run_test_batch(model, context, batches, forward, keep_outputs)
    if batches is None:
        raise ValueError("expected target batches for method='tent' (got None)")
    tent = Tent(model, optimizer=optimizer, lr=lr, steps=steps, episodic=episodic, forward=forward)
    _, batches = first_batch(batches)
    outputs, samples, n = [], 0, 0
    for batch in batches:
        logits = tent(batch)
        samples += _size(batch)
        n += 1
        if keep_outputs:
            outputs.append(logits)
    if episodic:
        tent.reset()
    return Adaptation(
        method,
        [name for name, _ in tent.layers],
        tent.changed(),
        samples,
        n,
        outputs if keep_outputs else None,
        list(tent.entropies),
    )


@torch.no_grad()
def _run_test_batch(model, context, batches, forward, keep_outputs) -> Adaptation:
    run = default_forward if forward is None else forward
    _, batches = first_batch(batches)
    outputs, samples, n = [], 0, 0
    with context:
        for batch in batches:
            out = run(model, batch)
            samples += _size(batch)
            n += 1
            if keep_outputs:
                outputs.append(out)
    return Adaptation(
        "test_batch", [name for name, _ in context.layers], {}, samples, n, outputs if keep_outputs else None
    )
