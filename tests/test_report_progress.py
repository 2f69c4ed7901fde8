"""The progress display: totals from the start, an overall ETA, plain lines off a terminal, one
live line on it."""

from __future__ import annotations

import io

import pytest

from bnlab.report.progress import Progress, format_duration


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_plan_announces_every_experiment_and_run_before_anything_runs():
    out = io.StringIO()
    p = Progress(out, live=False, clock=Clock())
    p.plan({"C1": 10, "C2": 0, "C3": 5}, stored={"C3": 5})
    assert out.getvalue() == "3 experiments, 15 runs: 5 already in the store, 10 to run\n"
    p.update("C1", 1, 10)
    assert out.getvalue().splitlines()[-1].startswith("[2/3 experiments, 6/15 runs,")  # C2 and C3 are done


def test_eta_is_for_the_whole_sweep_and_ignores_stored_runs():
    clock = Clock()
    p = Progress(io.StringIO(), live=False, clock=clock)
    p.plan({"C1": 10, "C3": 10}, stored={"C3": 6})
    assert p.eta_s() is None  # nothing ran yet: no rate
    clock.t += 8.0
    p.update("C1", 4, 10)  # 4 runs in 8 s: 2 s per run; 6 + 4 left
    assert p.eta_s() == pytest.approx(20.0)
    clock.t += 2.0
    p.update("C3", 7, 10)  # a new experiment's first run: the ETA stays the sweep's, never "0:00"
    assert p.eta_s() == pytest.approx(10.0 / 5 * 9)


def test_plain_lines_plan_at_most_every_interval_and_each_finished_experiment():
    clock, out = Clock(), io.StringIO()
    p = Progress(out, live=False, clock=clock, log_interval_s=10.0)
    p.plan({"C1": 100, "C2": 3})
    for done in range(1, 101):
        clock.t += 1.0
        p.update("C1", done, 100)
    for done in range(1, 4):
        p.update("C2", done, 3)
    p.close()
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert lines[0] == "2 experiments, 103 runs: 0 already in the store, 103 to run"
    assert lines[1] == "[0/2 experiments, 1/103 runs, 0:01 elapsed, ETA 1:42] C1: 1/100 runs"
    assert lines[2] == "[0/2 experiments, 11/103 runs, 0:11 elapsed, ETA 1:32] C1: 11/100 runs"
    assert "[1/2 experiments, 100/103 runs, 1:40 elapsed, ETA 0:03] C1: all 100 runs done" in lines
    assert lines[-1] == "[2/2 experiments, 103/103 runs, 1:40 elapsed, ETA 0:00] C2: all 3 runs done"
    assert len(lines) == 1 + 10 + 1 + 1  # plan, one per 10 s while running, each experiment's end


def test_live_line_is_redrawn_in_place_and_finished_experiments_keep_a_line():
    clock, out = Clock(), io.StringIO()
    p = Progress(out, live=True, clock=clock, min_interval_s=0.5)
    p.plan({"C4": 3, "C8": 2})
    clock.t += 0.6
    p.update("C4", 1, 3)
    clock.t += 0.1
    p.update("C4", 2, 3)  # within min_interval_s: not redrawn
    clock.t += 1.0
    p.update("C4", 3, 3)
    p.close()
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 3  # the plan, C4 1/3, C4 done
    assert "2/3" not in text
    assert "[1/2 experiments, 3/5 runs, 0:02 elapsed, ETA 0:01] C4: all 3 runs done\n" in text


def test_progress_rejects_impossible_counts():
    p = Progress(io.StringIO(), live=False)
    with pytest.raises(ValueError, match="expected 0 <= done <= total"):
        p.update("C1", 5, 3)
    with pytest.raises(ValueError, match="expected 0 <= done <= total"):
        p.update("C1", -1, 3)
    with pytest.raises(ValueError, match="expected 0 <= done <= total"):
        p.plan({"C1": 3}, stored={"C1": 4})


def test_format_duration():
    assert format_duration(0) == "0:00"
    assert format_duration(75.4) == "1:15"
    assert format_duration(3725) == "1:02:05"
