"""Seeds trained together: k configs that differ only in ``seed``, trained as one grouped model.

::

    from bnlab.train import RunConfig
    from bnlab.train.seeds import train_group, train_seeds
    results = train_seeds([RunConfig(model="mlp", norm="bn", seed=s) for s in range(8)])  # one group
    results = train_group([RunConfig(model="mlp", norm="bn", seed=s) for s in range(20)])  # groups of 8

A lab step of the small models is mostly per-call overhead (small convolutions, linear layers, the
optimizer, Python); one step of k stacked models costs far less than k steps
(:mod:`bnlab.train.grouped`; measured in docs/guide/seeds.md). Each seed is still its own run:

* **initialization** -- member i is built exactly as :func:`~bnlab.train.trainer.train` builds it
  for its seed alone (``torch.manual_seed(seed)``, then the model; the same ``trainable`` subset),
  and then stacked; a random trainable subset's masks are stacked alike and mask the grouped
  gradients, so each member trains exactly its own entries; noisy BN's noise comes from the
  member's own generator, which continues torch's default generator from where ``train()`` starts
  drawing the noise from it (:func:`~bnlab.models.noisy_bn.own_generator`);
* **data order** -- its own batch generator seeded as ``train()`` seeds it;
* **loss** -- the sum of the members' batch losses, so each member's gradient is its own loss's;
  the optimizer (SGD, Adam) is elementwise, so each member's update is its own;
* **divergence** -- checked per member with ``train()``'s rule; a diverged member's row is recorded
  as ``train()`` records it and the member stops counting (its part of the grouped model goes on
  computing, untouched by and not touching the others: no operation mixes members);
* **metrics and result** -- per member, the same series as ``train()``; ``time_s``, ``wall_s`` and
  ``train_s`` are the member's share (the group's time over its seeds). ``env["seed_group"]``
  records the group's width.

**The store and the group.** Every group is computed at one width, :data:`GROUP_WIDTH` (a group of
fewer seeds is filled up with copies of its first seed, computed and dropped). At a fixed width a
member computes the same floating-point operations whatever its companions and its slot (members
never mix, and each layer's way of computing is fixed by its shapes), so a seed's stored result is
the same in every group it can be trained in (tested bit for bit) and the store keys it by its
config alone. It differs from ``train()``'s in the last bits (grouped convolutions, batched
products, batch norm over k*C channels, whose kernel blocks by the channel count), within the
tolerance the tests state.

**Probes** (:mod:`bnlab.train.group_probes`): ``act_pct``, ``act_pct_fixed`` and ``act_moments`` on a block's
norm or act are recorded per member from the grouped forward; a probe that reads only the model it is handed
(``grad_norm``, the experiments' landscape, precise-BN and shift probes) runs on each member's model written
out of the group, with the member's batch, loss and gradients, and its ``finish`` on the member's final model.

What cannot be grouped (:func:`why_not_grouped`: other probes, a norm whose statistics are not per channel,
another model, data-parallel runs) is trained one seed at a time by :func:`train_group`, which says so on the
``bnlab`` logger.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import platform
import time
import types
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import data as bdata
from ..models import freeze
from ..models.noisy_bn import own_generator
from .batches import batch_indices, class_batch_indices
from .config import RunConfig
from .group_probes import GroupProbes, MemberProbes, why_not_probed
from .grouped import group, mask_gradients, ungroup, why_not_groupable
from .result import RunResult
from .schedule import lr_factor
from .trainer import (
    CHECK_EVERY,
    EVAL_CHUNK,
    _append_row,
    _dist_info,
    _Progress,
    build_model,
    build_optimizer,
    members_loss,
    set_trainable,
    train,
)

__all__ = ["GROUP_WIDTH", "MAX_GROUP_BATCH", "same_but_seed", "train_group", "train_seeds", "why_not_grouped"]

log = logging.getLogger("bnlab")

# Members per grouped model. A group of fewer seeds is filled up with copies of its first seed
# (computed, not reported), so every seed is computed in a model of this width: a member's result
# then does not depend on its companions or its slot (tested bit for bit), whereas the kernels'
# blocking of a batch-norm call depends on its channel count, so another width changes the last
# bits. This file is among the result-deciding sources, so changing the width changes the keys.
GROUP_WIDTH = 8
#: The largest batch trained in a group. Larger batches train one seed at a time, as a step on them is
#: limited by memory traffic rather than per-call overhead (a group of 8 took 1.09x the time of 8 single
#: runs at batch 1024, 0.65x at 256 and 0.43x at 100, the lab's CNN, 1 thread, in docs/guide/seeds.md).
MAX_GROUP_BATCH = 512


def same_but_seed(config: RunConfig) -> RunConfig:
    """``config`` with seed 0: configs that map to the same value can be trained together."""
    return dataclasses.replace(config, seed=0)


def why_not_grouped(configs: Sequence[RunConfig], dataset: bdata.Dataset | None = None) -> str | None:
    """Why ``configs`` cannot be trained as one group (None if they can)."""
    if not configs:
        return "no configs"
    first = same_but_seed(configs[0])
    if any(same_but_seed(c) != first for c in configs[1:]):
        return "the configs differ in more than the seed"
    if len({c.seed for c in configs}) != len(configs):
        return "a seed appears twice"
    c = configs[0]
    if c.probes and (reason := why_not_probed(c.probes)) is not None:
        return reason
    if _dist_info()[1] > 1:
        return "data-parallel runs"
    if c.batch_size > MAX_GROUP_BATCH:
        return f"batches of {c.batch_size} (more than {MAX_GROUP_BATCH}: a group saves no time on them)"
    shapes = (dataset.input_shape, dataset.num_classes) if dataset is not None else None
    model = _build(c, shapes)
    return why_not_groupable(model)


def _build(config: RunConfig, shapes) -> torch.nn.Module:
    """The config's model, built without touching the caller's random state (for a check)."""
    if shapes is None:
        ds = bdata.load(config.data, config.data_root)
        shapes = (ds.input_shape, ds.num_classes)
    with torch.random.fork_rng(devices=[]):
        # build_model reads only the data set's input_shape and num_classes
        model = build_model(config, types.SimpleNamespace(input_shape=shapes[0], num_classes=shapes[1]))  # type: ignore[arg-type]
        return own_generator(model)  # as _train_seeds builds each member


def train_group(
    configs: Sequence[RunConfig],
    dataset: bdata.Dataset | None = None,
    *,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    progress: bool | None = None,
    keep_model: bool = False,
) -> list[RunResult]:
    """Each config's result: :func:`train_seeds` on groups of :data:`GROUP_WIDTH` when the configs
    can be trained together, else :func:`~bnlab.train.trainer.train` for each in turn (the reason
    logged)."""
    if dataset is None and configs:
        dataset = bdata.load(configs[0].data, configs[0].data_root)
    reason = why_not_grouped(configs, dataset)
    if reason is None:
        out = []
        for i in range(0, len(configs), GROUP_WIDTH):
            out += train_seeds(
                configs[i : i + GROUP_WIDTH],
                dataset,
                device=device,
                threads=threads,
                progress=progress,
                keep_model=keep_model,
            )
        return out
    if len(configs) > 1:
        log.info("training %d seeds one at a time: %s", len(configs), reason)
    return [
        train(c, dataset, device=device, threads=threads, progress=progress, keep_model=keep_model) for c in configs
    ]


def train_seeds(
    configs: Sequence[RunConfig],
    dataset: bdata.Dataset | None = None,
    *,
    width: int = GROUP_WIDTH,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    progress: bool | None = None,
    keep_model: bool = False,
) -> list[RunResult]:
    """Train ``configs`` (differing only in ``seed``) together; one :class:`RunResult` per config,
    in order. ``width``: members of the grouped model (:data:`GROUP_WIDTH`; the free slots hold
    copies of the first config). Other arguments as :func:`~bnlab.train.trainer.train`'s. A
    ValueError if they cannot be trained together (:func:`why_not_grouped` says why)."""
    configs = list(configs)
    reason = why_not_grouped(configs, dataset)
    if reason is not None:
        raise ValueError(f"expected configs that can be trained together (got {reason})")
    if isinstance(width, bool) or not isinstance(width, int) or width < len(configs):
        raise ValueError(f"expected a width of at least the {len(configs)} configs (got {width!r})")
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    device = torch.device(device)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return _train_seeds(configs, width, dataset, device, progress, keep_model)
    finally:
        torch.set_num_threads(old_threads)


def group_step(
    model, optimizer, x_train: Tensor, y_train: Tensor, idx: Tensor, after_backward: Callable | None = None
) -> Tensor:
    """One training step of the grouped ``model`` on the members' batches ``idx`` (k, N) of the
    training set; returns the members' batch losses (k,), detached. ``after_backward(batches, losses)``,
    if given, runs between the backward and the optimizer step with each member's (x, y) batch and the
    losses."""
    k, n = idx.shape
    xb = x_train.index_select(0, idx.view(-1))
    xb = xb.view(k, n, *xb.shape[1:])  # (k, N, *features)
    yb = y_train.index_select(0, idx.view(-1))  # (k*N,)
    scores = model.scores(model.inputs(xb))  # (k, classes, N)
    member_loss = members_loss(scores, yb.view(k, n))  # (k,)
    optimizer.zero_grad(set_to_none=True)
    member_loss.sum().backward()  # d(sum)/d(loss_i) = 1: each member gets its own gradient
    if after_backward is not None:
        after_backward(list(zip(xb, yb.view(k, n))), member_loss.detach())
    optimizer.step()
    return member_loss.detach()


@torch.no_grad()
def _evaluate(model, x: Tensor, y: Tensor) -> list[tuple[float, float]]:
    """Each member's (mean cross-entropy, accuracy) on (x, y) in eval mode, as ``train()``'s
    :func:`~bnlab.train.trainer.evaluate` computes them (same chunks; the losses on the (k, classes, M)
    scores, so their last bits may differ); the mode is restored."""
    was_training = model.training
    model.eval()
    k = model.k
    loss_sum, correct = [0.0] * k, [0] * k
    try:
        for i in range(0, x.shape[0], EVAL_CHUNK):
            xi, yi = x[i : i + EVAL_CHUNK], y[i : i + EVAL_CHUNK]
            m = xi.shape[0]
            scores = model.scores(model.inputs(xi.unsqueeze(0).expand(k, *xi.shape)))  # (k, classes, M)
            losses = F.cross_entropy(scores.float(), yi.expand(k, m), reduction="none")  # (k, M)
            sums = losses.sum(1).tolist()
            hits = (scores.argmax(1) == yi).sum(1).tolist()
            for j in range(k):
                loss_sum[j] += sums[j]
                correct[j] += int(hits[j])
    finally:
        model.train(was_training)
    n = max(1, x.shape[0])
    return [(loss_sum[j] / n, correct[j] / n) for j in range(k)]


def _train_seeds(configs, width, dataset, device, progress, keep_model) -> list[RunResult]:
    t_start = time.perf_counter()
    real = len(configs)
    configs = configs + [configs[0]] * (width - real)  # the free slots: copies, not reported
    c0, k = configs[0], width
    ds = dataset if dataset is not None else bdata.load(c0.data, c0.data_root)
    ds = ds.to(device)
    n_eval = c0.eval_samples or None
    x_tr_eval, y_tr_eval = ds.x_train[:n_eval], ds.y_train[:n_eval]
    x_te_eval, y_te_eval = ds.x_test[:n_eval], ds.y_test[:n_eval]

    members, trainable, masks = [], [], []
    for c in configs:  # each member as train() builds it for its seed alone
        torch.manual_seed(c.seed)
        m = build_model(c, ds).to(device)
        own_generator(m)  # noisy BN: the noise train() draws from the default generator after the build
        trainable.append(set_trainable(m, c, torch.Generator().manual_seed(c.seed + 1)))
        if c.trainable == "random":  # the same draw, as masks for the grouped parameters
            masks.append(freeze.random_subset_masks(m, c.trainable_k, torch.Generator().manual_seed(c.seed + 1)))
        members.append(m)
    model = group(members).to(device)
    if masks:
        mask_gradients(model, members, masks)
    probes = GroupProbes(c0.probes, model, members[0])
    member_probes = MemberProbes(c0.probes, model, members[:real])  # the free slots record nothing
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(c0, params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(c0.schedule, c0.steps, c0.warmup_steps))
    x_train, y_train = ds.x_train, ds.y_train
    orders = []
    for c in configs:
        gen = torch.Generator().manual_seed(c.seed)
        if c.batch_classes:
            orders.append(class_batch_indices(y_train.cpu(), c.batch_size, c.batch_classes, c.steps, gen))
        else:
            orders.append(batch_indices(x_train.shape[0], c.batch_size, c.steps, gen))

    series: list[dict[str, list[float]]] = [{} for _ in configs]
    losses = torch.zeros(c0.steps, k, device=device)  # per-step batch loss of each member
    checked, last_row_step = 0, [0] * k
    first_loss = [math.nan] * k
    diverged_step: list[int | None]
    status, diverged_step = ["finished"] * k, [None] * k
    active = list(range(real))
    train_s = 0.0
    bar = _Progress(c0.steps, progress)
    model.train()

    t_steps = time.perf_counter()
    step = 0
    for step, idx in enumerate(zip(*orders), 1):
        metric_step = step % c0.eval_every == 0 or step == c0.steps
        after_backward = None
        if metric_step:
            probes.arm(active)
            probes.read_sample(model, x_tr_eval)
            member_probes.arm(active)
            if member_probes:
                after_backward = functools.partial(member_probes.after_backward, step, optimizer, x_tr_eval)
        losses[step - 1] = group_step(model, optimizer, x_train, y_train, torch.stack(idx).to(device), after_backward)
        scheduler.step()

        tripped = []
        if metric_step or step - checked >= CHECK_EVERY:
            window = losses[checked:step].tolist()  # rows of k
            if checked == 0:
                first_loss = list(window[0])
            for j in active:
                bad = [
                    i
                    for i, row in enumerate(window, checked + 1)
                    if not math.isfinite(row[j]) or row[j] > c0.diverge_factor * first_loss[j]
                ]
                if bad:
                    status[j], diverged_step[j] = "diverged", bad[0]
                    tripped.append(j)
            checked = step
            bar.update(step, f"loss {sum(window[-1][j] for j in active) / max(1, len(active)):.4f}")
        if metric_step or tripped:
            train_s += time.perf_counter() - t_steps
            lr = float(optimizer.param_groups[0]["lr"])
            rows = tripped if not metric_step else list(active)
            measured = probes.collect() if metric_step else {}
            for j, values in (member_probes.collect() if metric_step else {}).items():
                measured.setdefault(j, {}).update(values)
            evals = _evaluations(model, rows, tripped, x_tr_eval, y_tr_eval, x_te_eval, y_te_eval)
            for j in rows:
                end = d if (d := diverged_step[j]) is not None else step
                interval = losses[last_row_step[j] : end, j].double()
                row = {"step": float(end), "lr": lr, "train_loss": float(interval.mean())}
                row.update(measured.get(j, {}))
                if j in evals:
                    row.update(evals[j])
                row["time_s"] = (time.perf_counter() - t_start) / real
                _append_row(series[j], row)
                last_row_step[j] = step
            active = [j for j in active if j not in tripped]
            if not active:
                break
            t_steps = time.perf_counter()
    bar.close()
    k = real
    env = {
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "world_size": 1,
        "python": platform.python_version(),
        "seed_group": width,
    }
    results = []
    finals = [member_probes.finish(j, ds) if status[j] == "finished" else {} for j in range(real)]
    member_probes.detach()
    wall = time.perf_counter() - t_start
    for j, c in enumerate(configs[:real]):
        results.append(
            RunResult(
                config=c,
                status=status[j],
                series=series[j],
                steps_done=d if (d := diverged_step[j]) is not None else step,
                diverged_step=diverged_step[j],
                wall_s=wall / k,
                train_s=train_s / k,
                trainable_params=trainable[j],
                env=dict(env),
                final_metrics=finals[j],
                model=ungroup(model, j, members[j]) if keep_model else None,
            )
        )
    return results


def _evaluations(model, rows, tripped, x_tr, y_tr, x_te, y_te) -> dict[int, dict[str, float]]:
    """The eval metrics of the members in ``rows`` that did not just diverge (``train()`` records
    none for a diverged run)."""
    wanted = [j for j in rows if j not in tripped]
    if not wanted:
        return {}
    train_eval, test = _evaluate(model, x_tr, y_tr), _evaluate(model, x_te, y_te)
    return {
        j: {
            "train_eval_loss": train_eval[j][0],
            "train_acc": train_eval[j][1],
            "test_loss": test[j][0],
            "test_acc": test[j][1],
        }
        for j in wanted
    }
