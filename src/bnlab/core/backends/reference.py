"""The reference backend: every primitive composed from :mod:`bnlab.core.math` in torch operations.

Runs on any device and dtype torch supports, under torch.compile, torch.jit and the torch.func
transforms (it is plain differentiable torch code), and is what the fast kernels are tested
against. The fused activation is applied after the normalization with torch's own activation,
and its derivative is recomputed from the pre-activation in the backward
(:mod:`bnlab.activations`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ... import activations as A
from .. import math as M
from . import Backend, Running


class Reference(Backend):
    """The primitives in torch operations; ``traced=True`` marks the instance the dispatch hands out
    while a tracer is active (so callers keep to what tracers support).

    Untraced, ``forward`` applies the running-statistics update (``fuses_update``), as the kernels
    do: the update then runs inside the autograd Function, before it saves its tensors. Activation
    checkpointing (``torch.utils.checkpoint``, non-reentrant, early stop on) ends a recompute at
    the last saved tensor of the segment; an update made after the Function returned would be
    skipped there while ``num_batches_tracked`` still counted the recompute, where torch's batch
    norm (one operator that updates and saves) updates twice. Traced calls keep the update outside
    the Function, in plain torch operations the tracers record.
    """

    name = "reference"

    def __init__(self, traced: bool = False) -> None:
        self.traced = traced
        self.fuses_update = not traced

    def forward(self, x, weight, bias, eps, act, slope, running: Running | None):
        mean, var, residual = M.batch_moments(x)
        y = A.activate(M.normalize(x, mean, torch.rsqrt(var + eps), weight, bias, residual), act, slope)
        if running is not None:
            M.update_running_stats(running.mean, running.var, mean, var, running.count, running.momentum)
        return y, mean, var

    def stats(self, x):
        return M.batch_stats(x)

    def normalize(self, x, mean, var, weight, bias, eps, act, slope):
        return A.activate(M.normalize(x, mean, torch.rsqrt(var + eps), weight, bias), act, slope)

    def _g(self, dy: Tensor, x, weight, bias, mean, invstd, act, slope) -> Tensor:
        """dy * act'(z), z recomputed from x and the statistics."""
        if act == "identity":
            return dy
        return A.activation_grad(dy, M.normalize(x, mean, invstd, weight, bias), act, slope)

    def backward(self, dy, x, weight, bias, mean, var, eps, act, slope, needs):
        invstd = torch.rsqrt(var + eps)
        m = max(M.count_per_channel(x), 1)
        g = self._g(dy, x, weight, bias, mean, invstd, act, slope)
        sum_g, sum_gxmu = M.backward_reduce(g, x, mean)
        dx = M.backward_elemt(g, x, mean, invstd, weight, sum_g / m, sum_gxmu / m) if needs[0] else None
        dweight, dbias = M.param_grads(sum_g, sum_gxmu, invstd, weight, bias)
        return dx, dweight if needs[1] else None, dbias if needs[2] else None

    def backward_reduce(self, dy, x, weight, bias, mean, var, eps, act, slope):
        invstd = torch.rsqrt(var + eps)
        return M.backward_reduce(self._g(dy, x, weight, bias, mean, invstd, act, slope), x, mean)

    def backward_elemt(self, dy, x, weight, bias, mean, var, eps, act, slope, mean_g, mean_gxmu):
        invstd = torch.rsqrt(var + eps)
        g = self._g(dy, x, weight, bias, mean, invstd, act, slope)
        return M.backward_elemt(g, x, mean, invstd, weight, mean_g, mean_gxmu)

    def eval(self, x, running_mean, running_var, weight, bias, eps, act, slope):
        # Eval is an affine map of x with constant statistics, in plain differentiable ops.
        return A.activate(M.eval_normalize(x, running_mean, running_var, weight, bias, eps), act, slope)

    def update_running_stats(self, running_mean, running_var, mean, var, count, momentum):
        M.update_running_stats(running_mean, running_var, mean, var, count, momentum)
