"""How much time the trainer adds to the steps themselves: ``measure_overhead() -> dict``.

The reference is a bare PyTorch loop that does the same work as :func:`bnlab.train.train` with
the same config: the same model, optimizer and learning-rate schedule, the same batch order
(a seeded permutation, index_select per batch), ``steps`` forward/backward/step iterations and
one evaluation on the test set at the end. The trainer is run with ``eval_every = steps`` so it
also evaluates once. The two are timed alternately ``repeats`` times in this process (so load
from other processes hits both alike) and the medians are compared. The goal is a ratio <= 1.1.

Returns ``{"trainer_s", "bare_s", "ratio", "trainer_steps_per_s", "bare_steps_per_s", "steps",
"repeats", "threads", "config"}`` -- numbers for ``bnlab bench`` to print.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch
import torch.nn.functional as F

from .. import data as bdata
from .batches import batch_indices
from .config import RunConfig
from .schedule import lr_factor
from .trainer import build_model, build_optimizer, evaluate, train

DEFAULT = RunConfig(data="mnist1d", model="cnn", norm="bn", optimizer="sgd", lr=0.1, batch_size=100, steps=400)


def bare_loop(config: RunConfig, dataset: bdata.Dataset) -> float:
    """The plain loop doing the trainer's work; returns the test accuracy (so nothing is skipped)."""
    torch.manual_seed(config.seed)
    model = build_model(config, dataset)
    opt = build_optimizer(config, list(model.parameters()))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(config.schedule, config.steps, config.warmup_steps))
    gen = torch.Generator().manual_seed(config.seed)
    model.train()
    for idx in batch_indices(dataset.x_train.shape[0], config.batch_size, config.steps, gen):
        loss = F.cross_entropy(model(dataset.x_train[idx]), dataset.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return evaluate(model, dataset.x_test, dataset.y_test)[1]


def measure_overhead(config: RunConfig = DEFAULT, repeats: int = 5, threads: int = 1) -> dict:
    """Median wall time of the trainer and of :func:`bare_loop` on ``config`` (module docstring)."""
    if repeats < 1:
        raise ValueError(f"expected repeats >= 1 (got {repeats})")
    config = dataclasses.replace(config, eval_every=config.steps, probes=())
    dataset = bdata.load(config.data, config.data_root)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    t_trainer, t_bare = [], []
    try:
        with torch.random.fork_rng():
            train(config, dataset, progress=False)  # warm-up: first-call costs hit neither timing
            for _ in range(repeats):
                t0 = time.perf_counter()
                train(config, dataset, progress=False)
                t_trainer.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                bare_loop(config, dataset)
                t_bare.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    trainer_s, bare_s = statistics.median(t_trainer), statistics.median(t_bare)
    return {
        "trainer_s": trainer_s,
        "bare_s": bare_s,
        "ratio": trainer_s / bare_s,
        "trainer_steps_per_s": config.steps / trainer_s,
        "bare_steps_per_s": config.steps / bare_s,
        "steps": config.steps,
        "repeats": repeats,
        "threads": threads,
        "config": config.to_dict(),
    }
