"""``bnlab list`` and ``bnlab run ID``: the experiments from the command line."""

from __future__ import annotations

import json
import sys

from . import registry


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
    parser.add_argument("--seeds", type=int, default=None, help="seeds per setting (default: the experiment's)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes for the sweep (default 1)")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")


def _progress(experiment: str, done: int, total: int) -> None:
    if sys.stderr.isatty():
        print(f"\r{experiment}: {done}/{total} runs", end="" if done < total else "\n", file=sys.stderr, flush=True)


def run_main(args) -> int:
    if args.seeds is not None and args.seeds < 1:
        raise SystemExit(f"bnlab run: expected --seeds >= 1 (got {args.seeds})")
    ctx = registry.Context(quick=args.quick, seeds=args.seeds, jobs=max(1, args.jobs), progress=_progress)
    try:
        result = registry.run(args.id, ctx)
    except ValueError as err:
        raise SystemExit(f"bnlab run: {err}")
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    print(f"{result.id} {result.name}: {result.question}")
    print(f"claim:   {result.claim} ({result.source})")
    print(f"rule:    {result.rule}")
    print(f"verdict: {result.verdict.upper()}")
    print(f"summary: {result.summary}")
    print("numbers: " + json.dumps(result.to_json()["numbers"], indent=2)[:4000])
    print(f"({result.wall_time_s:.1f} s)")
    return 0
