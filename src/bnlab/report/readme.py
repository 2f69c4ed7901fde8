"""The documents generated from the experiment modules and the full edition of the report.

* ``docs/claims.md`` -- every claim the lab tests: its question, what the source says, the source,
  the verdict rule and the experiment's module (from :mod:`.catalogue`);
* the README's verdict table, between ``<!-- verdicts:start -->`` and ``<!-- verdicts:end -->`` --
  each claim's title and source with what the full edition (``docs/report/results.json``) found
  and its verdict.

``python -m bnlab.report.readme`` rewrites both (``scripts/edition`` runs it after writing the
edition); ``--check`` only says whether they are up to date (exit status 1 if not).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..experiments import registry, spec
from ..experiments.result import UNDERPOWERED
from ..experiments.stability import THRESHOLD, Stability, describe
from .catalogue import claims

START, END = "<!-- verdicts:start -->", "<!-- verdicts:end -->"
EDITION = Path("docs/report")
CLAIMS_DOC = Path("docs/claims.md")


def module_path(claim_id: str) -> str:
    return "src/" + registry.EXPERIMENTS[claim_id].replace(".", "/") + ".py"


def claims_markdown() -> str:
    lines = [
        "# The claims bnlab tests",
        "",
        "Generated from the experiment modules by `python -m bnlab.report.readme`: edit a claim in its",
        "module, not here. Each verdict rule is fixed in the module's code before the runs; the report",
        "applies it to the runs and shows the numbers (the full edition: [docs/report/](report/index.html)).",
        "",
    ]
    for c in claims().values():
        s = spec.of(registry.get(c.id))
        parts = [
            f"- **{p.title}.** {p.rule}"
            + (f" Margin: {p.margin.reads or p.margin.size} -- {p.margin.why}." if p.margin else "")
            for p in s.parts
        ]
        history = [f"- Until {h.replaced}: {h.rule} *Why it changed:* {h.reason.rstrip('.')}." for h in s.history]
        seeds = (
            f"**Seeds.** Rounds of {s.seeds.step} from {s.seeds.start} until every verdict is settled, at most "
            f"{s.seeds.cap} ({s.seeds.cluster_cap} on a cluster)."
            if s.seeds
            else ""
        )
        lines += [
            f"## {c.id} · {c.title}",
            "",
            f"**The question.** {c.question}",
            "",
            f"**What the source says.** {c.claim}",
            "",
            f"**Source.** {c.source}",
            "",
            f"**Verdict rule{f' (since {s.rule_version})' if s.rule_version else ''}.** {c.rule}",
            "",
            *(["**Parts.**", "", *parts, ""] if parts else []),
            *(["**Earlier rules.**", "", *history, ""] if history else []),
            *([seeds, ""] if seeds else []),
            f"**Experiment.** [`{module_path(c.id)}`](../{module_path(c.id)})",
            "",
        ]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def verdict_table(doc: Mapping[str, Any]) -> str:
    """The README's table from a full run's results.json document."""
    env = doc.get("environment", {})
    if env.get("quick", True):
        raise ValueError("expected the results.json of a full run (got a --quick run: a smoke test, not evidence)")
    found = {c["id"]: c for c in doc.get("claims", [])}
    minutes = env.get("wall_time_s", 0) / 60
    date = str(env.get("date_utc", ""))[:10]
    head = (
        f"From the full edition of the report in [docs/report/](docs/report/index.html) "
        f"(`{env.get('command', 'bnlab report')}` on {date}: {len(found)} experiments in {minutes:.1f} min on "
        f"{env.get('cpu_count', '?')} cores of an {env.get('cpu', 'unknown CPU')}, torch {env.get('torch', '?')}, "
        f"bnlab {env.get('bnlab', '?')}; brackets hold 95% intervals over seeds; a verdict is a finding when at "
        f"least {THRESHOLD:.0%} of resampled seed sets give it, else the claim is underpowered):"
    )
    rows = ["| claim | what was tested (source) | what this run found | verdict |", "| --- | --- | --- | --- |"]
    for cid, c in claims().items():
        result = found.get(cid)
        rows.append(
            f"| {cid} | {_cell(c.title)} ({_cell(c.source)}) | {_cell(_finding(result))} | {_cell(_verdict(result))} |"
        )
    return "\n".join([head, "", *rows])


def _finding(result: Mapping[str, Any] | None) -> str:
    if result is None:
        return "did not run"
    if result["verdict"] == UNDERPOWERED:
        return f"Measured, not settled (underpowered, not a finding): {result.get('finding', '')}"
    return result.get("finding", "")


def _verdict(result: Mapping[str, Any] | None) -> str:
    """The verdict as the page says it, with its stability."""
    if result is None:
        return "not run"
    stab = result.get("stability")
    words = describe(Stability.from_json(stab) if stab else None)
    out = f"**{result['verdict']}** ({words})"
    parts = [
        f"{p['title']}: **{p['verdict']}** ({p['stability']['share']:.0%} of resamples)"
        for p in result.get("parts", ())
    ]
    if parts:
        out += "; by part: " + "; ".join(parts)
    rounds = result.get("rounds")
    if rounds:
        out += f"; {rounds['seeds']} seeds in {rounds['rounds']} round(s), {rounds['stopped']}"
    return out


def update_readme(readme: str, table: str) -> str:
    """``readme`` with the text between the markers replaced by ``table``."""
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        raise ValueError(f"expected the README to hold the markers {START} ... {END} (found none)")
    return pattern.sub(lambda _: f"{START}\n{table}\n{END}", readme, count=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnlab.report.readme", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=".", help="the repository's root (default: here)")
    parser.add_argument("--check", action="store_true", help="only check that the files are up to date")
    args = parser.parse_args(argv)
    root = Path(args.root)
    results = root / EDITION / "results.json"
    if not results.exists():
        print(f"expected the full edition's {results} (make it with: sh scripts/edition)", file=sys.stderr)
        return 2
    try:
        table = verdict_table(json.loads(results.read_text(encoding="utf-8")))
    except ValueError as err:
        print(f"{results}: {err}", file=sys.stderr)
        return 2
    readme = root / "README.md"
    wanted = {readme: update_readme(readme.read_text(encoding="utf-8"), table), root / CLAIMS_DOC: claims_markdown()}
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    if args.check:
        for p in stale:
            print(f"{p} is out of date: run python -m bnlab.report.readme", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(wanted[p], encoding="utf-8")
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
