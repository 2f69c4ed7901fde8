"""The results store: every run keyed by its config's hash, with its metric series, in SQLite.

::

    store = Store("results.db")
    store.get(config)              # RunResult (finished or diverged) or None
    store.results(configs)         # [RunResult | None, ...] in the configs' order
    store.status(config)           # "finished", "diverged", "running", "failed" or None
    for result in store.iter_results(): ...

One table, ``runs``: the key (:meth:`RunConfig.key`), the status, the config and the result as
JSON, who claimed the run (``host:pid``) and when, the number of attempts and any error. A result
is written in one transaction, so a run is either entirely in the store or not at all.

Crash safety: the database is in WAL mode with ``synchronous=NORMAL``; a process killed at any
moment (SIGKILL included) leaves the last committed state, which is what the sweep test checks by
killing a sweep for real. (A power cut may lose the last commits but does not corrupt the file.)

Sharing: any number of processes may open the same file. :meth:`Store.claim` marks a run
"running" for its process inside ``BEGIN IMMEDIATE``, so two sweeps over the same configs run
each config once; a claim whose process is gone (same host, dead pid) or older than ``lease_s``
is taken over.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from typing import Iterable, Iterator

from .config import RunConfig
from .result import RunResult

DONE = ("finished", "diverged")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,           -- running | finished | diverged | failed
    config TEXT NOT NULL,           -- RunConfig.to_dict() as JSON
    result TEXT,                    -- RunResult.to_dict() as JSON, for finished / diverged
    owner TEXT,                     -- host:pid of the process that claimed the run
    claimed_at REAL,
    updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT
)
"""


def _key(config_or_key: RunConfig | str) -> str:
    return config_or_key if isinstance(config_or_key, str) else config_or_key.key()


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(owner: str | None) -> bool:
    """Whether the process that owns a claim still runs (unknowable on another host: assume so)."""
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


class Store:
    """A results store in the SQLite file ``path`` (created if missing)."""

    def __init__(self, path: str | os.PathLike, lease_s: float = 24 * 3600.0, timeout_s: float = 60.0) -> None:
        self.path = os.fspath(path)
        self.lease_s = lease_s
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        # isolation_level=None: no implicit transactions; each write below opens its own.
        self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):
        raise TypeError("a Store cannot be pickled; pass its path to other processes")

    # --- reading

    def status(self, config: RunConfig | str) -> str | None:
        row = self._db.execute("SELECT status FROM runs WHERE key = ?", (_key(config),)).fetchone()
        return row[0] if row else None

    def get(self, config: RunConfig | str) -> RunResult | None:
        """The stored result of a finished or diverged run, else None."""
        row = self._db.execute("SELECT result FROM runs WHERE key = ? AND status IN (?, ?)",
                               (_key(config), *DONE)).fetchone()
        return RunResult.from_dict(json.loads(row[0])) if row else None

    def results(self, configs: Iterable[RunConfig]) -> list[RunResult | None]:
        return [self.get(c) for c in configs]

    def done(self, configs: Iterable[RunConfig]) -> set[str]:
        """Keys among ``configs`` whose runs are finished or diverged."""
        keys = list({c.key() for c in configs})
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            q = f"SELECT key FROM runs WHERE status IN (?, ?) AND key IN ({','.join('?' * len(chunk))})"
            found.update(k for (k,) in self._db.execute(q, (*DONE, *chunk)))
        return found

    def iter_results(self) -> Iterator[RunResult]:
        for (blob,) in self._db.execute("SELECT result FROM runs WHERE status IN (?, ?) ORDER BY updated_at", DONE):
            yield RunResult.from_dict(json.loads(blob))

    def info(self, config: RunConfig | str) -> dict | None:
        """The bookkeeping of a run: status, owner, claimed_at, updated_at, attempts, error."""
        cur = self._db.execute("SELECT status, owner, claimed_at, updated_at, attempts, error FROM runs WHERE key = ?",
                               (_key(config),))
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row)) if row else None

    def counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())

    # --- writing

    def claim(self, config: RunConfig) -> bool:
        """Mark ``config`` running for this process; False if it is done or another live process runs it."""
        key, now = config.key(), time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute("SELECT status, owner, claimed_at FROM runs WHERE key = ?", (key,)).fetchone()
            if row is not None:
                status, owner, claimed_at = row
                if status in DONE:
                    self._db.execute("ROLLBACK")
                    return False
                if (status == "running" and owner != _owner() and _alive(owner)
                        and now - (claimed_at or 0) < self.lease_s):
                    self._db.execute("ROLLBACK")
                    return False
            self._db.execute(
                "INSERT INTO runs (key, status, config, owner, claimed_at, updated_at, attempts) "
                "VALUES (?, 'running', ?, ?, ?, ?, 1) ON CONFLICT(key) DO UPDATE SET status='running', "
                "owner=excluded.owner, claimed_at=excluded.claimed_at, updated_at=excluded.updated_at, "
                "attempts=runs.attempts + 1, error=NULL",
                (key, json.dumps(config.to_dict(), sort_keys=True), _owner(), now, now),
            )
            self._db.execute("COMMIT")
            return True
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def save(self, result: RunResult) -> None:
        """Store a finished or diverged run (one transaction; replaces any earlier row of its key)."""
        cfg = result.config
        self._db.execute(
            "INSERT INTO runs (key, status, config, result, owner, updated_at, attempts) VALUES (?, ?, ?, ?, ?, ?, 1) "
            "ON CONFLICT(key) DO UPDATE SET status=excluded.status, result=excluded.result, "
            "owner=excluded.owner, updated_at=excluded.updated_at, error=NULL",
            (cfg.key(), result.status, json.dumps(cfg.to_dict(), sort_keys=True), json.dumps(result.to_dict()),
             _owner(), time.time()),
        )

    def fail(self, config: RunConfig, error: str) -> None:
        """Record that a run raised (a bug, not a divergence); a later sweep tries it again."""
        self._db.execute(
            "INSERT INTO runs (key, status, config, owner, updated_at, error) VALUES (?, 'failed', ?, ?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET status='failed', updated_at=excluded.updated_at, error=excluded.error",
            (config.key(), json.dumps(config.to_dict(), sort_keys=True), _owner(), time.time(), error),
        )

    def integrity_check(self) -> str:
        """SQLite's own ``PRAGMA integrity_check``: "ok" for an intact file."""
        return self._db.execute("PRAGMA integrity_check").fetchone()[0]
