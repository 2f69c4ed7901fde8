"""``bnlab list`` and ``bnlab run ID``: the experiments from the command line."""

from __future__ import annotations

import json

from ..train.options import add_sweep_arguments, positive_int, sweep_options
from . import registry


def verdict_line(result) -> str:
    """ "reproduced, stable in 97% of resamples" -- or "UNDERPOWERED: the rule gave ..." -- for a terminal;
    ``result`` is a claim or one of its parts."""
    from .stability import describe

    return f"{result.verdict.upper()}, {describe(result.stability)}"


def add_list_arguments(parser) -> None:
    pass


def list_main(args) -> int:
    for claim_id in registry.ids():
        module = registry.get(claim_id)
        print(f"{claim_id:<4} {module.NAME:<28} {module.QUESTION}")
    return 0


def add_run_arguments(parser) -> None:
    parser.add_argument("id", help="claim id, e.g. C3 (see bnlab list)")
    parser.add_argument("--quick", action="store_true", help="the small CI-sized sweep")
    parser.add_argument(
        "--seeds", type=positive_int, default=None, metavar="N", help="seeds per setting (default: the experiment's)"
    )
    add_sweep_arguments(parser, jobs=1)
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")


def run_main(args) -> int:
    from ..report.progress import Progress

    registry.get(args.id)  # an unknown id fails before anything starts
    progress = Progress()
    ctx = registry.Context(quick=args.quick, seeds=args.seeds, progress=progress, **sweep_options(args))
    try:
        result = registry.run(args.id, ctx)
    finally:
        progress.close()
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    print(f"{result.id} {result.name}: {result.question}")
    print(f"claim:   {result.claim} ({result.source})")
    print(f"rule:    {result.rule}")
    print(f"verdict: {verdict_line(result)}")
    for part in result.parts:
        print(f"  part:  {part.title}: {verdict_line(part)}")
    if result.rounds:
        r = result.rounds
        print(f"seeds:   {r['seeds']} per setting in {r['rounds']} round(s) of {r['plan']} ({r['stopped']})")
    print(f"summary: {result.summary}")
    print("numbers: " + json.dumps(result.to_json()["numbers"], indent=2)[:4000])
    print(f"({result.wall_time_s:.1f} s: its runs' measured wall time plus the analysis)")
    return 0
