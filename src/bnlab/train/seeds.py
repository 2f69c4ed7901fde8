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

**Runs that only observe the training** (:mod:`bnlab.train.views`): configs of one seed that differ only in
the probes that read only the model they are handed, ``eval_every`` and (on a constant schedule) ``steps``
train the same bits, so one member serves them all, up to the longest one's steps; each config's result is
recorded on its own metric steps, divergence checks and probes, as if it were trained alone (tested bit for bit).

**Probes** (:mod:`bnlab.train.group_probes`): ``act_pct``, ``act_pct_fixed`` and ``act_moments`` on a block's
norm or act are recorded per member from the grouped forward; a probe that reads only the model it is handed
(``grad_norm``, the experiments' landscape, precise-BN and shift probes) runs on each member's model written
out of the group, with the member's batch, loss and gradients, and its ``finish`` on the member's final model.

What cannot be grouped (:func:`why_not_grouped`: other probes, a norm whose statistics are not per channel,
another model, data-parallel runs) is trained one seed at a time by :func:`train_group`, which says so on the
``bnlab`` logger.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
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
from .views import View, trunk

__all__ = [
    "GROUP_WIDTH",
    "MAX_GROUP_BATCH",
    "same_but_seed",
    "seed_chunks",
    "train_group",
    "train_seeds",
    "why_not_grouped",
]

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
    """Why ``configs`` cannot be trained as one group (None if they can): they must share one
    :func:`~bnlab.train.views.trunk` (differ only in the seed and what only observes the training)."""
    if not configs:
        return "no configs"
    first = trunk(configs[0])
    if any(trunk(c) != first for c in configs[1:]):
        return (
            "the configs differ in more than the seed, the probes that read only the model they are handed, "
            "eval_every and (on a constant schedule) steps"
        )
    if len({c.key() for c in configs}) != len(configs):
        return "a config appears twice"
    for probes in {c.probes for c in configs}:
        if probes and (reason := why_not_probed(probes)) is not None:
            return reason
    c = configs[0]
    if _dist_info()[1] > 1:
        return "data-parallel runs"
    if c.batch_size > MAX_GROUP_BATCH:
        return f"batches of {c.batch_size} (more than {MAX_GROUP_BATCH}: a group saves no time on them)"
    shapes = (dataset.input_shape, dataset.num_classes) if dataset is not None else None
    model = _build(c, shapes)
    return why_not_groupable(model)


def seed_chunks(configs: Sequence[RunConfig], width: int = GROUP_WIDTH) -> list[list[RunConfig]]:
    """``configs`` split into groups of at most ``width`` seeds, each with all its seeds' configs (seeds and
    configs in the order they come)."""
    seeds = list(dict.fromkeys(c.seed for c in configs))
    chunks = [set(seeds[i : i + width]) for i in range(0, len(seeds), width)]
    return [[c for c in configs if c.seed in chunk] for chunk in chunks]


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
    """Each config's result: :func:`train_seeds` on groups of :data:`GROUP_WIDTH` seeds (with all their
    configs) when the configs can be trained together, else :func:`~bnlab.train.trainer.train` for each in
    turn (the reason logged)."""
    if dataset is None and configs:
        dataset = bdata.load(configs[0].data, configs[0].data_root)
    reason = why_not_grouped(configs, dataset)
    if reason is None:
        out: dict[str, RunResult] = {}
        for part in seed_chunks(configs):
            results = train_seeds(
                part, dataset, device=device, threads=threads, progress=progress, keep_model=keep_model
            )
            out.update(zip((c.key() for c in part), results))
        return [out[c.key()] for c in configs]
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
    """Train ``configs`` (of one :func:`~bnlab.train.views.trunk`: differing only in ``seed`` and what only
    observes the training) together; one :class:`RunResult` per config, in order, the same as the config
    trained alone. Each seed is one member, trained once for all its configs, up to the longest one's steps.
    ``width``: members of the grouped model (:data:`GROUP_WIDTH`; the free slots hold copies of the first
    seed). Other arguments as :func:`~bnlab.train.trainer.train`'s. A ValueError if they cannot be trained
    together (:func:`why_not_grouped` says why)."""
    configs = list(configs)
    reason = why_not_grouped(configs, dataset)
    if reason is not None:
        raise ValueError(f"expected configs that can be trained together (got {reason})")
    n_seeds = len({c.seed for c in configs})
    if isinstance(width, bool) or not isinstance(width, int) or width < n_seeds:
        raise ValueError(f"expected a width of at least the configs' {n_seeds} seeds (got {width!r})")
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
    firsts: dict[int, RunConfig] = {}  # each seed's first config: the members, in the order they come
    for c in configs:
        firsts.setdefault(c.seed, c)
    slot = {seed: j for j, seed in enumerate(firsts)}
    real = len(firsts)
    member_configs = [*firsts.values()] + [configs[0]] * (width - real)  # the free slots: copies
    c0, k = member_configs[0], width
    steps = max(c.steps for c in configs)  # the longest view's (views.trunk: the others are its start)
    ds = dataset if dataset is not None else bdata.load(c0.data, c0.data_root)
    ds = ds.to(device)
    n_eval = c0.eval_samples or None
    x_tr_eval, y_tr_eval = ds.x_train[:n_eval], ds.y_train[:n_eval]
    x_te_eval, y_te_eval = ds.x_test[:n_eval], ds.y_test[:n_eval]

    members, trainable, masks = [], [], []
    for c in member_configs:  # each member as train() builds it for its seed alone
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
    probes = GroupProbes(c0.probes, model, members[0])  # those on the grouped model: the views' are the same
    views = _views(configs, slot, model, members)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(c0, params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(c0.schedule, steps, c0.warmup_steps))
    x_train, y_train = ds.x_train, ds.y_train
    orders = []
    for c in member_configs:
        gen = torch.Generator().manual_seed(c.seed)
        if c.batch_classes:
            orders.append(class_batch_indices(y_train.cpu(), c.batch_size, c.batch_classes, steps, gen))
        else:
            orders.append(batch_indices(x_train.shape[0], c.batch_size, steps, gen))

    losses = torch.zeros(steps, k, device=device)  # per-step batch loss of each member
    first_loss: list[float] = []
    n_runs = len(configs)
    train_s = 0.0
    bar = _Progress(steps, progress)
    model.train()

    t_steps = time.perf_counter()
    for step, idx in enumerate(zip(*orders), 1):
        live = [v for v in views.values() if not v.done]
        metric = [v for v in live if v.metric_step(step)]
        hooks = []
        if metric:
            probes.arm(sorted({j for v in metric for j in v.active}))
            probes.read_sample(model, x_tr_eval)
            for v in metric:
                v.probes.arm(v.active)
                if v.probes:
                    hooks.append(functools.partial(v.probes.after_backward, step, optimizer, x_tr_eval))
        after_backward = functools.partial(_each, hooks) if hooks else None
        losses[step - 1] = group_step(model, optimizer, x_train, y_train, torch.stack(idx).to(device), after_backward)
        scheduler.step()
        if step == 1:
            first_loss = losses[0].tolist()

        checks = {v: v.check(step, losses, first_loss) for v in live}
        if any(t is not None for t in checks.values()):
            shown = sorted({j for v in live for j in v.active})
            last = losses[step - 1].tolist()
            bar.update(step, f"loss {sum(last[j] for j in shown) / max(1, len(shown)):.4f}")
        recording = [v for v in live if v in metric or checks[v]]
        if not recording:
            continue
        train_s += time.perf_counter() - t_steps
        lr = float(optimizer.param_groups[0]["lr"])
        measured = probes.collect() if metric else {}
        evaluated: list = []  # the members' (train, test) evaluation, once per step, if a view wants it
        for v in recording:
            tripped = checks[v] or []
            rows = tripped if v not in metric else list(v.active)
            values = {j: dict(measured.get(j, {})) for j in rows}
            for j, extra in (v.probes.collect() if v in metric else {}).items():
                values.setdefault(j, {}).update(extra)
            wanted = [j for j in rows if j not in tripped]
            if wanted and not evaluated:
                evaluated = [_evaluate(model, x_tr_eval, y_tr_eval), _evaluate(model, x_te_eval, y_te_eval)]
            for j in rows:
                end = d if (d := v.diverged[j]) is not None else step
                interval = losses[v.last_row[j] : end, j].double()
                row = {"step": float(end), "lr": lr, "train_loss": float(interval.mean())}
                row.update(values.get(j, {}))
                if j in wanted:
                    (tr_loss, tr_acc), (te_loss, te_acc) = evaluated[0][j], evaluated[1][j]
                    row.update(train_eval_loss=tr_loss, train_acc=tr_acc, test_loss=te_loss, test_acc=te_acc)
                row["time_s"] = (time.perf_counter() - t_start) / n_runs
                _append_row(v.series[j], row)
                v.last_row[j] = step
            v.active = [j for j in v.active if j not in tripped]
            if step == v.config.steps or not v.active:
                _end_view(v, model, members, ds, keep_model, shared=len(views) > 1)
        if all(v.done for v in views.values()):
            break
        t_steps = time.perf_counter()
    bar.close()
    env = {
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "world_size": 1,
        "python": platform.python_version(),
        "seed_group": width,
    }
    wall = time.perf_counter() - t_start
    results = []
    for c in configs:
        v, j = views[same_but_seed(c)], slot[c.seed]
        results.append(
            RunResult(
                config=c,
                status=v.status[j],
                series=v.series[j],
                steps_done=v.steps_done(j),
                diverged_step=v.diverged[j],
                wall_s=wall / n_runs,
                train_s=train_s / n_runs,
                trainable_params=trainable[j],
                env=dict(env),
                final_metrics=v.finals[j],
                model=v.models[j] if keep_model else None,
            )
        )
    return results


def _views(configs, slot: dict[int, int], model, members) -> dict[RunConfig, View]:
    """One :class:`~bnlab.train.views.View` per config but the seed, with its members' slots and its own
    :class:`~bnlab.train.group_probes.MemberProbes` (on copies of the members where several views share
    the training: a probe's work on a member, e.g. precise BN's statistics, stays its own)."""
    slots: dict[RunConfig, list[int]] = {}
    for c in configs:
        slots.setdefault(same_but_seed(c), []).append(slot[c.seed])
    shared = len(slots) > 1
    views = {}
    for template, js in slots.items():
        own = [copy.deepcopy(m) if shared and template.probes else m for m in members[: len(slot)]]
        views[template] = View(template, js, MemberProbes(template.probes, model, own))
    return views


def _end_view(v: View, model, members, ds, keep_model: bool, shared: bool) -> None:
    """The view's last step: its finished members' final probe metrics on the model as it stands (the
    config alone ends here), and the models if kept (copies where the training goes on for others)."""
    for j in v.slots:
        if v.status[j] == "finished":
            v.finals[j] = v.probes.finish(j, ds)
        if keep_model:
            member = ungroup(model, j, members[j])
            v.models[j] = copy.deepcopy(member) if shared else member
    v.probes.detach()
    v.done = True


def _each(hooks, *args) -> None:
    for hook in hooks:
        hook(*args)
