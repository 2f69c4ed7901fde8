"""``bnlab report [--quick] [--out DIR] [--jobs N | --scheduler ADDRESS] [--seeds N]``: run every
experiment, write the page.

The experiments come from one function, ``bnlab.experiments.registry.run_all(quick, jobs, seeds,
progress, scheduler=..., session=...) -> list[ClaimResult]``, which runs each claim's experiment (or
reuses its stored runs) on the session's cluster and reports progress through ``progress.plan(...)``
and ``progress.update(...)``; the demos (:mod:`bnlab.demos`) run meanwhile (:func:`start_demos`).
The output folder is checked before anything runs: a sweep of many minutes must not end in "cannot
write".
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..train.options import add_sweep_arguments, positive_int, sweep_options
from .progress import Progress, format_duration


def add_arguments(parser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="the small variant of every experiment (a smoke test, not evidence)"
    )
    parser.add_argument(
        "--out",
        default="bnlab-report",
        metavar="DIR",
        help="folder for index.html, results.json and the CSVs (default: bnlab-report/)",
    )
    add_sweep_arguments(parser)
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=None,
        metavar="N",
        help="seeds per configuration (default: each experiment's own)",
    )


def check_writable_folder(path: str | os.PathLike) -> Path:
    """``path`` as a folder this process can write files in (created if missing), else ValueError."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: expected a folder for the report (got a file)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise ValueError(f"--out {out}: expected a folder the report can be written to ({e.strerror})") from None
    return out


def start_demos(session) -> Callable[[], dict[str, Any]]:
    """Arrange for :func:`bnlab.demos.run` to overlap the experiments, and return the call that gives its
    measurements. When a sweep starts the session's cluster, the demos go to it as the first task, so that
    one worker measures them while the others train; otherwise (``--jobs 1``, or every run already stored)
    they are measured in this process when that call is made. Either way they are the same bits: one
    thread, seeded."""
    from .. import demos as demo_module
    from ..train.cluster import submit_call

    submitted = []
    session.when_started(lambda client: submitted.append(submit_call(client, demo_module.run, "demos")))

    def measurements() -> dict[str, Any]:
        if submitted:
            try:
                return submitted[0].result()
            except Exception as e:  # noqa: BLE001 -- a lost task (its worker died) must not cost the report
                logging.getLogger("bnlab").warning(
                    "the demos' task on the cluster failed (%s: %s); measuring them here", type(e).__name__, e
                )
        return demo_module.run()

    return measurements


def main(args) -> int:
    from ..experiments.registry import run_all
    from ..train.cluster import Session
    from . import environment
    from .render import claim_order
    from .writer import write_report

    out = check_writable_folder(args.out)
    progress = Progress()
    start = time.perf_counter()
    options = sweep_options(args)
    with Session(options["scheduler"], options["jobs"]) as session:
        demos = start_demos(session)
        try:
            results = list(run_all(quick=args.quick, seeds=args.seeds, progress=progress, session=session, **options))
        finally:
            progress.close()
        wall = time.perf_counter() - start
        demo_results = demos()
    env = environment.collect(
        quick=args.quick,
        jobs=args.jobs,
        threads=args.threads,
        seeds=args.seeds,
        wall_time_s=wall,
        claim_seeds={r.id: r.setup.get("seeds") for r in results},
    )
    index = write_report(results, out, env, demo_results)
    from ..experiments.stability import describe

    for r in sorted(results, key=lambda r: claim_order(r.id)):
        print(f"{r.id:<4} {r.verdict:<15} {r.name:<22} {describe(r.stability)}")
    print(f"{len(results)} experiments in {format_duration(wall)}; report: {index.resolve()}")
    return 0
