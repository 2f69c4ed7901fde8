"""results.json (the issue's schema), the per-experiment CSVs, and the environment record."""

from __future__ import annotations

import csv
import json
import math
import platform
import subprocess
from pathlib import Path

import pytest
import torch
from report_fixtures import ALL_IDS, make_result

import bnlab
from bnlab.experiments import VERDICTS
from bnlab.report import collect_environment, write_report
from bnlab.report.writer import csv_name, rows_csv

REQUIRED = {"id": str, "question": str, "verdict": str, "summary": str, "numbers": dict}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    results = [make_result(cid, figures=False) for cid in reversed(ALL_IDS)]  # any order in
    env = collect_environment(
        quick=True, jobs=2, seeds=None, wall_time_s=3.25, claim_seeds={r.id: r.setup["seeds"] for r in results}
    )
    index = write_report(results, out, env, demos={"pitfalls": {"train_steps": 400}, "seconds": 1.5})
    return out, index, results


def test_results_json_has_the_issue_schema(written):
    out, index, results = written
    assert index == out / "index.html" and index.stat().st_size > 0
    doc = json.loads((out / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert set(doc) == {"environment", "claims", "demos"}
    assert doc["demos"] == {"pitfalls": {"train_steps": 400}, "seconds": 1.5}
    assert [c["id"] for c in doc["claims"]] == list(ALL_IDS)  # one entry per claim, in claim order
    by_id = {r.id: r for r in results}
    for entry in doc["claims"]:
        for key, typ in REQUIRED.items():
            assert isinstance(entry[key], typ), (entry["id"], key)
        assert entry["verdict"] in VERDICTS
        r = by_id[entry["id"]]
        assert (entry["question"], entry["verdict"], entry["summary"]) == (r.question, r.verdict, r.summary)
        ci = entry["numbers"]["final accuracy, BN"]
        assert ci["ci95"][0] <= ci["mean"] <= ci["ci95"][1] and ci["n"] == 3


def test_non_finite_numbers_become_null(tmp_path):
    r = make_result("C7", figures=False)
    r.numbers = {"nan": float("nan"), "inf": [1.0, float("inf")], "t": torch.tensor(2.5)}
    write_report([r], tmp_path, {"wall_time_s": float("nan")}, demos={})
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["claims"][0]["numbers"] == {"nan": None, "inf": [1.0, None], "t": 2.5}
    assert doc["environment"] == {"wall_time_s": None}


def test_one_csv_per_experiment_holds_its_rows(written):
    out, _, results = written
    for r in results:
        path = out / csv_name(r)
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == len(r.rows)
        for got, want in zip(rows, r.rows):
            assert got["norm"] == want["norm"] and int(got["seed"]) == want["seed"]
            assert math.isclose(float(got["final_acc"]), want["final_acc"], rel_tol=1e-12)
    assert sorted(p.name for p in out.glob("*.csv")) == sorted(csv_name(r) for r in results)


def test_csv_columns_are_the_union_of_the_rows_keys():
    text = rows_csv([{"a": 1, "b": [1, 2]}, {"b": None, "c": float("nan"), "a": "x,y"}])
    rows = list(csv.reader(text.splitlines()))
    assert rows == [["a", "b", "c"], ["1", "[1, 2]", ""], ["x,y", "", ""]]


def test_experiment_without_rows_gets_no_csv(tmp_path):
    r = make_result("C2", figures=False)
    r.rows = []
    write_report([r], tmp_path, {}, demos={})
    assert not list(tmp_path.glob("*.csv"))
    assert ".csv" not in (tmp_path / "index.html").read_text()


def test_csv_names_are_file_safe():
    r = make_result("C5", figures=False)
    r.name = "../noisy BN/ä"
    assert csv_name(r) == "C5-..-noisy-BN.csv"  # no path separators, no spaces


def test_environment_records_versions_machine_threads_seeds_and_revision(written):
    out, _, _ = written
    env = json.loads((out / "results.json").read_text())["environment"]
    assert env["bnlab"] == bnlab.__version__ and env["torch"] == torch.__version__
    assert env["python"] == platform.python_version()
    assert env["torch_threads"] == torch.get_num_threads() and env["cpu"]
    assert env["wall_time_s"] == 3.25 and env["quick"] is True and env["jobs"] == 2
    assert env["seeds"] == {"requested": None, "per_claim": {cid: [0, 1, 2] for cid in ALL_IDS}}
    src = Path(bnlab.__file__).parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        assert env["git_revision"] is None
    else:
        assert env["git_revision"] in (head, f"{head}-dirty")


def test_the_demos_are_measured_when_none_are_given(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("bnlab.demos.run", lambda: calls.append(1) or {"seconds": 0.5})
    write_report([make_result("C2", figures=False)], tmp_path, {})
    assert calls == [1]
    assert json.loads((tmp_path / "results.json").read_text())["demos"] == {"seconds": 0.5}
