"""Writing a report: DIR/index.html, DIR/results.json and one CSV per experiment.

results.json::

    {"environment": {...},
     "claims": [{"id": "C1", "question": "...", "verdict": "reproduced" | "not reproduced" |
                 "inconclusive", "summary": "...", "numbers": {...}, ...}, ...],
     "demos": {"parity": {...}, "pitfalls": {...}, "diagnostics": {...}, "seconds": ...}}

Each claim entry is :meth:`ClaimResult.to_json` (which adds the title, finding, claim, source,
rule, setup, labels, wall time and figure data to the keys above), in claim order; "demos" is
:func:`bnlab.demos.run`'s measurements, made while the report is written. The CSV of an
experiment is its ``ClaimResult.rows``, one row per run, named ``<id>-<name>.csv``; an experiment
without rows gets no CSV. Each file is written to a temporary name of its own and renamed, so an
interrupted write leaves the previous report intact and two writers of one folder do not collide.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..experiments.result import ClaimResult, json_safe
from .render import index_results, render_page


def csv_name(result: ClaimResult) -> str:
    """``C3-higher-learning-rates.csv``: the id and name, reduced to file-safe characters."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{result.id}-{result.name}").strip("-.") or "claim"
    return f"{stem}.csv"


def rows_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """The rows as CSV text: columns are the union of the rows' keys in first-seen order; missing
    cells are empty; lists and dicts are written as JSON."""
    rows = list(rows)
    columns: dict[str, None] = {}
    for row in rows:
        if not isinstance(row, Mapping):
            raise TypeError(f"expected each row to be a dict (got {type(row).__name__})")
        columns.update(dict.fromkeys(map(str, row)))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({str(k): _cell(v) for k, v in row.items()})
    return out.getvalue()


def _cell(value: Any) -> Any:
    value = json_safe(value)
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def results_json(
    results: Iterable[ClaimResult], environment: Mapping[str, Any], demos: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The results.json document (a dict), claims in claim order."""
    by_id = index_results(results)
    return {
        "environment": json_safe(dict(environment)),
        "claims": [r.to_json() for r in by_id.values()],
        "demos": json_safe(dict(demos or {})),
    }


def write_report(
    results: Iterable[ClaimResult],
    out_dir: str | os.PathLike,
    environment: Mapping[str, Any],
    demos: Mapping[str, Any] | None = None,
) -> Path:
    """Write the report into ``out_dir`` (created if needed) and return the path of index.html.

    ``demos``: :func:`bnlab.demos.run`'s measurements; None measures them now (a few seconds), an
    empty dict leaves them out (the page says so).
    """
    if demos is None:
        from .. import demos as demo_module

        demos = demo_module.run()
    results = list(index_results(results).values())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = {}
    for r in results:
        if r.rows:
            names[r.id] = csv_name(r)
            _write_text(out / names[r.id], rows_csv(r.rows))
    _write_text(
        out / "results.json",
        json.dumps(results_json(results, environment, demos), indent=2, ensure_ascii=False, allow_nan=False) + "\n",
    )
    index = out / "index.html"
    _write_text(index, render_page(results, environment, names, demos))
    return index


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file of a name no other writer uses, then rename it over
    ``path`` (atomic): a reader sees the old file or the new one, whole, and writers of the same
    folder (two reports at once) do not take each other's temporary files."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
