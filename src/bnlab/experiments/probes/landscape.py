"""Loss-landscape smoothness along the gradient (Santurkar et al. 2018, "How Does Batch
Normalization Help Optimization?", §3.1 and Fig. 4, https://arxiv.org/abs/1805.11604).

At a metric step, with w the trainable parameters, g = grad L(w) the training gradient of this
step's batch and lr the optimizer's current learning rate, the probe moves to
w_eta = w - eta * g for every eta in ``ETAS`` x lr and measures, on the SAME batch in train mode
(batch statistics):

* loss Lipschitzness: the range of the loss over {w} and the w_eta:
  ``landscape/loss_min``, ``landscape/loss_max``, ``landscape/loss_range`` (= max - min);
* gradient predictiveness: ||grad L(w_eta) - grad L(w)||_2 over the etas:
  ``landscape/grad_diff_min``, ``landscape/grad_diff_max``;
* effective beta-smoothness: max over eta of ||grad L(w_eta) - grad L(w)|| / ||eta g||:
  ``landscape/beta``.

The step is plain ``-eta * g`` (the paper's "move along the gradient"), not the optimizer's update.
Gradients are over all trainable parameters, concatenated. The extra forwards leave BN's running
statistics, the parameters, their ``.grad``, modes and RNG as they were (:func:`preserved`).
Cost per metric step: one forward/backward per eta. Spec: ``landscape`` (no argument).
"""

from __future__ import annotations

import math

import torch

from ...train.probes import Probe, StepContext, register_probe
from .restore import preserved

ETAS = (0.5, 1.0, 2.0, 3.0, 4.0)  # distances, in units of the current learning rate (paper: 1/2 .. 4 x lr)


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().double().flatten() for t in tensors])


class Landscape(Probe):
    per_member = True  # reads only the model, batch, loss and learning rate it is handed

    def after_backward(self, ctx: StepContext) -> None:
        model = ctx.model
        params = [p for p in model.parameters() if p.requires_grad]
        grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        lr = float(ctx.optimizer.param_groups[0]["lr"])
        g = _flat(grads)
        g_norm = float(g.norm())
        losses, diffs, betas = [float(ctx.loss)], [], []
        with preserved(model):
            start = [p.detach().clone() for p in params]
            for eta in (e * lr for e in ETAS):
                with torch.no_grad():
                    for p, w, gp in zip(params, start, grads):
                        p.copy_(w - eta * gp)
                loss = ctx.loss_fn(model(ctx.x), ctx.y)
                grad_eta = torch.autograd.grad(loss, params, allow_unused=True)
                grad_eta = [torch.zeros_like(p) if ge is None else ge for p, ge in zip(params, grad_eta)]
                diff = float((_flat(grad_eta) - g).norm())
                losses.append(float(loss.detach()))
                diffs.append(diff)
                betas.append(diff / (eta * g_norm) if g_norm > 0 else math.nan)
        self._values = {
            "landscape/loss_min": min(losses),
            "landscape/loss_max": max(losses),
            "landscape/loss_range": max(losses) - min(losses),
            "landscape/grad_diff_min": min(diffs),
            "landscape/grad_diff_max": max(diffs),
            "landscape/beta": max(betas),
        }


def _landscape(arg: str | None) -> Probe:
    if arg:
        raise ValueError(f"expected landscape without an argument (got {arg!r})")
    return Landscape()


register_probe("landscape", _landscape)
