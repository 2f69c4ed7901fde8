"""Internal covariate shift measured on gradients (Santurkar et al. 2018, "How Does Batch
Normalization Help Optimization?", §2.2, https://arxiv.org/abs/1805.11604).

For weight layer i at step t, with G_i the gradient of the loss w.r.t. layer i's weight at the
current parameters and G'_i the same gradient after every *earlier* parameter has taken its step-t
update (layers 1..i-1 moved, layers i..k not)::

    ICS_i = ||G_i - G'_i||_2,    cos_i = <G_i, G'_i> / (||G_i|| ||G'_i||)

The update is the optimizer's actual step t update: the probe calls ``optimizer.step()`` once on the
real gradients, reads each parameter's change and undoes it (optimizer state included), so SGD's
momentum, Adam's moments, weight decay and the scheduled learning rate are all as in training.

Conventions: the weight layers are the Conv/Linear modules (``weight`` of a module that is not a
norm layer), in module order; "earlier parameters" are those registered before layer i's weight
(for bnlab's models registration order is forward order, so this is every op, bias and gamma/beta
of the blocks before layer i). G and G' come from the same training batch in train mode (batch
statistics); the extra forwards leave BN's running statistics untouched (:func:`preserved`).
The first weight layer has no earlier layer (ICS 0 by definition) and is skipped.

Specs: ``ics`` (every weight layer but the first) or ``ics:PATH`` (one, e.g. ``blocks.2.op``).
Metrics per layer: ``ics/PATH/l2`` (raw ||G - G'||, the paper's measure), ``ics/PATH/cos`` (the
paper's cosine) and ``ics/PATH/rel`` (||G - G'|| / ||G||, free of the gradient's scale).
Cost per metric step: one trial optimizer step plus one forward/backward per measured layer.

Seeds trained together (:mod:`bnlab.train.seeds`) run it per member (:attr:`ICS.per_member`): on the member's
model written out of the group, with an optimizer holding the member's part of the group's optimizer state
(:func:`bnlab.train.grouped.member_optimizer`), so the trial step is the member's own.
"""

from __future__ import annotations

import torch
from torch import nn

from ...models import is_norm_layer
from ...train.probes import Probe, StepContext, register_probe
from .restore import preserved


def weight_layers(model: nn.Module) -> list[str]:
    """Paths of the Conv/Linear modules (own ``weight``, not a norm), in module order."""
    return [
        name
        for name, m in model.named_modules()
        if name
        and isinstance(getattr(m, "weight", None), nn.Parameter)
        and not is_norm_layer(m)
        and not any(True for _ in m.children())
    ]


def trial_update(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[int, torch.Tensor]:
    """{id(param): the change ``optimizer.step()`` would make now}; the caller must undo the step."""
    before = {id(p): p.detach().clone() for p in model.parameters()}
    optimizer.step()
    return {id(p): p.detach() - before[id(p)] for p in model.parameters()}


class ICS(Probe):
    per_member = True  # reads only the model, batch, loss and optimizer it is handed

    def __init__(self, path: str | None = None) -> None:
        super().__init__()
        self.path = path
        self.layers: list[str] = []

    def attach(self, model: nn.Module) -> None:
        layers = weight_layers(model)
        if self.path is None:
            self.layers = layers[1:]
        elif self.path in layers[1:]:
            self.layers = [self.path]
        else:
            raise ValueError(
                f"expected ics:PATH with PATH a weight layer after the first, one of {layers[1:]} (got {self.path!r})"
            )

    def after_backward(self, ctx: StepContext) -> None:
        model = ctx.model
        named = list(model.named_parameters())
        order = {name: i for i, (name, _) in enumerate(named)}
        with preserved(model, ctx.optimizer):
            start = {id(p): p.detach().clone() for _, p in named}
            with torch.no_grad():
                delta = trial_update(model, ctx.optimizer)
            for path in self.layers:
                weight = model.get_submodule(path).weight
                assert isinstance(weight, torch.Tensor)  # a conv or linear layer's parameter
                g = weight.grad.detach().clone() if weight.grad is not None else torch.zeros_like(weight)
                first = order[f"{path}.weight"]
                with torch.no_grad():
                    for i, (_, p) in enumerate(named):
                        p.copy_(start[id(p)] + delta[id(p)] if i < first else start[id(p)])
                loss = ctx.loss_fn(model(ctx.x), ctx.y)
                (g_new,) = torch.autograd.grad(loss, [weight])
                self._values.update(ics_metrics(path, g, g_new))


def ics_metrics(path: str, g: torch.Tensor, g_new: torch.Tensor) -> dict[str, float]:
    g, g_new = g.double().flatten(), g_new.double().flatten()
    l2 = float((g - g_new).norm())
    norms = float(g.norm() * g_new.norm())
    cos = float(g @ g_new) / norms if norms > 0 else float("nan")
    rel = l2 / float(g.norm()) if float(g.norm()) > 0 else float("nan")
    return {f"ics/{path}/l2": l2, f"ics/{path}/cos": cos, f"ics/{path}/rel": rel}


def _ics(arg: str | None) -> Probe:
    return ICS(arg or None)


register_probe("ics", _ics)
