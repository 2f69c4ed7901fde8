"""The results store: every run keyed by its config's hash, with its metric series, in SQLite.

::

    store = Store("results.db")
    store.get(config)              # RunResult (finished or diverged) or None
    store.results(configs)         # [RunResult | None, ...] in the configs' order
    store.status(config)           # "finished", "diverged", "running", "failed" or None
    for result in store.iter_results(): ...

One table, ``runs``: the key (:meth:`RunConfig.key`), the status, the config and the result as
JSON with a SHA-256 of key, status and result (checked on every read: a result that fails it
raises :class:`StoreError`, and a sweep runs it again), who claimed the run (``host:pid:start``,
see :mod:`.owner`) and when, the number of attempts and any error. A result is written in one
transaction, so a run is either entirely in the store or not at all.

Crash safety: the database is in WAL mode with ``synchronous=NORMAL``; a process killed at any
moment (SIGKILL included) leaves the last committed state, which is what the sweep test checks by
killing a sweep for real. (A power cut may lose the last commits but does not corrupt the file.)

Files it refuses (:mod:`.store_file`), with a :class:`StoreError` naming the file: a folder, an empty (0-byte) file, a
file that is not SQLite, a SQLite file without a ``runs`` table, a damaged one (SQLite's
``quick_check``). Nothing is ever replaced. A store the process cannot write (read-only file or
folder) opens read-only: reading works, writing raises StoreError. SQLite's own errors (for
example "database or disk is full") come through as StoreError with the file's name.

Sharing: any number of processes may open the same file. :meth:`Store.claim` marks a run
"running" for its process inside ``BEGIN IMMEDIATE``, so two sweeps over the same configs run
each config once; a claim whose process is gone (:func:`.owner.gone`: exited, or its pid reused
by another process) or older than ``lease_s`` is taken over, and the :class:`Claim` says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator

from . import owner as owners
from . import store_file
from .config import RunConfig
from .result import RunResult
from .store_file import DONE, StoreError, checksum

__all__ = ["Store", "StoreError", "Claim", "DONE"]


@dataclasses.dataclass(frozen=True)
class Claim:
    """What :meth:`Store.claim` did: true when this process now holds the run."""

    ok: bool
    previous_owner: str | None = None  # set when a claim of another process was taken over
    reason: str | None = None  # why that claim no longer held

    def __bool__(self) -> bool:
        return self.ok


def _key(config_or_key: RunConfig | str) -> str:
    return config_or_key if isinstance(config_or_key, str) else config_or_key.key()


class Store:
    """A results store in the SQLite file ``path`` (created if missing, refused if not a store)."""

    def __init__(self, path: str | os.PathLike, lease_s: float = 24 * 3600.0, timeout_s: float = 60.0) -> None:
        self.path = os.fspath(path)
        self.lease_s = lease_s
        # read_only: the file or its folder is not writable here; _checked: False for a read-only
        # store written before checksums (its results cannot be verified)
        self._db, self.read_only, self._checked = store_file.open_store(self.path, timeout_s)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):
        raise TypeError("a Store cannot be pickled; pass its path to other processes")

    @contextlib.contextmanager
    def _sqlite(self, doing: str):
        """SQLite's errors as StoreError naming the file (disk full, locked, damaged, read-only)."""
        try:
            yield
        except sqlite3.Error as e:
            hint = " (the store is read-only here)" if self.read_only and "readonly" in str(e) else ""
            raise StoreError(f"results store {self.path}: {doing} failed: {e}{hint}") from None

    def _write(self, doing: str):
        if self.read_only:
            raise StoreError(
                f"results store {self.path} is read-only here (file or folder not writable): cannot {doing}"
            )
        return self._sqlite(doing)

    # --- reading

    def _verified(self, key: str, status: str, blob: str, digest: str | None) -> bool:
        return not self._checked or digest == checksum(key, status, blob)

    def status(self, config: RunConfig | str) -> str | None:
        with self._sqlite("reading a run's status"):
            row = self._db.execute("SELECT status FROM runs WHERE key = ?", (_key(config),)).fetchone()
        return row[0] if row else None

    def get(self, config: RunConfig | str) -> RunResult | None:
        """The stored result of a finished or diverged run, else None; StoreError if it fails its checksum."""
        key = _key(config)
        with self._sqlite("reading a result"):
            row = self._db.execute(
                "SELECT status, result, checksum FROM runs WHERE key = ? AND status IN (?, ?)", (key, *DONE)
            ).fetchone()
        if row is None:
            return None
        if not self._verified(key, *row):
            raise StoreError(
                f"results store {self.path}: the stored result of run {key} fails its checksum "
                f"(the file was changed outside bnlab or is damaged); a sweep runs it again"
            )
        return RunResult.from_dict(json.loads(row[1]))

    def results(self, configs: Iterable[RunConfig]) -> list[RunResult | None]:
        return [self.get(c) for c in configs]

    def _done_rows(self, configs: Iterable[RunConfig]) -> Iterator[tuple[str, bool]]:
        keys = list({c.key() for c in configs})
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = (
                f"SELECT key, status, result, checksum FROM runs WHERE status IN (?, ?) "
                f"AND key IN ({','.join('?' * len(chunk))})"
            )
            with self._sqlite("listing finished runs"):
                rows = self._db.execute(q, (*DONE, *chunk)).fetchall()
            for key, status, blob, digest in rows:
                yield key, self._verified(key, status, blob, digest)

    def done(self, configs: Iterable[RunConfig]) -> set[str]:
        """Keys among ``configs`` whose runs are finished or diverged (and pass their checksum)."""
        return {key for key, ok in self._done_rows(configs) if ok}

    def damaged(self, configs: Iterable[RunConfig]) -> set[str]:
        """Keys among ``configs`` stored as done whose result fails its checksum."""
        return {key for key, ok in self._done_rows(configs) if not ok}

    def iter_results(self) -> Iterator[RunResult]:
        """Every stored result that passes its checksum, oldest first."""
        with self._sqlite("reading results"):
            rows = self._db.execute(
                "SELECT key, status, result, checksum FROM runs WHERE status IN (?, ?) ORDER BY updated_at", DONE
            ).fetchall()
        for key, status, blob, digest in rows:
            if self._verified(key, status, blob, digest):
                yield RunResult.from_dict(json.loads(blob))

    def info(self, config: RunConfig | str) -> dict | None:
        """The bookkeeping of a run: status, owner, claimed_at, updated_at, attempts, error."""
        with self._sqlite("reading a run"):
            cur = self._db.execute(
                "SELECT status, owner, claimed_at, updated_at, attempts, error FROM runs WHERE key = ?", (_key(config),)
            )
            row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row)) if row else None

    def counts(self) -> dict[str, int]:
        with self._sqlite("counting runs"):
            return dict(self._db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())

    # --- writing

    def claim(self, config: RunConfig) -> Claim:
        """Mark ``config`` running for this process; false if it is done or another live process runs it."""
        key, now, me = config.key(), time.time(), owners.this_process()
        with self._write(f"claim run {key}"):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                taken = self._claimable(key, now, me)
                if taken is None:
                    self._db.execute("ROLLBACK")
                    return Claim(False)
                self._db.execute(
                    "INSERT INTO runs (key, status, config, owner, claimed_at, updated_at, attempts) "
                    "VALUES (?, 'running', ?, ?, ?, ?, 1) ON CONFLICT(key) DO UPDATE SET status='running', "
                    "result=NULL, checksum=NULL, owner=excluded.owner, claimed_at=excluded.claimed_at, "
                    "updated_at=excluded.updated_at, attempts=runs.attempts + 1, error=NULL",
                    (key, json.dumps(config.to_dict(), sort_keys=True), me, now, now),
                )
                self._db.execute("COMMIT")
                return taken
            except BaseException:
                # A failed COMMIT (disk full) has already rolled back: rolling back again would
                # replace SQLite's real error with "cannot rollback - no transaction is active".
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _claimable(self, key: str, now: float, me: str) -> Claim | None:
        row = self._db.execute(
            "SELECT status, result, checksum, owner, claimed_at FROM runs WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return Claim(True)
        status, blob, digest, holder, claimed_at = row
        if status in DONE:
            if self._verified(key, status, blob, digest):
                return None
            return Claim(True, holder, "its stored result failed its checksum")
        if status != "running" or holder == me:
            return Claim(True)
        why = owners.gone(holder)
        if why is None and now - (claimed_at or 0) >= self.lease_s:
            why = f"its claim is older than the {self.lease_s / 3600:g} h lease"
        return None if why is None else Claim(True, holder, why)

    def release(self, configs: Iterable[RunConfig]) -> int:
        """Drop this process's claims on ``configs`` that are still running (an interrupted sweep)."""
        keys = [c.key() for c in configs]
        if not keys or self.read_only:
            return 0
        me = owners.this_process()
        released = 0
        with self._write("release claims"):
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                cur = self._db.execute(
                    f"DELETE FROM runs WHERE status = 'running' AND owner = ? "
                    f"AND key IN ({','.join('?' * len(chunk))})",
                    (me, *chunk),
                )
                released += cur.rowcount
        return released

    def save(self, result: RunResult) -> None:
        """Store a finished or diverged run (one transaction; replaces any earlier row of its key)."""
        cfg = result.config
        key, blob = cfg.key(), json.dumps(result.to_dict())
        with self._write(f"save run {key}"):
            self._db.execute(
                "INSERT INTO runs (key, status, config, result, owner, updated_at, attempts, checksum) "
                "VALUES (?, ?, ?, ?, ?, ?, 1, ?) "
                "ON CONFLICT(key) DO UPDATE SET status=excluded.status, result=excluded.result, "
                "checksum=excluded.checksum, owner=excluded.owner, updated_at=excluded.updated_at, error=NULL",
                (
                    key,
                    result.status,
                    json.dumps(cfg.to_dict(), sort_keys=True),
                    blob,
                    owners.this_process(),
                    time.time(),
                    checksum(key, result.status, blob),
                ),
            )

    def fail(self, config: RunConfig, error: str) -> None:
        """Record that a run raised (a bug, not a divergence); a later sweep tries it again."""
        with self._write(f"record the failure of run {config.key()}"):
            self._db.execute(
                "INSERT INTO runs (key, status, config, owner, updated_at, error) VALUES (?, 'failed', ?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET status='failed', result=NULL, checksum=NULL, "
                "updated_at=excluded.updated_at, error=excluded.error",
                (config.key(), json.dumps(config.to_dict(), sort_keys=True), owners.this_process(), time.time(), error),
            )

    def integrity_check(self) -> str:
        """SQLite's own ``PRAGMA integrity_check``: "ok" for an intact file."""
        with self._sqlite("checking integrity"):
            return self._db.execute("PRAGMA integrity_check").fetchone()[0]
