"""The progress display of ``bnlab report``: experiment, runs done / total, ETA.

The experiments report through one call, ``progress.update(experiment, done, total)``, whenever a
run finishes (done = 0 announces an experiment). On a terminal the display is one live line,
redrawn at most ``min_interval_s`` apart; otherwise (a log file, CI) it prints plain lines: when an
experiment starts, at most every ``log_interval_s`` while it runs, and when it finishes.

The ETA of an experiment is its elapsed time / runs done × runs left: runs of one sweep take
similar times, and it needs no model of the experiments.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from typing import Callable, TextIO


@dataclasses.dataclass
class _Experiment:
    started: float
    done: int = 0
    total: int = 0
    finished: bool = False


def format_duration(seconds: float) -> str:
    """``75.4`` -> ``"1:15"``; ``3725`` -> ``"1:02:05"``."""
    s = max(0, int(round(seconds)))
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

    def __init__(self, stream: TextIO | None = None, live: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, min_interval_s: float = 0.1,
                 log_interval_s: float = 10.0) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.live = bool(getattr(self.stream, "isatty", lambda: False)()) if live is None else live
        self.clock = clock
        self.min_interval_s = min_interval_s
        self.log_interval_s = log_interval_s
        self._experiments: dict[str, _Experiment] = {}
        self._lock = threading.Lock()
        self._last_write = float("-inf")
        self._line_open = False

    def update(self, experiment: str, done: int, total: int) -> None:
        """``done`` of ``total`` runs of ``experiment`` have finished (reused runs count as done)."""
        if isinstance(done, bool) or isinstance(total, bool) or not 0 <= done <= total:
            raise ValueError(f"expected 0 <= done <= total (got done={done!r}, total={total!r})")
        with self._lock:
            now = self.clock()
            state = self._experiments.get(experiment)
            new = state is None
            if new:
                state = self._experiments[experiment] = _Experiment(started=now)
            progressed = done != state.done or new
            state.done, state.total = done, total
            finishing = done == total and not state.finished
            state.finished = state.finished or finishing
            if self.live:
                if new or finishing or now - self._last_write >= self.min_interval_s:
                    self._write_live(experiment, state, now, finishing)
                    self._last_write = now
            elif new or finishing or (progressed and now - self._last_write >= self.log_interval_s):
                self._write_line(self.status(experiment, state, now))
                self._last_write = now

    def eta_s(self, experiment: str) -> float | None:
        """Seconds left for ``experiment`` at its current rate; None before its first run is done."""
        with self._lock:
            state = self._experiments.get(experiment)
            return None if state is None else self._eta(state, self.clock())

    def close(self) -> None:
        """End the live line (if any) so the next output starts on a fresh line."""
        with self._lock:
            if self._line_open:
                self.stream.write("\n")
                self.stream.flush()
                self._line_open = False

    # --- formatting ----------------------------------------------------------------------------

    @staticmethod
    def _eta(state: _Experiment, now: float) -> float | None:
        if state.done == 0:
            return None
        return (now - state.started) / state.done * (state.total - state.done)

    def status(self, experiment: str, state: _Experiment, now: float) -> str:
        elapsed = format_duration(now - state.started)
        if state.finished:
            return f"{experiment}: {state.done}/{state.total} runs done in {elapsed}"
        eta = self._eta(state, now)
        eta_text = "ETA --:--" if eta is None else f"ETA {format_duration(eta)}"
        return f"{experiment}: {state.done}/{state.total} runs, {elapsed} elapsed, {eta_text}"

    def _write_line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def _write_live(self, experiment: str, state: _Experiment, now: float, finishing: bool) -> None:
        finished = sum(e.finished for e in self._experiments.values())
        text = f"[{finished}/{len(self._experiments)} experiments] {self.status(experiment, state, now)}"
        self.stream.write("\r\x1b[K" + text)  # back to column 0, clear the old line
        if finishing:
            self.stream.write("\n")  # a finished experiment keeps its line
        self.stream.flush()
        self._line_open = not finishing
