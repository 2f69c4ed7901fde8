"""Data-parallel runs on torch.distributed: DDP, with SyncBN wherever the model has BN.

Two ways to start one:

* ``bnlab train ... --nproc N`` (or :func:`launch`) spawns N processes on this machine;
* ``torchrun --nproc-per-node N -m bnlab train ...`` starts them itself; :func:`init_from_env`
  joins the group it describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR/PORT``).

The backend is gloo on CPU and NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``). Every rank
draws the same global batch order and takes its ``batch_size / N`` slice; DDP averages the
gradients, so without BN -- or with SyncBN, whose statistics are taken over the global batch -- a
step equals a single-process step on the whole batch. With plain per-process BN each rank
normalizes its own slice, as ghost batch norm with ``batch_size / N`` examples per ghost batch.

:func:`convert_sync_batchnorm` (in :mod:`bnlab.train.ddp`, below the trainer that calls it) is the one
place that decides how BN becomes SyncBN:
``bnlab.nn.SyncBatchNorm.convert_sync_batchnorm`` (bnlab implements BN, and its SyncBatchNorm
works with gloo on CPU, where torch's refuses CPU tensors). Pass ``sync_bn=keep_per_process_bn``
(``--no-sync-bn``) to ask for per-process statistics on purpose.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from typing import NoReturn

import torch
import torch.distributed as dist

from .config import RunConfig
from .ddp import convert_sync_batchnorm as convert_sync_batchnorm  # re-exported (importable from here)
from .ddp import keep_per_process_bn
from .ddp import wrap_ddp as wrap_ddp  # re-exported
from .result import RunResult
from .trainer import train


def backend_for(device: str | torch.device) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def env_world_size() -> int:
    """WORLD_SIZE from a launcher such as torchrun (1 when not launched by one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: str = "cpu") -> torch.device:
    """Join the process group torchrun describes; returns this rank's device."""
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend_for(dev), init_method="env://")
    return dev


def leave(code: int = 0) -> NoReturn:
    """End a process that ran a gloo process group: flush its output, then exit at once.

    In torch 2.13 a group that DDP has used outlives ``destroy_process_group`` (its worker threads
    keep running), and a worker thread still releasing the last collective's tensors while the
    interpreter shuts down aborts the process (SIGABRT, "terminate called without an active
    exception": 4 of 40 two-process runs of ``launch`` here, a failed CI run once). Exiting without
    the interpreter's shutdown leaves that race nothing to hit; the process has nothing left to do.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(
    rank: int, config: dict, nproc: int, port: int, out: str, device: str, threads: int, per_process_bn: bool
) -> None:
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", rank)
        torch.cuda.set_device(dev)
    dist.init_process_group(backend_for(dev), init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=nproc)
    try:
        result = train(
            RunConfig.from_dict(config),
            device=dev,
            threads=threads,
            progress=False if rank else None,
            sync_bn=keep_per_process_bn if per_process_bn else None,
        )
        if rank == 0:
            with open(out, "w") as f:
                json.dump(result.to_dict(), f)
    finally:
        dist.destroy_process_group()
    leave(0)  # (an exception above propagates instead, so that the launcher reports it)


def launch(
    config: RunConfig, nproc: int, *, device: str = "cpu", threads: int = 1, per_process_bn: bool = False
) -> RunResult:
    """Run ``config`` data-parallel on ``nproc`` spawned local processes; returns rank 0's result."""
    if nproc < 1:
        raise ValueError(f"expected nproc >= 1 (got {nproc})")
    if torch.device(device).type == "cuda" and nproc > torch.cuda.device_count():
        raise ValueError(f"expected nproc <= the {torch.cuda.device_count()} visible GPUs (got {nproc})")
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        mp.start_processes(
            _worker,
            args=(config.to_dict(), nproc, _free_port(), out, device, threads, per_process_bn),
            nprocs=nproc,
            join=True,
            start_method="spawn",
        )
        with open(out) as f:
            return RunResult.from_dict(json.load(f))
