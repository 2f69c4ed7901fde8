"""The progress display of ``bnlab report`` and ``bnlab run``: experiments, runs, overall ETA.

The experiments report through two calls: ``progress.plan({experiment: runs}, {experiment:
runs already stored})`` once before anything runs, so the totals are known from the start, and
``progress.update(experiment, done, total)`` whenever one of its runs finishes. On a terminal the
display is one live line, redrawn at most ``min_interval_s`` apart; otherwise (a pipe, a log file,
CI) it prints plain lines: the plan, at most every ``log_interval_s`` while runs finish, and when
an experiment's runs are all done.

The ETA is for the whole sweep: seconds since the plan / runs finished since then x runs left.
All experiments run in one sweep on shared workers, so their runs interleave and a per-experiment
rate would mean nothing (an experiment whose first run just finished would show "ETA 0:00").

Why not tqdm or rich: what this module must keep is its pipe mode (CI and log files read it), and
neither library has one. Given a stream that is not a terminal, tqdm 4.70 writes its bar with
carriage returns (5 updates: 7 ``\r`` and a single newline, one ever-growing line in a log) or,
with ``disable=None``, nothing at all; rich 15's ``Progress`` writes nothing while the runs go on and
one line when it stops. Either way the plain lines here would still be written by hand, and what a
library would replace is the live line's three lines of ``_write``; the ETA also differs (runs found
in the store are left out of the rate here, and experiments join the totals as they start).
``bench.timing.progress_line`` is the same two-mode line for the benchmarks.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TextIO


@dataclasses.dataclass
class _Experiment:
    done: int = 0
    total: int = 0
    finished: bool = False


def format_duration(seconds: float) -> str:
    """``75.4`` -> ``"1:15"``; ``3725`` -> ``"1:02:05"``."""
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Thread-safe progress display; pass it to the experiments and call :meth:`close` at the end.

    Args:
        stream: where to write. Default: ``sys.stderr``.
        live: a live line (``\\r`` redraws) instead of plain lines. Default: ``stream.isatty()``.
        clock: seconds as a float. Default: ``time.monotonic`` (tests pass a fake clock).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_interval_s: float = 0.1,
        log_interval_s: float = 10.0,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.live = bool(getattr(self.stream, "isatty", lambda: False)()) if live is None else live
        self.clock = clock
        self.min_interval_s = min_interval_s
        self.log_interval_s = log_interval_s
        self._experiments: dict[str, _Experiment] = {}
        self._lock = threading.Lock()
        self._started = clock()
        self._stored = 0  # runs found done before anything ran: they say nothing about the rate
        self._last_write = float("-inf")
        self._line_open = False

    # --- what the experiments call -------------------------------------------------------------

    def plan(self, runs: Mapping[str, int], stored: Mapping[str, int] | None = None) -> None:
        """Every experiment of this sweep with its number of runs, ``stored`` of them already done."""
        stored = dict(stored or {})
        with self._lock:
            for experiment, total in runs.items():
                done = stored.get(experiment, 0)
                self._check(done, total)
                self._experiments[experiment] = _Experiment(done, total, finished=done == total)
            self._started = self.clock()
            self._stored = sum(e.done for e in self._experiments.values())
            runs_total = sum(e.total for e in self._experiments.values())
            text = (
                f"{len(self._experiments)} experiment{'s' * (len(self._experiments) != 1)}, "
                f"{runs_total} runs: {self._stored} already in the store, {runs_total - self._stored} to run"
            )
            self._write(text, keep=True)

    def update(self, experiment: str, done: int, total: int) -> None:
        """``done`` of ``total`` runs of ``experiment`` have finished (reused runs count as done)."""
        self._check(done, total)
        with self._lock:
            now = self.clock()
            state = self._experiments.get(experiment)
            new = state is None
            if new:  # not planned: it joins the totals now
                state = self._experiments[experiment] = _Experiment()
            assert state is not None
            progressed = done != state.done or new
            state.done, state.total = done, total
            finishing = done == total and not state.finished
            state.finished = state.finished or finishing
            text = f"{self._overall(now)} {self._status(experiment, state)}"
            interval = self.min_interval_s if self.live else self.log_interval_s
            if new or finishing or (progressed and now - self._last_write >= interval):
                self._write(text, keep=finishing or not self.live)
                self._last_write = now

    def eta_s(self) -> float | None:
        """Seconds left for the runs still to do at this sweep's rate; None before a run finished here."""
        with self._lock:
            return self._eta(self.clock())

    def close(self) -> None:
        """End the live line (if any) so the next output starts on a fresh line."""
        with self._lock:
            if self._line_open:
                self.stream.write("\n")
                self.stream.flush()
                self._line_open = False

    # --- formatting ----------------------------------------------------------------------------

    @staticmethod
    def _check(done, total) -> None:
        if isinstance(done, bool) or isinstance(total, bool) or not 0 <= done <= total:
            raise ValueError(f"expected 0 <= done <= total (got done={done!r}, total={total!r})")

    def _eta(self, now: float) -> float | None:
        done = sum(e.done for e in self._experiments.values())
        total = sum(e.total for e in self._experiments.values())
        ran = done - self._stored
        if ran <= 0:
            return None if done < total else 0.0
        return (now - self._started) / ran * (total - done)

    def _overall(self, now: float) -> str:
        exps = self._experiments.values()
        eta = self._eta(now)
        return (
            f"[{sum(e.finished for e in exps)}/{len(exps)} experiments, "
            f"{sum(e.done for e in exps)}/{sum(e.total for e in exps)} runs, "
            f"{format_duration(now - self._started)} elapsed, "
            f"ETA {'--:--' if eta is None else format_duration(eta)}]"
        )

    @staticmethod
    def _status(experiment: str, state: _Experiment) -> str:
        if state.finished:
            return f"{experiment}: all {state.total} runs done"
        return f"{experiment}: {state.done}/{state.total} runs"

    def _write(self, text: str, keep: bool) -> None:
        """Plain: one line. Live: redraw the line; ``keep`` leaves it and starts a new one."""
        if not self.live:
            self.stream.write(text + "\n")
        else:
            self.stream.write("\r\x1b[K" + text + ("\n" if keep else ""))  # column 0, clear the old line
            self._line_open = not keep
        self.stream.flush()
