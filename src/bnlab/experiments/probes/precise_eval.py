"""``precise_eval``: test accuracy with the EMA running statistics vs PreciseBN over N samples (C11).

Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021, §3: the EMA of batch statistics lags the
weights, most after high learning rates; PreciseBN (:func:`bnlab.precise_bn`) recomputes the
population statistics with the weights frozen, and ~10^3-10^4 samples suffice.

Spec ``precise_eval:DATA:N1,N2,...`` (e.g. ``precise_eval:mnist1d:100,300,1000,3000,4000``). At
each metric step, after the backward (the weights the trainer evaluates next, before this step's
update), it records

* ``precise/ema_test_acc`` -- eval-mode test accuracy with the layers' own running statistics;
* ``precise/test_acc/N`` -- the same after ``precise_bn`` over the first N training samples of a
  fixed permutation (seeded by the step, from the probe's own generator), in batches of the
  training batch size (population variance biased, as Wu & Johnson).

Every buffer of the model (running statistics, num_batches_tracked) is restored afterwards, and
the train/eval mode and torch's RNG state are untouched.
"""

from __future__ import annotations

import torch

from ... import data as bdata
from ...surgery import precise_bn
from ...train.probes import Probe, StepContext, register_probe
from ...train.trainer import evaluate

_PERM_SEED = 12345  # the permutation of the training set is seeded by this + the step


class PreciseEval(Probe):
    per_member = True  # reads only the model, batch, loss and learning rate it is handed

    def __init__(self, data: str, sizes: tuple[int, ...], dataset: bdata.Dataset | None = None) -> None:
        super().__init__()
        self.data, self.sizes = data, tuple(sizes)
        self._ds = dataset  # None: loaded by name at attach

    def attach(self, model: torch.nn.Module) -> None:
        if self._ds is None:
            self._ds = bdata.load(self.data)

    @torch.no_grad()
    def after_backward(self, ctx: StepContext) -> None:
        model, batch_size = ctx.model, ctx.x.shape[0]
        device = ctx.x.device
        assert self._ds is not None  # loaded by attach
        x_tr, x_te, y_te = (t.to(device) for t in (self._ds.x_train, self._ds.x_test, self._ds.y_test))
        saved = {name: b.clone() for name, b in model.named_buffers()}
        gen = torch.Generator().manual_seed(_PERM_SEED + ctx.step)
        x_perm = x_tr[torch.randperm(x_tr.shape[0], generator=gen).to(device)]  # (N, L), shuffled
        batches = [x_perm[i : i + batch_size] for i in range(0, x_perm.shape[0], batch_size)]
        self._values["precise/ema_test_acc"] = evaluate(model, x_te, y_te)[1]
        try:
            for n in self.sizes:
                precise_bn(model, batches, num_samples=n)
                self._values[f"precise/test_acc/{n}"] = evaluate(model, x_te, y_te)[1]
        finally:
            buffers = dict(model.named_buffers())
            for name, b in saved.items():
                buffers[name].copy_(b)


def _precise_eval(arg: str | None) -> Probe:
    data, _, sizes = (arg or "").partition(":")
    try:
        ns = tuple(int(s) for s in sizes.split(","))
    except ValueError:
        ns = ()
    if not data or not ns or min(ns) < 1:
        raise ValueError(f"expected precise_eval:DATA:N1,N2,... with positive N (got {arg!r})")
    return PreciseEval(data, ns)


register_probe("precise_eval", _precise_eval)
