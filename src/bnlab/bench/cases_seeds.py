"""Bench rows of the seed-step: k seeds of one setting trained together against one at a time.

* ``seed_step_cnn`` -- the lab's MNIST-1D CNN with bnlab BN, batch 100, SGD;
* ``seed_step_mlp`` -- the sigmoid MLP of Ioffe & Szegedy (3x100, bnlab BN), batch 60, SGD;
* ``seed_step_c12_random`` -- C12's random arm: the CNN with bnlab BN, 150 random weights trained
  (gradients masked), Adam, batch 100;
* ``seed_step_c10_ghost`` -- C10's large ghost setting: the CNN with ghost BN (ghosts of 32), batch
  1024, SGD; these two at k = 1 and the sweep's group width, 8.

The row's shape is (k, batch). The "torch" column is today's single-seed trainer doing k steps (k
models, each its own step as :func:`bnlab.train.train` runs it), the "bnlab" column one step of the
k seeds as one grouped model (:func:`bnlab.train.seeds.group_step`, what :func:`~bnlab.train.seeds.
train_seeds` runs). So ``ratio`` is the CPU time per seed-step grouped over alone, and the row's
``alone_us`` / ``grouped_us`` are the CPU times per seed-step. Both are timed in CPU time
(``time.process_time``), interleaved in one process; run with ``--threads 1`` for the lab's
setting. Not part of --quick (they load MNIST-1D).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from .registry import Case, register

KS = (1, 4, 16, 32)  # 32: where the gain still grows beyond the 16 of the seed-step table (docs/guide/seeds.md)


def _settings():
    from ..train import RunConfig

    return {
        "cnn": RunConfig(model="cnn", norm="bn", lr=0.05, batch_size=100),
        "mlp": RunConfig(model="mlp", norm="bn", act="sigmoid", lr=0.5, batch_size=60),
        "c12_random": RunConfig(
            model="cnn", norm="bn", optimizer="adam", lr=1e-2, batch_size=100, trainable="random", trainable_k=150
        ),
        "c10_ghost": RunConfig(
            model="cnn", norm="ghost_bn", norm_kw={"virtual_batch_size": 32}, lr=0.566, batch_size=1024
        ),
    }


def seed_step_fns(model_name: str, k: int, batch: int, steps: int = 64):
    """(k single-seed steps, one grouped step of k seeds), each a callable that runs one step on the
    next of ``steps`` precomputed batches of MNIST-1D."""
    from .. import data as bdata
    from ..models import freeze
    from ..train.grouped import group, mask_gradients
    from ..train.seeds import group_step
    from ..train.trainer import build_model, build_optimizer, set_trainable

    config = dataclasses.replace(_settings()[model_name], batch_size=batch)
    ds = bdata.load(config.data)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, ds.x_train.shape[0], (k, batch), generator=gen) for _ in range(steps)]
    models, masks = [], []
    for s in range(k):  # as train_seeds builds its members
        torch.manual_seed(s)
        models.append(build_model(dataclasses.replace(config, seed=s), ds))
        set_trainable(models[-1], config, torch.Generator().manual_seed(s + 1))
        if config.trainable == "random":
            masks.append(
                freeze.random_subset_masks(models[-1], config.trainable_k, torch.Generator().manual_seed(s + 1))
            )
    alone = [(m, build_optimizer(config, [p for p in m.parameters() if p.requires_grad])) for m in models]
    grouped = group(models)
    if masks:
        mask_gradients(grouped, models, masks)
    grouped_opt = build_optimizer(config, [p for p in grouped.parameters() if p.requires_grad])
    x, y = ds.x_train, ds.y_train
    pos = {"alone": 0, "grouped": 0}

    def one_at_a_time():
        idx = batches[pos["alone"] % steps]
        pos["alone"] += 1
        for i, (m, opt) in enumerate(alone):  # the single-seed trainer's step, k times
            xb, yb = x.index_select(0, idx[i]), y.index_select(0, idx[i])
            loss = F.cross_entropy(m(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def together():
        idx = batches[pos["grouped"] % steps]
        pos["grouped"] += 1
        group_step(grouped, grouped_opt, x, y, idx)

    return one_at_a_time, together


def _build(model_name: str):
    def build(case: Case):
        k, batch = case.shape
        alone, grouped = seed_step_fns(model_name, k, batch)
        return alone, grouped, f"grouped, k={k}", {"k": k, "per_seed_step": True}

    return build


for _name, _batch, _ks in (("cnn", 100, KS), ("mlp", 60, KS), ("c12_random", 100, (1, 8)), ("c10_ghost", 1024, (1, 8))):
    register(
        f"seed_step_{_name}",
        passes=0,
        dims=(1,),
        layouts=("nchw",),
        float32_only=True,
        shapes=tuple((k, _batch) for k in _ks),
        quick=False,
        cpu_time=True,
    )(_build(_name))
