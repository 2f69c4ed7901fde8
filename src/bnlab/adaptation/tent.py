r"""TENT: test-time entropy minimization on BN's γ and β (Wang et al., ICLR 2021).

Wang, Shelhamer, Liu, Olshausen & Darrell, "Tent: Fully Test-Time Adaptation by Entropy
Minimization", ICLR 2021 (https://arxiv.org/abs/2006.10726). On each target batch the model
normalizes with the batch's statistics (:class:`~bnlab.adaptation.TestBatchNorm`), predicts, and
takes a gradient step on the mean prediction entropy

.. math::
    H(\hat y) = -\sum_c p(\hat y_c) \log p(\hat y_c)

with respect to the BN layers' γ and β only; every other parameter stays frozen. Online: the
prediction for a batch is the one made *before* that batch's update, and the updates carry over to
the next batch (``episodic=True`` resets to the source γ/β and optimizer state before each batch).

The paper's settings, as in its reference code (github.com/DequanWang/tent, ``cfgs/tent.yaml``):
Adam with lr 1e-3, betas (0.9, 0.999), no weight decay, one step per batch, test batches of 200
(CIFAR-10/100-C); for ImageNet-C, SGD with lr 0.00025 and momentum 0.9 on batches of 64. These are
the defaults here (``optimizer="adam"``, ``lr=1e-3``, ``steps=1``); the reference code's SGD uses
Nesterov momentum 0.9, as ``optimizer="sgd"`` does. The batch size is the caller's.

Non-BN modules run in eval mode during the updates (dropout off) and get their modes back after;
``requires_grad`` flags and the ``.grad`` of γ/β are restored after every batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ._layers import bn_layers, bn_parameters, default_forward, restore_modes, save_modes
from .test_batch import TestBatchNorm

__all__ = ["Tent", "softmax_entropy"]

OPTIMIZERS = ("adam", "sgd")


def softmax_entropy(logits: Tensor) -> Tensor:
    """The entropy of the softmax of ``logits`` (N, classes), one value per sample (N,)."""
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


def _mean_entropy(logits: Tensor) -> Tensor:
    return softmax_entropy(logits).mean()


def _optimizer(kind: str | Callable, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    if callable(kind):
        return kind(params)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=0.0)
    raise ValueError(f"expected optimizer in {OPTIMIZERS} or a callable params -> Optimizer (got {kind!r})")


class Tent:
    """Online TENT on ``model``: ``tent(batch)`` adapts γ/β on the batch and returns its logits.

    Args:
        model: a model with BN layers that have γ/β (see :func:`bnlab.adaptation.adapt`).
        optimizer: "adam" (the paper's, betas (0.9, 0.999)), "sgd" (Nesterov momentum 0.9), or a
            callable ``params -> torch.optim.Optimizer``. Default: "adam"
        lr: learning rate of the "adam"/"sgd" optimizer. Default: 1e-3 (the paper's, with Adam)
        steps: updates per batch; the logits returned are those of the last step's forward.
            Default: 1
        episodic: reset γ/β and the optimizer to the source state before every batch. Default: False
        forward: ``forward(model, batch) -> logits (N, classes)``, for any batch structure.
            Default: ``model(batch)``, or ``model(batch[0])`` for a tuple/list batch.
        loss: ``loss(logits) -> scalar`` that each step minimizes. Default: the mean prediction
            entropy, ``softmax_entropy(logits).mean()`` (the paper's); e.g. the sum of several
            models' mean entropies where one forward computes them all, each model's γ/β then getting
            exactly its own gradient.

    Example::

        tent = bnlab.adaptation.Tent(model)
        for x in target_batches:
            logits = tent(x)          # predicted, then γ/β updated on this batch
        tent.changed()                # {name: source value} of the γ/β it moved
        tent.reset()                  # back to the source γ/β
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        optimizer: str | Callable = "adam",
        lr: float = 1e-3,
        steps: int = 1,
        episodic: bool = False,
        forward: Callable[[nn.Module, Any], Tensor] | None = None,
        loss: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"expected steps to be an int >= 1 (got {steps!r})")
        if not callable(optimizer) and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0):
            raise ValueError(f"expected lr > 0 (got {lr!r})")
        self.model = model
        self.layers = bn_layers(model, "tent")
        self.params = bn_parameters(self.layers)  # name -> the model's own Parameter
        self.steps, self.episodic = steps, episodic
        self.forward = default_forward if forward is None else forward
        self.loss = _mean_entropy if loss is None else loss
        self._norm = TestBatchNorm(model)
        self._source = {name: p.detach().clone() for name, p in self.params.items()}
        self.optimizer = _optimizer(optimizer, list(self.params.values()), lr)
        self._optimizer_source = copy.deepcopy(self.optimizer.state_dict())
        self.entropies: list[float] = []  # the loss of each step (the mean prediction entropy), before its update

    def __call__(self, batch: Any) -> Tensor:
        """Adapt on ``batch`` and return its logits (detached), predicted before the last update."""
        if self.episodic:
            self.reset()
        params = list(self.params.values())
        modes = save_modes(self.model)
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        grads = [(p, p.grad) for p in params]
        try:
            self.model.eval()  # dropout off; the BN layers use the batch's statistics in any mode
            for p, _ in flags:
                p.requires_grad_(False)
            for p in params:
                p.requires_grad_(True)
                p.grad = None
            with self._norm, torch.enable_grad():
                for _ in range(self.steps):
                    logits = self.forward(self.model, batch)
                    if not isinstance(logits, Tensor) or logits.dim() < 2:
                        raise TypeError(
                            "expected the forward to return logits of shape (N, classes) "
                            f"(got {type(logits).__name__}{tuple(getattr(logits, 'shape', ()))})"
                        )
                    loss = self.loss(logits)
                    loss.backward()
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.entropies.append(float(loss.detach()))
        finally:
            restore_modes(modes)
            for p, flag in flags:
                p.requires_grad_(flag)
            for p, g in grads:
                p.grad = g
        return logits.detach()

    @torch.no_grad()
    def reset(self) -> None:
        """γ/β and the optimizer back to their state when this Tent was made."""
        for name, p in self.params.items():
            p.copy_(self._source[name])
        self.optimizer.load_state_dict(copy.deepcopy(self._optimizer_source))

    def changed(self) -> dict[str, Tensor]:
        """``{name: value before adaptation}`` of the γ/β that differ from it now."""
        return {
            name: self._source[name].clone()
            for name, p in self.params.items()
            if not torch.equal(p.detach(), self._source[name])
        }
