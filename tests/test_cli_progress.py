"""Progress as a user sees it in a pipe (a log file, CI): `bnlab run` and `bnlab report` print plain
lines with the totals from the start and an overall ETA; --jobs is validated one way everywhere."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from bnlab import cli

LINE = re.compile(
    r"^\[(\d+)/(\d+) experiments?, (\d+)/(\d+) runs, \d+:\d\d elapsed, ETA (--:--|\d+:\d\d)\] (\S+): (.*)$"
)


def test_run_prints_plain_progress_lines_in_a_pipe(tmp_path):
    env = {**os.environ, "BNLAB_STORE": str(tmp_path / "runs.sqlite")}
    out = subprocess.run(
        [sys.executable, "-m", "bnlab.cli", "run", "C10", "--quick"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stderr.splitlines()
    assert lines[0] == "1 experiment, 6 runs: 0 already in the store, 6 to run"
    assert "\r" not in out.stderr
    last = LINE.match(lines[-1])
    assert last and last.groups()[:5] == ("1", "1", "6", "6", "0:00") and last.group(6, 7) == ("C10", "all 6 runs done")
    again = subprocess.run(
        [sys.executable, "-m", "bnlab.cli", "run", "C10", "--quick"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.stderr.splitlines()[0] == "1 experiment, 6 runs: 6 already in the store, 0 to run"


FAKE_REPORT = textwrap.dedent("""
    import sys, time, types
    sys.path.insert(0, sys.argv[1])
    from report_fixtures import make_result

    def run_all(quick, jobs, seeds, progress, scheduler, threads, session):
        progress.plan({"C1": 2, "C2": 0, "C4": 3}, {"C4": 1})
        for exp, done, total in [("C1", 1, 2), ("C4", 2, 3), ("C1", 2, 2), ("C4", 3, 3)]:
            time.sleep(0.05)
            progress.update(exp, done, total)
        return [make_result(c, figures=False) for c in ("C1", "C2", "C4")]

    fake = types.ModuleType("bnlab.experiments.registry")
    fake.run_all = run_all
    sys.modules["bnlab.experiments.registry"] = fake
    from bnlab.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def test_report_prints_the_plan_then_plain_lines_in_a_pipe(tmp_path):
    tests = os.path.dirname(__file__)
    out = subprocess.run(
        [sys.executable, "-c", FAKE_REPORT, tests, "report", "--out", str(tmp_path / "r")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stderr.splitlines()
    assert lines[0] == "3 experiments, 5 runs: 1 already in the store, 4 to run"
    shown = [LINE.match(line).group(6, 7) for line in lines[1:]]
    # off a terminal: the first run (the first ETA), then at most every 10 s, and each experiment's end
    assert shown == [("C1", "1/2 runs"), ("C1", "all 2 runs done"), ("C4", "all 3 runs done")]
    assert LINE.match(lines[-1]).groups()[:4] == ("3", "3", "5", "5")


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "C2", "--jobs", "0"],
        ["report", "--jobs", "0"],
        ["run", "C2", "--seeds", "0"],
        ["train", "--threads", "0"],
        ["train", "--nproc", "-1"],
        ["report", "--jobs", "x"],
    ],
)
def test_counts_are_validated_one_way_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err
