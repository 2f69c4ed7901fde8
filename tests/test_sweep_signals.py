"""No process outlives a sweep: `bnlab run --jobs 2` is sent a real SIGTERM, SIGKILL or SIGINT
mid-sweep, and every process of its session (coordinator, Dask workers, anything they started)
must be gone within seconds; SIGINT and SIGTERM also stop the queue and release the claims."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from bnlab.train.store import Store


def session_processes(sid: int) -> list[str]:
    """Live (non-zombie) processes of session ``sid``, as "pid command"."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:80]
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(f"{entry} {cmd}")
    return found


def wait_until(predicate, timeout_s: float, poll_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    return predicate()


def _sigint_as_in_a_terminal() -> None:
    """SIGINT back to its default in the coordinator before it starts: a test run started in the
    background of a non-interactive shell (``pytest &``) ignores SIGINT, a child inherits that, and
    Python then leaves it ignored, so the coordinator would never see the Ctrl-C this test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def _sweep(store, err_path):
    """``bnlab run C4 --jobs 2`` on the results store ``store``, in a session of its own (its pid is the
    session's id), stderr to ``err_path``; whatever of the session is still alive when the block ends is
    killed."""
    env = {**os.environ, "BNLAB_STORE": str(store)}
    with open(err_path, "wb") as err:  # the child keeps its own copy of the descriptor
        coordinator = subprocess.Popen(
            [sys.executable, "-m", "bnlab.cli", "run", "C4", "--jobs", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            preexec_fn=_sigint_as_in_a_terminal,
        )
    try:
        yield coordinator
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
            coordinator.wait()
        for line in session_processes(coordinator.pid):
            os.kill(int(line.split()[0]), signal.SIGKILL)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="counts processes through /proc")
@pytest.mark.parametrize(
    "sig, group",
    [(signal.SIGTERM, False), (signal.SIGKILL, False), (signal.SIGINT, False), (signal.SIGINT, True)],
    ids=["SIGTERM", "SIGKILL", "SIGINT", "Ctrl-C"],
)
def test_no_process_outlives_a_signalled_sweep(tmp_path, sig, group):
    """``group``: the signal goes to the whole process group, as Ctrl-C in a terminal sends it."""
    store = tmp_path / "runs.sqlite"
    with _sweep(store, tmp_path / "err") as coordinator:
        sid = coordinator.pid
        # the coordinator and both workers exist, and the workers have been given runs
        assert wait_until(lambda: len(session_processes(sid)) >= 3, 120), session_processes(sid)
        time.sleep(3.0)
        assert coordinator.poll() is None, (tmp_path / "err").read_text()[-2000:]
        sent = time.monotonic()
        (os.killpg if group else os.kill)(coordinator.pid, sig)
        coordinator.wait(timeout=60)
        exited_s = time.monotonic() - sent
        left = wait_until(lambda: not session_processes(sid), 20) or session_processes(sid)
    assert left is True, f"{len(session_processes(sid)) or 'some'} processes outlived the sweep"
    if sig != signal.SIGKILL:
        err = (tmp_path / "err").read_text()
        assert exited_s < 20, f"the coordinator took {exited_s:.1f} s to stop after {sig.name}"
        assert coordinator.returncode == 128 + sig, err[-2000:]
        assert err.splitlines()[-1] == (
            "bnlab run: interrupted" if sig == signal.SIGINT else "bnlab run: terminated (SIGTERM)"
        ), err[-2000:]
        assert "Traceback" not in err, err[-2000:]
        with Store(store) as s:
            assert s.counts().get("running", 0) == 0  # the queue's claims were released


def _blocked_signals(pid: int | str = "self") -> int:
    """The mask of blocked signals of ``pid``'s main thread, from /proc (bit n-1 for signal n)."""
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("SigBlk:")).split()[1], 16)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads signal masks through /proc")
def test_a_local_clusters_workers_are_born_with_sigint_blocked():
    """Blocked from their first instruction, not only ignored once their set-up ran (dask_setup): a
    Ctrl-C while a worker still imports cannot raise in it. The coordinating thread's mask is its own
    again after the start."""
    from bnlab.train.cluster import connect

    sigint = 1 << (signal.SIGINT - 1)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    with connect(None, 2) as client:
        masks = client.run(_blocked_signals)
        pids = client.run(os.getpid)
        assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before
    assert len(masks) == 2 and all(mask & sigint for mask in masks.values()), masks
    assert all(pid != os.getpid() for pid in pids.values())


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="counts processes through /proc")
@pytest.mark.parametrize("attempt", range(3))
def test_ctrl_c_while_the_workers_start_prints_no_traceback(tmp_path, attempt):
    """Ctrl-C to the whole group the moment the worker processes exist (they are still importing):
    the coordinator stops with its one line, and no worker prints a traceback."""
    with _sweep(tmp_path / "runs.sqlite", tmp_path / "err") as coordinator:
        sid = coordinator.pid
        assert wait_until(lambda: len(session_processes(sid)) >= 3, 120, poll_s=0.01), session_processes(sid)
        time.sleep(0.2 * attempt)  # at the first sign of the workers, then a little into their imports
        os.killpg(coordinator.pid, signal.SIGINT)
        coordinator.wait(timeout=60)
        left = wait_until(lambda: not session_processes(sid), 20) or session_processes(sid)
    err = (tmp_path / "err").read_text()
    assert left is True, f"{len(session_processes(sid)) or 'some'} processes outlived the sweep"
    assert coordinator.returncode == 128 + signal.SIGINT, err[-2000:]
    assert err.splitlines()[-1] == "bnlab run: interrupted", err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
