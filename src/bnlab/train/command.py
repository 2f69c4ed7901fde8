"""``bnlab train``: run one configuration and print its result.

::

    bnlab train --data mnist1d --model cnn --norm bn --placement before --lr 0.1 --seed 0 --steps 2000
    bnlab train ... --nproc 2                  # data-parallel on 2 local processes (gloo on CPU)
    torchrun --nproc-per-node 2 -m bnlab train ...
    bnlab train ... --store results.db         # reuse a stored result of this config, or store this one
    bnlab train ... --scheduler tcp://host:8786  # run it on a worker of a Dask cluster

Every RunConfig field is an option (``--norm-kw groups=4`` for dict fields, ``--probe`` repeated
for probes). Prints the metric rows and a summary; ``--json`` prints the whole result as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from .config import OPTIMIZERS, SCHEDULES, TRAINABLE, RunConfig
from .options import add_scheduler_argument, check_device, device_name, positive_int

_DEFAULT = RunConfig()


def _kv(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (got {text!r})")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _data_name(text: str) -> str:
    from .. import data

    try:
        return data.check_name(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .. import data, models

    d = _DEFAULT
    p.add_argument(
        "--data",
        default=d.data,
        type=_data_name,
        metavar="NAME",
        help=f"data set: one of {', '.join(data.NAMES)}, or a shifted test set such as "
        f"mnist1d-c/noise/3 (default {d.data})",
    )
    p.add_argument("--data-root", default=None, help="folder of the files of mnist / fashion-mnist / cifar10")
    p.add_argument("--model", default=d.model, help=f"one of {models.available_models()} (default {d.model})")
    p.add_argument("--norm", default=d.norm, help=f"one of {models.available_norms()} (default {d.norm})")
    p.add_argument(
        "--placement", default=d.placement, choices=models.PLACEMENTS, help="norm before or after the activation"
    )
    p.add_argument("--act", default=None, help=f"one of {models.available_acts()} (default: the model's)")
    p.add_argument("--norm-kw", type=_kv, action="append", default=[], metavar="KEY=VALUE", help="norm option")
    p.add_argument(
        "--model-kw",
        type=_kv,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model option, e.g. channels=32 (cnn) or widths=[64,64] (mlp, cnn2d, resnet)",
    )
    p.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS)
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    p.add_argument("--momentum", type=float, default=d.momentum, help=f"SGD momentum (default {d.momentum})")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--schedule", default=d.schedule, choices=SCHEDULES)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"global batch (default {d.batch_size})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--trainable", default=d.trainable, choices=TRAINABLE)
    p.add_argument("--trainable-k", type=int, default=d.trainable_k)
    p.add_argument(
        "--eval-every", type=int, default=d.eval_every, help=f"steps between metric rows (default {d.eval_every})"
    )
    p.add_argument("--eval-samples", type=int, default=d.eval_samples, help="0: evaluate on all examples")
    p.add_argument("--probe", action="append", default=[], help="probe spec, e.g. act_pct:blocks.2.act:0 (repeatable)")
    p.add_argument("--diverge-factor", type=float, default=d.diverge_factor)
    p.add_argument("--tag", default=d.tag)
    p.add_argument("--device", default="cpu", type=device_name, help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--nproc", type=positive_int, default=1, help="data-parallel processes (default 1)")
    p.add_argument("--no-sync-bn", action="store_true", help="data-parallel with per-process BN statistics")
    p.add_argument("--store", default=None, help="SQLite results store: reuse this config's result or save it")
    add_scheduler_argument(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: only on a terminal)",
    )


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return RunConfig(
        data=args.data,
        data_root=args.data_root,
        model=args.model,
        norm=args.norm,
        placement=args.placement,
        act=args.act,
        norm_kw=dict(args.norm_kw),
        model_kw=dict(args.model_kw),
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        warmup_steps=args.warmup_steps,
        batch_size=args.batch_size,
        steps=args.steps,
        seed=args.seed,
        trainable=args.trainable,
        trainable_k=args.trainable_k,
        eval_every=args.eval_every,
        eval_samples=args.eval_samples,
        probes=tuple(args.probe),
        diverge_factor=args.diverge_factor,
        tag=args.tag,
    )


def _fmt(v: float) -> str:
    return "nan" if isinstance(v, float) and math.isnan(v) else (f"{v:.4f}" if isinstance(v, float) else str(v))


def print_result(result, as_json: bool, out=None) -> None:
    out = sys.stdout if out is None else out
    if as_json:
        json.dump({"key": result.config.key(), **result.to_dict()}, out, indent=1)
        out.write("\n")
        return
    cols = [c for c in ("step", "lr", "train_loss", "train_acc", "test_loss", "test_acc") if c in result.series]
    out.write("  ".join(f"{c:>10}" for c in cols) + "\n")
    for i in range(len(result.series["step"])):
        out.write(
            "  ".join(f"{_fmt(result.series[c][i]) if c != 'step' else int(result.series[c][i]):>10}" for c in cols)
            + "\n"
        )
    s = result.summary()
    out.write(
        f"status {s['status']}"
        + (f" at step {s['diverged_step']}" if result.diverged else "")
        + f"; {s['steps_done']} steps, {s['steps_per_s']} steps/s, {s['wall_s']} s; "
        f"trainable params {s['trainable_params']}; key {result.config.key()}\n"
    )
    if "test_acc" in s:
        out.write(
            f"final test accuracy {s['test_acc']:.4f} (best {s['best_test_acc']:.4f}), "
            f"train accuracy {s['train_acc']:.4f}, train loss {s['train_loss']:.4f}\n"
        )


def main(args: argparse.Namespace) -> int:
    from . import distributed
    from .trainer import train

    try:
        config = config_from_args(args)
        check_before_work(config, args)
    except ValueError as e:
        print(f"bnlab train: {e}", file=sys.stderr)
        return 2
    store = None
    if args.store:
        from .store import Store

        store = Store(args.store)
        cached = store.get(config)
        if cached is not None:
            print(f"(stored result of {config.key()} in {args.store})", file=sys.stderr)
            print_result(cached, args.json)
            return 0
    if args.scheduler:
        if args.nproc > 1 or distributed.env_world_size() > 1:
            raise ValueError(
                "expected either --scheduler (one Dask worker runs the config) or data-parallel "
                "processes (--nproc, torchrun), not both"
            )
        result = _on_cluster(config, args, store)
    elif distributed.env_world_size() > 1:  # started by torchrun
        import torch.distributed as dist

        device = distributed.init_from_env(args.device)
        rank = dist.get_rank()
        sync = distributed.keep_per_process_bn if args.no_sync_bn else None
        result = train(
            config, device=device, threads=args.threads, progress=args.progress if rank == 0 else False, sync_bn=sync
        )
        dist.destroy_process_group()
        if rank == 0:
            print_result(result, args.json)  # (a data-parallel result is not stored)
        distributed.leave(0)
    elif args.nproc > 1:
        try:
            result = distributed.launch(
                config, args.nproc, device=args.device, threads=args.threads, per_process_bn=args.no_sync_bn
            )
        except ValueError as e:
            print(f"bnlab train: {e}", file=sys.stderr)
            return 2
    else:
        result = train(config, device=args.device, threads=args.threads, progress=args.progress)
    if store is not None and result.env.get("world_size", 1) == 1 and not args.scheduler:
        store.save(result)
    print_result(result, args.json)
    return 0


def check_before_work(config: RunConfig, args: argparse.Namespace) -> None:
    """A ValueError for what the run would refuse only once started: the model, norm and activation
    with their options, and the device (not with --scheduler: the worker's devices are its own)."""
    from .. import models

    models.check_options(config.model, config.norm, config.act, norm_kw=config.norm_kw, model_kw=config.model_kw)
    if not args.scheduler:
        check_device(args.device)


def _on_cluster(config: RunConfig, args: argparse.Namespace, store):
    """The config as a one-run sweep on the Dask scheduler (into --store, else a throwaway store)."""
    import tempfile

    from .sweep import run_sweep

    with tempfile.TemporaryDirectory() as tmp:
        target = store if store is not None else os.path.join(tmp, "run.sqlite")
        return run_sweep(
            [config], target, device=args.device, threads=args.threads, scheduler=args.scheduler, group_seeds=False
        )[0]
