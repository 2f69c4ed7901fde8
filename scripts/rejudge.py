"""Re-judge a claim on stored runs with fewer seeds or shorter runs, without training anything.

A design question for the lab ("would 1000 steps or 8 seeds settle this claim?") can be answered from a
full report's store: the claim's rule applied to the first N seeds of its stored runs, or to the runs cut
at an earlier step (each run's series up to that step; a run that diverged later counts as finished
there). The numbers in docs/guide/lab.md ("what else was measured for that goal") come from it.

    .venv/bin/python scripts/rejudge.py STORE CLAIM [--seeds 4,8,16] [--steps 1000,1500]

STORE: a results store holding the claim's full runs (``BNLAB_STORE`` of a full ``bnlab report``).
``--steps``: lengths to cut the claim's runs to (each a multiple of their ``eval_every``; the claim's
own sweep must set its length as ``FULL["steps"]``); default: the runs as they are. Every look is judged
as an interim look (no projection of the seeds a verdict needs). A seed count or length whose runs are
not all in the store is reported as missing.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from bnlab.experiments import registry, stability
from bnlab.train.result import RunResult
from bnlab.train.store import Store


def cut(run: RunResult | None, steps: int, config) -> RunResult | None:
    """``run`` as if it had stopped after ``steps`` steps, under ``config`` (the config of that length): its
    metric rows up to ``steps``; diverged only if it diverged by then."""
    if run is None:
        return None
    keep = [i for i, s in enumerate(run.series.get("step", [])) if s <= steps]
    series = {name: [values[i] for i in keep] for name, values in run.series.items()}
    diverged = run.diverged_step if run.diverged_step is not None and run.diverged_step <= steps else None
    return dataclasses.replace(
        run,
        config=config,
        series=series,
        status="diverged" if diverged is not None else "finished",
        diverged_step=diverged,
        steps_done=min(run.steps_done, steps),
        final_metrics=run.final_metrics if steps >= run.config.steps else {},
    )


def looks(store: Path, claim: str, seeds: list[int | None], lengths: list[int | None]) -> list[str]:
    """One line per (length, seed count): the claim's verdict and stability, and each part's. While a length
    is judged, the module's ``FULL`` says that length, for its ``sweep`` and for its ``analyze`` (which may
    read the configs' length, e.g. for "never reached"); the module's own ``FULL`` is put back after."""
    module = registry.get(claim)
    full = getattr(module, "FULL", None)
    own = full.get("steps") if isinstance(full, dict) else None
    if own is None and any(length is not None for length in lengths):
        raise ValueError(f"expected {claim} to declare FULL['steps'] to cut its runs (it does not)")
    lines = []
    with Store(store) as st:
        for length in lengths:
            for n in seeds:
                label = f"{claim} steps={length or own or 'as stored'} seeds={n or 'default'}"
                if length is None:
                    lines.append(f"{label}: {_judge(st, module, store, n, own, length)}")
                    continue
                module.FULL = dict(full, steps=length)
                try:
                    lines.append(f"{label}: {_judge(st, module, store, n, own, length)}")
                finally:
                    module.FULL = full
    return lines


def _judge(st: Store, module, store: Path, n: int | None, own: int | None, length: int | None) -> str:
    configs = module.sweep(False, n)
    stored = [dataclasses.replace(c, steps=own) if length is not None else c for c in configs]
    runs = st.results(stored)
    missing = sum(r is None for r in runs)
    if missing:
        return f"{missing} of {len(runs)} runs missing from the store"
    if length is not None:
        runs = [cut(r, length, c) for r, c in zip(runs, configs)]
    with stability.interim_look():
        result = module.analyze(runs, registry.Context(seeds=n, store=store))
    parts = "; ".join(f"{p.key} {p.stability.verdict} {p.stability.share:.1%}" for p in result.parts)
    s = result.stability
    return f"{s.verdict} {s.share:.1%}" + (f" | {parts}" if parts else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("claim")
    parser.add_argument("--seeds", default="", help="comma-separated seed counts (default: the claim's first round)")
    parser.add_argument("--steps", default="", help="comma-separated run lengths (default: the runs as stored)")
    args = parser.parse_args(argv)
    seeds: list[int | None] = [int(x) for x in args.seeds.split(",") if x] or [None]
    lengths: list[int | None] = [int(x) for x in args.steps.split(",") if x] or [None]
    for line in looks(args.store, args.claim, seeds, lengths):
        print(line)


if __name__ == "__main__":
    main()
