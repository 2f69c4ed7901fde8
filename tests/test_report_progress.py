"""The progress display: plain lines off a terminal, one live line on it, and the ETA."""

from __future__ import annotations

import io

import pytest

from bnlab.report.progress import Progress, format_duration


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_eta_is_elapsed_per_run_times_runs_left():
    clock = Clock()
    p = Progress(io.StringIO(), live=False, clock=clock)
    p.update("C3", 0, 10)
    assert p.eta_s("C3") is None
    clock.t += 8.0
    p.update("C3", 4, 10)  # 2 s per run, 6 runs left
    assert p.eta_s("C3") == pytest.approx(12.0)
    assert p.eta_s("C9") is None


def test_plain_lines_at_start_at_most_every_interval_and_at_the_end():
    clock, out = Clock(), io.StringIO()
    p = Progress(out, live=False, clock=clock, log_interval_s=10.0)
    p.update("C1", 0, 100)
    for done in range(1, 100):
        clock.t += 1.0
        p.update("C1", done, 100)
    clock.t += 1.0
    p.update("C1", 100, 100)
    p.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "C1: 0/100 runs, 0:00 elapsed, ETA --:--"
    assert lines[1] == "C1: 10/100 runs, 0:10 elapsed, ETA 1:30"
    assert lines[-1] == "C1: 100/100 runs done in 1:40"
    assert len(lines) == 1 + 9 + 1  # start, one per 10 s while running, finish


def test_live_line_is_redrawn_in_place_and_finished_experiments_keep_a_line():
    clock, out = Clock(), io.StringIO()
    p = Progress(out, live=True, clock=clock, min_interval_s=0.5)
    p.update("C4", 0, 3)
    clock.t += 0.1
    p.update("C4", 1, 3)  # within min_interval_s: not redrawn
    clock.t += 1.0
    p.update("C4", 2, 3)
    p.update("C4", 3, 3)
    p.update("C8", 0, 2)
    p.close()
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 4
    assert "1/3" not in text
    assert "[1/1 experiments] C4: 3/3 runs done in 0:01\n" in text
    assert "[1/2 experiments] C8: 0/2 runs" in text and text.endswith("\n")


def test_progress_rejects_impossible_counts():
    p = Progress(io.StringIO(), live=False)
    with pytest.raises(ValueError, match="expected 0 <= done <= total"):
        p.update("C1", 5, 3)
    with pytest.raises(ValueError, match="expected 0 <= done <= total"):
        p.update("C1", -1, 3)


def test_format_duration():
    assert format_duration(0) == "0:00"
    assert format_duration(75.4) == "1:15"
    assert format_duration(3725) == "1:02:05"
