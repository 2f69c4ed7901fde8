"""`bnlab report`: writes the report from run_all's results; bad arguments are refused."""

from __future__ import annotations

import json

import pytest
from report_fixtures import make_result

from bnlab.cli import main


def test_it_runs_all_experiments_once_and_writes_the_report(tmp_path, monkeypatch, capsys):
    calls = []

    def run_all(quick, jobs, seeds, progress, scheduler, threads, session):
        calls.append((quick, jobs, seeds, scheduler, threads, session.jobs, session.scheduler))
        progress.plan({"C4 placement": 2, "C1": 0})
        for done in range(1, 3):
            progress.update("C4 placement", done, 2)
        return [make_result("C4", figures=False), make_result("C1", figures=False)]

    from bnlab.experiments import registry

    monkeypatch.setattr(registry, "run_all", run_all)
    # the report's demos are tested on their own (and on a cluster's worker in test_sweep_dask.py)
    monkeypatch.setattr("bnlab.report.cli.start_demos", lambda session: lambda: {})
    out = tmp_path / "rep"
    assert main(["report", "--quick", "--out", str(out), "--jobs", "3", "--seeds", "4", "--threads", "2"]) == 0
    assert calls == [(True, 3, 4, None, 2, 3, None)]
    captured = capsys.readouterr()
    assert "2 experiments, 2 runs" in captured.err  # the progress display (not a terminal here)
    assert "C4 placement: all 2 runs done" in captured.err
    assert captured.out.splitlines()[0].startswith("C1 ")  # the verdicts, in claim order
    assert str((out / "index.html").resolve()) in captured.out.splitlines()[-1]
    doc = json.loads((out / "results.json").read_text())
    assert [c["id"] for c in doc["claims"]] == ["C1", "C4"]
    assert doc["environment"]["quick"] is True and doc["environment"]["seeds"]["requested"] == 4
    assert doc["environment"]["threads_per_run"] == 2


def test_bad_arguments_are_rejected_with_what_was_expected(capsys):
    for argv in (["report", "--jobs", "0"], ["report", "--seeds", "two"], ["report", "--threads", "0"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert "expected a positive integer" in capsys.readouterr().err
