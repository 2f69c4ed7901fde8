"""Where a sweep's runs execute when they leave the coordinating process: a Dask cluster.

* ``connect(None, jobs)`` starts a ``LocalCluster`` of ``jobs`` worker processes, one thread each,
  and stops it (workers included) when the block ends, however it ends;
* ``connect("tcp://host:8786", ...)`` uses an existing scheduler (``dask scheduler`` on one host,
  ``dask worker tcp://host:8786 --nthreads 1`` on each worker host) and leaves it running;
* :class:`Session` holds one such connection for several sweeps (the rounds of ``bnlab report``):
  a local cluster then starts once, on first use, instead of once per sweep (2-5 s each, measured
  on 2 cores: the workers' start and their first imports).

Each task is a group of runs, :func:`run_group_on_worker`: the seeds of one setting that are
trained together (:mod:`bnlab.train.seeds`); their configs go out as dicts, their results come back
as dicts through the future, so workers need bnlab installed (the same code: a worker whose
:func:`~bnlab.train.config.code_version` differs refuses the run) but no shared file system, and
only the coordinating process writes the results store. A worker that dies mid-run (killed, out of
memory) has its group rescheduled by Dask on another worker; after ``distributed.scheduler.
allowed-failures`` such deaths (default 3) the future raises ``KilledWorker`` and the sweep records
the group's runs as failed.

Worker processes of a local cluster exit as soon as the coordinating process is gone, even after
SIGKILL (distributed's child processes watch a pipe to their parent), so a killed sweep leaves no
process behind; ``bnlab``'s command line turns SIGTERM into a normal exit that stops the cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from .config import RunConfig, code_version

_setups_done: set = set()  # worker_setup functions (and _keep_freed_memory) this worker process has run

# A local cluster's housekeeping, cut to what a sweep needs: by default Dask samples every worker's
# stack every 10 ms (profiles for its dashboard, which bnlab does not start) and polls memory and
# the system 10 and 2 times a second, all taking the GIL from the training thread.
LOCAL_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.admin.tick.interval": "1s",
}


@contextlib.contextmanager
def connect(scheduler: str | None, jobs: int, timeout_s: float = 30.0) -> Iterator:
    """A ``distributed.Client`` on the scheduler at ``scheduler``, or on a local cluster of ``jobs``
    single-threaded worker processes that exists for the duration of the block."""
    import dask
    import distributed
    from distributed.utils import silence_logging_cmgr

    if scheduler:
        _probe_scheduler(scheduler, timeout_s)
        try:
            client = distributed.Client(scheduler, timeout=timeout_s, set_as_default=False)
        except OSError as e:
            raise ConnectionError(
                f"cannot reach the Dask scheduler at {scheduler} within {timeout_s:g} s "
                f"(expected `dask scheduler` running there): {e}"
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    # The cluster silences dask's logs here only until its close() starts tearing down, while its event
    # loop runs on a moment longer: a comm to a killed worker then printed an INFO traceback ("Batched
    # Comm Closed") into a Ctrl-C'd `bnlab run` (once in CI). So they stay silenced until the loop stopped.
    with silence_logging_cmgr(logging.ERROR):
        with _signals_deferred() as pending, dask.config.set(LOCAL_CONFIG), _sigint_blocked_for_children():
            cluster = distributed.LocalCluster(
                n_workers=jobs,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
                preload=[__name__],
            )  # dask_setup below, in each worker
        try:
            pending.deliver()
            with distributed.Client(cluster, set_as_default=False) as client:
                yield client
        finally:
            # Finished or interrupted, the workers hold nothing bnlab needs (results are in, or the runs
            # in flight are lost anyway): stopping them at once saves the seconds a graceful close takes
            # (a busy worker finishes its run first; an idle one tears torch down for 2-4 s).
            _kill_workers(cluster)
            cluster.close()


class Session:
    """One cluster for several sweeps: :func:`connect` on the first :meth:`client` call (a caller with
    nothing to run starts nothing), closed -- a local cluster's workers stopped -- when the ``with``
    block ends, however it ends. Workers keep what they loaded (data sets, kernels) from one sweep to
    the next; a run's result does not depend on the worker or on what it ran before
    (:mod:`bnlab.train.sweep`)."""

    def __init__(self, scheduler: str | None, jobs: int) -> None:
        self.scheduler, self.jobs = scheduler, jobs
        self._stack = contextlib.ExitStack()
        self._client = None
        self._on_start: list[Callable[[Any], None]] = []

    def client(self):
        """The session's ``distributed.Client``, connecting now if this is the first call (and then calling
        what :meth:`when_started` was given, before the caller submits anything)."""
        if self._client is None:
            self._client = self._stack.enter_context(connect(self.scheduler, self.jobs))
            for fn in self._on_start:
                fn(self._client)
            self._on_start.clear()
        return self._client

    def when_started(self, fn: Callable[[Any], None]) -> None:
        """Call ``fn(client)`` once the session is connected: now if it is, else when a sweep first needs
        the cluster (never if none does: everything was in the store, or ran in this process)."""
        if self._client is not None:
            fn(self._client)
        else:
            self._on_start.append(fn)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> bool | None:
        self._client = None
        return self._stack.__exit__(*exc)


def _probe_scheduler(address: str, timeout_s: float) -> None:
    """Ask ``address`` for its identity over Dask's protocol, all within ``timeout_s``; a
    ConnectionError unless a Dask scheduler answers. distributed.Client's own timeout covers the
    TCP connection only: a server that accepts it but never speaks Dask (an HTTP server) kept the
    Client waiting indefinitely. The probe runs its own event loop in a thread of its own, so it also
    works from code that is inside an event loop (a notebook)."""
    import asyncio

    from distributed.comm import connect as comm_connect
    from distributed.security import Security

    tls = Security().get_connection_args("client")  # dask's configured TLS settings, as Client uses them

    async def identity():
        comm = await comm_connect(address, timeout=timeout_s, **tls)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    outcome: dict = {}

    def ask() -> None:
        try:
            outcome["reply"] = asyncio.run(asyncio.wait_for(identity(), timeout_s))
        except BaseException as e:  # noqa: BLE001 -- handed to the calling thread
            outcome["error"] = e

    # A daemon thread: Ctrl-C during the probe leaves at once (an executor's thread is joined at exit).
    probe = threading.Thread(target=ask, name="bnlab-scheduler-probe", daemon=True)
    probe.start()
    probe.join()
    expected = "expected `dask scheduler` running there"
    error = outcome.get("error")
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        raise ConnectionError(  # (the TCP connect's own timeout and this one race: one message for both)
            f"cannot reach the Dask scheduler at {address} within {timeout_s:g} s ({expected}): no Dask "
            f"answer (nothing listens there, or something that is not a Dask scheduler)"
        )
    if isinstance(error, (ValueError, TypeError)):  # a malformed address
        msg = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConnectionError(f"expected a Dask scheduler address like tcp://host:8786 (got {address!r}): {msg}")
    if isinstance(error, OSError):  # refused or unresolvable until the timeout
        msg = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConnectionError(
            f"cannot reach the Dask scheduler at {address} within {timeout_s:g} s ({expected}): {msg}"
        )
    if error is not None:  # a reply Dask's protocol could not decode
        raise ConnectionError(
            f"what answered at {address} is not a Dask scheduler ({expected}): {type(error).__name__}"
        )
    reply = outcome["reply"]
    if not (isinstance(reply, dict) and reply.get("type") == "Scheduler"):
        kind = reply.get("type") if isinstance(reply, dict) else type(reply).__name__
        raise ConnectionError(f"what answered at {address} is not a Dask scheduler (got {kind!r}; {expected})")


def _kill_workers(cluster) -> None:
    for nanny in list(cluster.workers.values()):
        nanny.close_gracefully(reason="bnlab: stopping the sweep's workers")  # no restart when they die
        pid = nanny.pid
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _sigint_blocked_for_children() -> Iterator[None]:
    """SIGINT blocked in this thread while the block runs, so that what starts from it is born with SIGINT
    blocked and keeps it so: a local cluster's event-loop thread, and through it the worker processes
    (a signal mask passes to new threads, across fork and across exec). Ctrl-C, which a terminal sends to
    every process of the group, then cannot reach a worker that is still importing, before
    :func:`dask_setup` could ignore it: there it raised KeyboardInterrupt and printed the worker's
    start-up traceback into the run's stderr. This thread gets a Ctrl-C that came meanwhile when the
    block ends. multiprocessing's resource tracker unblocks SIGINT in the thread that starts it (its own
    guard for the same race, bpo-33613), and a cluster's queues start it: it is started first."""
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX
        yield
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def dask_setup(worker) -> None:
    """In each worker process of a local cluster: ignore SIGINT. Ctrl-C in a terminal reaches every
    process of the group; the coordinating process alone acts on it, and stops its workers."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Pending:
    def __init__(self) -> None:
        self.signals: list[int] = []

    def deliver(self) -> None:
        """Raise the signals that came in while deferred, now that their handlers are back."""
        for sig in self.signals:
            signal.raise_signal(sig)
        self.signals.clear()


@contextlib.contextmanager
def _signals_deferred() -> Iterator[_Pending]:
    """SIGINT and SIGTERM are recorded instead of handled while the block runs (main thread only);
    the caller delivers them when it is ready. If the block fails, they are delivered at once: a
    start-up that failed because Ctrl-C reached the workers too is an interrupt, not an error."""
    pending = _Pending()
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return
    old = {
        sig: signal.signal(sig, lambda signum, frame: pending.signals.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield pending
    except BaseException:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        pending.deliver()
        raise
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def run_on_worker(
    config: dict, expected_code: str, device: str, threads: int, setup: Callable[[], None] | None
) -> dict:
    """One run, in a worker: ``{"outcome": "finished"|"diverged", "result": RunResult dict}`` or
    ``{"outcome": "failed", "error": text}`` (the run raised, or this worker's bnlab differs)."""
    refusal = _prepare(expected_code, setup)
    if refusal is not None:
        return refusal
    try:
        from .trainer import train

        result = train(RunConfig.from_dict(config), device=device, threads=threads, progress=False)
    except Exception:  # noqa: BLE001 -- a failed run is a result (its traceback stored), not the sweep's end
        return {"outcome": "failed", "error": traceback.format_exc()}
    result.env["worker"] = _worker_address()
    return {"outcome": result.status, "result": result.to_dict()}


def run_group_on_worker(
    configs: list[dict], expected_code: str, device: str, threads: int, setup: Callable[[], None] | None
) -> list[dict]:
    """A group of seeds of one setting, in a worker (:func:`bnlab.train.local.train_here`): one
    :func:`run_on_worker`-style dict per config, in order."""
    refusal = _prepare(expected_code, setup)
    if refusal is not None:
        return [refusal] * len(configs)
    from .local import train_here

    out: list[dict] = []
    for outcome, payload in train_here([RunConfig.from_dict(c) for c in configs], device, threads):
        if outcome == "failed":
            out.append({"outcome": "failed", "error": payload})
        else:
            assert not isinstance(payload, str)  # a RunResult: only a failure carries its error text
            payload.env["worker"] = _worker_address()
            out.append({"outcome": outcome, "result": payload.to_dict()})
    return out


def _prepare(expected_code: str, setup: Callable[[], None] | None) -> dict | None:
    """A worker's checks and set-up before it runs anything; a failed outcome if it must refuse."""
    refusal = _other_code(expected_code, "the sweep")
    if refusal is not None:
        return {"outcome": "failed", "error": refusal}
    _keep_freed_memory()
    try:
        if setup is not None and setup not in _setups_done:
            setup()
            _setups_done.add(setup)
    except Exception:  # noqa: BLE001 -- a failed run is a result (its traceback stored), not the sweep's end
        return {"outcome": "failed", "error": traceback.format_exc()}
    return None


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_TRIM_THRESHOLD = 64 << 20  # the most glibc's own adaptive trim threshold grows to on 64-bit
_MMAP_THRESHOLD = 32 << 20  # the most its adaptive mmap threshold grows to (and the largest it takes)


def _keep_freed_memory() -> None:
    """Undo Dask's nanny setting ``MALLOC_TRIM_THRESHOLD_=65536`` in this worker process.

    With it, glibc hands freed heap back to the system whenever 64 KiB are free at its top; and
    setting any threshold (by that variable or by ``mallopt``) also stops glibc from raising its
    mmap threshold as it does by itself, so every block over 128 KiB -- a grouped model's
    activations, gradients -- is mapped fresh and faulted in page by page at each step. Both
    thresholds are set here to the values glibc's own adaptation reaches: measured on a group of 8
    of the lab's CNN (300 steps, 1 thread), 3.9 s with the nanny's setting (1.8 s of it system time,
    a million page faults), 3.5 s with the trim threshold alone raised, 1.6 s with both (as without
    Dask). Once per process."""
    if _keep_freed_memory in _setups_done or "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    _setups_done.add(_keep_freed_memory)
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc
        pass


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return socket.gethostname()


def submit(client, configs: list[RunConfig], device: str, threads: int, setup: Callable[[], None] | None):
    """Submit one group of runs (seeds of one setting, :func:`bnlab.train.sweep.plan_groups`); the
    future's key names its first run and its result is a list of outcomes, one per config."""
    return client.submit(
        run_group_on_worker,
        [c.to_dict() for c in configs],
        code_version(),
        device,
        threads,
        setup,
        key=f"bnlab-runs-{configs[0].key()[:16]}-{len(configs)}-{os.urandom(4).hex()}",
        pure=False,
    )


def call_on_worker(fn: Callable[[], Any], expected_code: str) -> Any:
    """``fn()`` in a worker whose bnlab is the caller's (else a RuntimeError saying both versions)."""
    refusal = _other_code(expected_code, "the caller")
    if refusal is not None:
        raise RuntimeError(refusal)
    return fn()


def _other_code(expected_code: str, who: str) -> str | None:
    """Why this worker must refuse work from ``who``, whose bnlab code is ``expected_code`` (None if it is
    this worker's)."""
    here = code_version()
    if here == expected_code:
        return None
    return (
        f"worker {socket.gethostname()} runs bnlab code {here}, {who} expects {expected_code}: "
        f"install the same bnlab on every worker"
    )


def submit_call(client, fn: Callable[[], Any], name: str):
    """Submit ``fn()`` (a module-level function, e.g. :func:`bnlab.demos.run`) as one task; its future's key
    starts with ``bnlab-<name>``."""
    return client.submit(call_on_worker, fn, code_version(), key=f"bnlab-{name}-{os.urandom(4).hex()}", pure=False)


def submit_one(client, config: RunConfig, device: str, threads: int, setup: Callable[[], None] | None):
    """Submit one run to the single-seed trainer (:func:`run_on_worker`); the future's key names it."""
    return client.submit(
        run_on_worker,
        config.to_dict(),
        code_version(),
        device,
        threads,
        setup,
        key=f"bnlab-run-{config.key()[:16]}-{os.urandom(4).hex()}",
        pure=False,
    )
