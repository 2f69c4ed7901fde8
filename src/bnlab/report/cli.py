"""``bnlab report [--quick] [--out DIR] [--jobs N] [--seeds N]``: run every experiment, write the page.

The experiments come from one function, ``bnlab.experiments.registry.run_all(quick, jobs, seeds,
progress) -> list[ClaimResult]``, which runs each claim's experiment (or reuses its stored runs)
and reports progress through ``progress.update(experiment, done, total)``.
"""

from __future__ import annotations

import argparse
import os
import time

from . import environment
from .progress import Progress, format_duration
from .render import claim_order
from .writer import write_report


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {text!r})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {value})")
    return value


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="the small variant of every experiment (about a minute on 2 cores)")
    parser.add_argument("--out", default="bnlab-report", metavar="DIR",
                        help="folder for index.html, results.json and the CSVs (default: bnlab-report/)")
    parser.add_argument("--jobs", type=_positive_int, default=os.cpu_count() or 1, metavar="N",
                        help="worker processes for the runs (default: the number of CPUs)")
    parser.add_argument("--seeds", type=_positive_int, default=None, metavar="N",
                        help="seeds per configuration (default: each experiment's own)")


def main(args) -> int:
    from ..experiments.registry import run_all

    progress = Progress()
    start = time.perf_counter()
    try:
        results = list(run_all(quick=args.quick, jobs=args.jobs, seeds=args.seeds, progress=progress))
    finally:
        progress.close()
    wall = time.perf_counter() - start
    env = environment.collect(quick=args.quick, jobs=args.jobs, seeds=args.seeds, wall_time_s=wall,
                              claim_seeds={r.id: r.setup.get("seeds") for r in results})
    index = write_report(results, args.out, env)
    for r in sorted(results, key=lambda r: claim_order(r.id)):
        print(f"{r.id:<4} {r.verdict:<15} {r.name}")
    print(f"{len(results)} experiments in {format_duration(wall)}; report: {index.resolve()}")
    return 0


