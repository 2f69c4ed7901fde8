"""Bench rows on whole models: folded vs unfolded inference, and the trainer against a bare loop.

* ``fold_eval`` -- a small CNN (three conv3x3-BN-ReLU blocks, :func:`bnlab.surgery.fold.bench_models`)
  in eval mode: the "torch" column is the model with its BN layers, the "bnlab" column the same
  model after :func:`bnlab.fold`. The row's ``max_abs_diff`` is the largest output difference.
* ``trainer_step`` -- the MNIST-1D CNN with bnlab BN, 50 SGD steps at batch 100: the "torch" column
  is a bare PyTorch loop doing the same work (:func:`bnlab.train.overhead.bare_loop`), the "bnlab"
  column :func:`bnlab.train.train` (goal: ratio <= 1.1). Not part of --quick (it loads MNIST-1D).

The byte model does not describe these (``passes`` 0): read their ratio, not GB/s.
"""

from __future__ import annotations

import dataclasses

import torch

from .registry import Case, register


@register("fold_eval", passes=0, dims=(2,), layouts=("nchw",), float32_only=True, shapes=((64, 3, 32, 32),))
def _fold_eval(case: Case):
    from ..surgery.fold import bench_models, max_abs_diff

    model, folded, x = bench_models(batch=case.shape[0], channels=32, size=case.shape[-1], bn="torch")

    def run(m):
        def call():
            with torch.no_grad():
                return m(x)

        return call

    return run(model), run(folded), "folded", {"max_abs_diff": float(max_abs_diff(model, folded, x))}


@register(
    "trainer_step", passes=0, dims=(1,), layouts=("nchw",), float32_only=True, shapes=((100, 25, 20),), quick=False
)
def _trainer_step(case: Case):
    from .. import data as bdata
    from ..train import train
    from ..train.overhead import DEFAULT, bare_loop

    config = dataclasses.replace(DEFAULT, steps=50, eval_every=50, batch_size=case.shape[0], probes=())
    dataset = bdata.load(config.data)

    def trainer():
        with torch.random.fork_rng():
            return train(config, dataset, progress=False)

    def bare():
        with torch.random.fork_rng():
            return bare_loop(config, dataset)

    return bare, trainer, "trainer vs bare loop"
