"""Command-line options shared by the commands that run sweeps (``report``, ``run``, ``train``),
validated one way everywhere."""

from __future__ import annotations

import argparse
import os
from typing import Any


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (``--jobs 0`` is an error, not silently 1)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {text!r})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {value})")
    return value


def device_name(text: str) -> str:
    """An argparse type: a device torch can parse (cpu, cuda, cuda:1, mps, ...); whether it exists
    here is :func:`check_device`'s question (a Dask worker elsewhere may have it)."""
    import torch

    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a device such as cpu, cuda or cuda:1 (got {text!r})") from None
    return text


def check_device(device: str) -> None:
    """A ValueError unless ``device`` can hold a tensor in this process (a CPU-only torch and
    ``cuda``, a GPU index past the last one, ...)."""
    import torch

    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError, ValueError) as e:  # torch says "not compiled with CUDA" by assert
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"expected a device available here (got {device!r}: {reason})") from None


def default_jobs() -> int:
    return os.cpu_count() or 1


def add_scheduler_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scheduler",
        default=os.environ.get("BNLAB_SCHEDULER") or None,
        metavar="ADDRESS",
        help="run on the Dask scheduler at ADDRESS (tcp://host:8786) instead of local worker "
        "processes; default: $BNLAB_SCHEDULER, else local",
    )


def add_sweep_arguments(parser: argparse.ArgumentParser, jobs: int | None = None) -> None:
    """``--jobs N`` (default ``jobs``, else the number of CPUs), ``--threads N`` (default 1) and
    ``--scheduler ADDRESS``."""
    default = default_jobs() if jobs is None else jobs
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=default,
        metavar="N",
        help=f"local worker processes (default: {default}"
        f"{' = the number of CPUs' if jobs is None else ''}); ignored with --scheduler",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        metavar="N",
        help="torch threads per run (default: 1). A run's last bits depend on it and the results store keys "
        "runs by their config alone, so compare thread counts in separate stores (BNLAB_STORE)",
    )
    add_scheduler_argument(parser)


def sweep_options(args: argparse.Namespace) -> dict[str, Any]:
    """What :func:`add_sweep_arguments` parsed, as the keyword arguments of the lab's runners
    (``jobs``, ``threads``, ``scheduler``)."""
    return {"jobs": args.jobs, "threads": args.threads, "scheduler": args.scheduler}
