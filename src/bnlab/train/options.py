"""Command-line options shared by the commands that run sweeps (``report``, ``run``, ``train``),
validated one way everywhere."""

from __future__ import annotations

import argparse
import os


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (``--jobs 0`` is an error, not silently 1)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {text!r})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {value})")
    return value


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
    """``--jobs N`` (default ``jobs``, else the number of CPUs) and ``--scheduler ADDRESS``."""
    default = default_jobs() if jobs is None else jobs
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=default,
        metavar="N",
        help=f"local worker processes, one torch thread each (default: {default}"
        f"{' = the number of CPUs' if jobs is None else ''}); ignored with --scheduler",
    )
    add_scheduler_argument(parser)
