"""The trainer: one :class:`~bnlab.train.config.RunConfig` in, one :class:`RunResult` out.

::

    from bnlab.train import RunConfig, train
    result = train(RunConfig(data="mnist1d", model="cnn", norm="bn", lr=0.1, steps=2000, seed=0))
    result.status, result.final("test_acc"), result.series["test_acc"]

Reproducible: the same config and seed give identical metrics (same device and thread count). The
seed is applied inside :func:`torch.random.fork_rng`, so the caller's RNG state is left as it was;
model init and any noise in the model draw from torch's default generator, the batch order from a
separate generator seeded from the same seed.

Kept lean for small models on CPU: the data set sits on the device, batches are index_selects of a
seeded permutation (no DataLoader), losses stay on the device and are read once per
``CHECK_EVERY`` steps and at metric steps (no per-step host sync), evaluation runs only every
``eval_every`` steps.

Divergence -- a non-finite loss, or one above ``diverge_factor`` times the first step's loss -- ends
the run with status "diverged" (a result, not an exception). The first offending step is found
from the per-step losses kept on the device.

Data-parallel: inside an initialised ``torch.distributed`` process group (see
:mod:`bnlab.train.distributed`) every rank takes its slice of the same global batch, the model is
wrapped in DDP after its BN layers are converted to SyncBN, and rank 0's result is the run's.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import data as bdata
from .. import models
from ..models import freeze
from .batches import batch_indices, class_batch_indices
from .config import RunConfig
from .ddp import convert_sync_batchnorm, wrap_ddp
from .probes import Probe, StepContext, make_probe
from .result import RunResult
from .schedule import lr_factor

CHECK_EVERY = 25  # steps between reads of the loss for the divergence check
EVAL_CHUNK = 2000  # examples per forward pass in evaluation


def build_model(config: RunConfig, dataset: bdata.Dataset) -> nn.Module:
    """The config's model for ``dataset``'s input shape and classes (weights from torch's default RNG)."""
    return models.build(
        config.model,
        norm=config.norm,
        placement=config.placement,
        act=config.act,
        norm_kw=config.norm_kw,
        input_shape=dataset.input_shape,
        num_classes=dataset.num_classes,
        **config.model_kw,
    )


def set_trainable(model: nn.Module, config: RunConfig, generator: torch.Generator) -> int:
    """Apply ``config.trainable``; returns the number of trainable scalars."""
    if config.trainable == "norm":
        return freeze.train_only_norm_affine(model)
    if config.trainable == "random":
        return freeze.train_random_subset(model, config.trainable_k, generator)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_optimizer(config: RunConfig, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def members_loss(scores: Tensor, y: Tensor) -> Tensor:
    """Each model's mean cross entropy (k,) from the scores (k, classes, N) of k models on their batches
    ``y`` (k, N): the softmax runs along N (on (k*N, classes) rows of 10, torch's cross entropy took 3x as
    long, forward and backward, at k = 8, N = 100)."""
    return F.cross_entropy(scores, y, reduction="none").mean(1)


def batch_loss(logits: Tensor, y: Tensor) -> Tensor:
    """A training batch's loss: the mean cross entropy of ``logits`` (N, classes), as :func:`members_loss`
    of one model on their transpose (1, classes, N) -- as seeds trained together take their members' losses
    (:func:`bnlab.train.seeds.group_step`), so that a seed alone and in a group compute its loss and its
    gradient by the same operations."""
    return members_loss(logits.t().unsqueeze(0), y.unsqueeze(0))[0]


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode on (x, y); the mode is restored."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    try:
        for i in range(0, x.shape[0], EVAL_CHUNK):
            logits = model(x[i : i + EVAL_CHUNK])
            yi = y[i : i + EVAL_CHUNK]
            loss_sum += float(F.cross_entropy(logits.float(), yi, reduction="sum"))
            correct += int((logits.argmax(1) == yi).sum())
    finally:
        model.train(was_training)
    n = max(1, x.shape[0])
    return loss_sum / n, correct / n


class _Progress:
    """A one-line progress bar on a terminal's stderr; silent otherwise."""

    def __init__(self, total: int, enabled: bool | None) -> None:
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.last = 0.0

    def update(self, step: int, text: str = "", force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self.last < 0.2):
            return
        self.last = now
        width = 30
        done = int(width * step / self.total)
        sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {step}/{self.total} {text}\033[K")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _dist_info() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, or (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_mean(values: list[float], world: int, device: torch.device) -> list[float]:
    if world == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / world).tolist()


def _any(flag: bool, world: int, device: torch.device) -> bool:
    if world == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def train(
    config: RunConfig,
    dataset: bdata.Dataset | None = None,
    *,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    progress: bool | None = None,
    probes: Sequence[Probe] = (),
    sync_bn: Callable[[nn.Module], nn.Module] | None = None,
    keep_model: bool = False,
) -> RunResult:
    """Train ``config`` and return its :class:`RunResult`.

    Args:
        config: the run.
        dataset: the loaded data (default: ``bnlab.data.load(config.data, config.data_root)``).
        device: where the model and data live. Default: "cpu".
        threads: torch's intra-op threads for this run (restored after); None leaves them as they are.
        progress: draw a progress bar on stderr; None draws it only when stderr is a terminal.
        probes: extra :class:`~bnlab.train.probes.Probe` objects besides ``config.probes``.
        sync_bn: in a process group, the function that converts the model's BN layers to SyncBN
            (default: :func:`bnlab.train.ddp.convert_sync_batchnorm`).
        keep_model: return the trained model as ``result.model`` (it is never stored).
    """
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    device = torch.device(device)
    rng_devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=rng_devices):
            return _train(config, dataset, device, progress, list(probes), sync_bn, keep_model)
    finally:
        torch.set_num_threads(old_threads)


def _train(config, dataset, device, progress, extra_probes, sync_bn, keep_model) -> RunResult:
    t_start = time.perf_counter()
    rank, world = _dist_info()
    if config.batch_size % world:
        raise ValueError(f"expected batch_size divisible by the {world} processes (got {config.batch_size})")
    ds = dataset if dataset is not None else bdata.load(config.data, config.data_root)
    ds = ds.to(device)
    n_eval = config.eval_samples or None
    x_tr_eval, y_tr_eval = ds.x_train[:n_eval], ds.y_train[:n_eval]
    x_te_eval, y_te_eval = ds.x_test[:n_eval], ds.y_test[:n_eval]

    torch.manual_seed(config.seed)
    model = build_model(config, ds).to(device)
    if world > 1:  # SyncBN first: the freezing, the optimizer and the probes see the final modules
        model = (sync_bn or convert_sync_batchnorm)(model)
    subset_gen = torch.Generator().manual_seed(config.seed + 1)
    trainable = set_trainable(model, config, subset_gen)
    params = [p for p in model.parameters() if p.requires_grad]
    probes = [make_probe(s) for s in config.probes] + extra_probes
    for p in probes:
        p.attach(model)
    net = model
    if world > 1:
        net = wrap_ddp(model, device)
    optimizer = build_optimizer(config, params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(config.schedule, config.steps, config.warmup_steps)
    )
    batch_gen = torch.Generator().manual_seed(config.seed)
    local = config.batch_size // world
    x_train, y_train = ds.x_train, ds.y_train

    series: dict[str, list[float]] = {}
    losses = torch.zeros(config.steps, device=device)  # per-step batch loss (this rank's)
    checked = 0  # steps whose losses were already checked
    first_loss = math.nan
    last_row_step = 0
    status, diverged_step = "finished", None
    train_s = 0.0
    bar = _Progress(config.steps, progress if rank == 0 else False)
    net.train()

    t_steps = time.perf_counter()
    step = 0
    if config.batch_classes:
        order = class_batch_indices(y_train.cpu(), config.batch_size, config.batch_classes, config.steps, batch_gen)
    else:
        order = batch_indices(x_train.shape[0], config.batch_size, config.steps, batch_gen)
    for step, idx in enumerate(order, 1):
        idx = idx[rank * local : (rank + 1) * local].to(device, non_blocking=True)
        xb, yb = x_train.index_select(0, idx), y_train.index_select(0, idx)
        metric_step = step % config.eval_every == 0 or step == config.steps
        if metric_step:
            for p in probes:
                p.arm()
        loss = batch_loss(net(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if metric_step and probes:
            ctx = StepContext(step, model, optimizer, xb, yb, loss.detach(), F.cross_entropy, x_tr_eval)
            for p in probes:
                p.after_backward(ctx)
        optimizer.step()
        scheduler.step()
        losses[step - 1] = loss.detach()

        if metric_step or step - checked >= CHECK_EVERY:
            window = losses[checked:step].tolist()
            if checked == 0:
                first_loss = window[0]
            bad = [
                i
                for i, v in enumerate(window, checked + 1)
                if not math.isfinite(v) or v > config.diverge_factor * first_loss
            ]
            checked = step
            if _any(bool(bad), world, device):
                status = "diverged"
                diverged_step = bad[0] if bad else step
                metric_step = True
            bar.update(step, f"loss {window[-1]:.4f}")
        if metric_step:
            train_s += time.perf_counter() - t_steps
            end = diverged_step if diverged_step is not None else step
            interval = losses[last_row_step:end].double()
            train_loss = _all_mean([float(interval.mean())], world, device)[0]
            row = {"step": float(end), "lr": float(optimizer.param_groups[0]["lr"]), "train_loss": train_loss}
            for p in probes:
                row.update(p.collect())
            if status == "finished":
                row["train_eval_loss"], row["train_acc"] = evaluate(model, x_tr_eval, y_tr_eval)
                row["test_loss"], row["test_acc"] = evaluate(model, x_te_eval, y_te_eval)
            row["time_s"] = time.perf_counter() - t_start
            _append_row(series, row)
            last_row_step = step
            bar.update(step, f"loss {train_loss:.4f} test acc {row.get('test_acc', math.nan):.3f}", force=True)
            if status == "diverged":
                break
            t_steps = time.perf_counter()
    bar.close()
    final_metrics: dict[str, float] = {}
    if status == "finished":
        for p in probes:
            final_metrics.update(p.finish(model, ds))
    for p in probes:
        p.detach()
    env = {
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "world_size": world,
        "python": platform.python_version(),
    }
    return RunResult(
        config=config,
        status=status,
        series=series,
        steps_done=diverged_step if diverged_step is not None else step,
        diverged_step=diverged_step,
        wall_s=time.perf_counter() - t_start,
        train_s=train_s,
        trainable_params=trainable,
        env=env,
        final_metrics=final_metrics,
        model=model if keep_model else None,
    )


def _append_row(series: dict[str, list[float]], row: dict[str, float]) -> None:
    """Append ``row`` keeping every list the same length (NaN for a metric missing in a row)."""
    n = len(series.get("step", []))
    for name in row:
        if name not in series:
            series[name] = [math.nan] * n
    for name, values in series.items():
        values.append(float(row.get(name, math.nan)))
