"""Two full reports' verdicts side by side: do they disagree anywhere that matters?

Two runs of the same experiments (on two machines, with 1 and 2 torch threads per run, on the
reference path and on the kernels) differ in their floating-point results the way other seeds do,
so their numbers differ; what must not differ is a *settled* verdict. A claim or a part whose
verdict is settled in both runs (stable in at least 90% of resampled seed sets, see
:mod:`bnlab.experiments.stability`) and differs between them is a conflict; an underpowered verdict
settles nothing and conflicts with nothing.

``python -m bnlab.report.compare A/results.json B/results.json --labels "1 thread" "2 threads"``
prints the markdown table (claim, each run's verdict with its stability and parts, and whether they
agree) and a last line that says whether any settled verdict differs; the exit status is 1 if one does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..experiments.result import UNDERPOWERED

Doc = Mapping[str, Any]


def _verdicts(claim: Mapping[str, Any]) -> dict[str, str]:
    """{"": the claim's verdict, part key: the part's verdict} of one claim of a results.json."""
    out = {"": claim["verdict"]}
    out.update({p["key"]: p["verdict"] for p in claim.get("parts", ())})
    return out


def conflicts(a: Doc, b: Doc) -> list[str]:
    """Where both runs settled a verdict and the verdicts differ: "C3" for a claim, "C3/fewer-steps" for a part."""
    found_b = {c["id"]: c for c in b.get("claims", [])}
    out = []
    for claim in a.get("claims", []):
        other = found_b.get(claim["id"])
        if other is None:
            continue
        va, vb = _verdicts(claim), _verdicts(other)
        for key in va.keys() & vb.keys():
            if UNDERPOWERED not in (va[key], vb[key]) and va[key] != vb[key]:
                out.append(claim["id"] + (f"/{key}" if key else ""))
    return sorted(out, key=lambda s: (int(s.split("/")[0][1:]), s))


def _cell(claim: Mapping[str, Any] | None) -> str:
    if claim is None:
        return "not run"
    share = claim.get("stability", {}).get("share")
    out = claim["verdict"] + (f" ({share:.0%})" if share is not None else "")
    parts = [f"{p['key']}: {p['verdict']} ({p['stability']['share']:.0%})" for p in claim.get("parts", ())]
    if parts:
        out += "; " + "; ".join(parts)
    rounds = claim.get("rounds")
    if rounds:
        out += f"; {rounds['seeds']} seeds"
    return out


def _describe(doc: Doc) -> str:
    env = doc.get("environment", {})
    return (
        f"{env.get('cpu', '?')}{' ' + env['cpu_isa'] if env.get('cpu_isa') else ''}, "
        f"{env.get('jobs', '?')} job(s) x {env.get('threads_per_run', 1)} thread(s) per run, "
        f"{env.get('wall_time_s', 0) / 60:.1f} min"
    )


def side_by_side(a: Doc, b: Doc, labels: Sequence[str] = ("A", "B")) -> str:
    """The markdown table of both runs' verdicts, claim by claim, and a line on their conflicts."""
    for doc, label in zip((a, b), labels):
        if doc.get("environment", {}).get("quick", True):
            raise ValueError(f"expected the results.json of a full run for {label} (got a --quick run)")
    found_a = {c["id"]: c for c in a.get("claims", [])}
    found_b = {c["id"]: c for c in b.get("claims", [])}
    ids = sorted(found_a.keys() | found_b.keys(), key=lambda s: int(s[1:]))
    bad = conflicts(a, b)
    rows = [
        f"| claim | {labels[0]} ({_describe(a)}) | {labels[1]} ({_describe(b)}) | settled verdicts |",
        "| --- | --- | --- | --- |",
    ]
    for cid in ids:
        mine = [c for c in bad if c.split("/")[0] == cid]
        rows.append(
            f"| {cid} | {_cell(found_a.get(cid))} | {_cell(found_b.get(cid))} | "
            f"{'differ: ' + ', '.join(mine) if mine else 'agree'} |"
        )
    last = (
        f"Settled verdicts that differ: {', '.join(bad)}."
        if bad
        else "No claim or part got two different settled verdicts."
    )
    return "\n".join([*rows, "", last])


def _load(path: str) -> Doc | None:
    """A results.json document, or None after saying on stderr why it could not be read."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        print(f"{path}: expected a report's results.json ({err})", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnlab.report.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="the first full report's results.json")
    parser.add_argument("b", help="the second full report's results.json")
    parser.add_argument("--labels", nargs=2, default=("A", "B"), metavar=("A", "B"), help="the runs' names")
    args = parser.parse_args(argv)
    docs = [_load(path) for path in (args.a, args.b)]
    a, b = docs
    if a is None or b is None:
        return 2
    try:
        print(side_by_side(a, b, args.labels))
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    return 1 if conflicts(a, b) else 0


if __name__ == "__main__":
    sys.exit(main())
