"""The file of a results store: creating it safely, refusing what is not an intact store, opening
it read-only where it cannot be written, and the schema with its checksums.

A new store is made under a temporary name and linked into place, so no process ever sees a half-
made store; an existing file must start with SQLite's header, pass SQLite's ``quick_check`` and
hold a ``runs`` table (or no table at all). A store written before results carried checksums gets
them when first opened for writing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import tempfile
import urllib.parse

DONE = ("finished", "diverged")
_COLUMNS = ("key", "status", "config", "result", "owner", "claimed_at", "updated_at", "attempts", "error", "checksum")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,           -- running | finished | diverged | failed
    config TEXT NOT NULL,           -- RunConfig.to_dict() as JSON
    result TEXT,                    -- RunResult.to_dict() as JSON, for finished / diverged
    owner TEXT,                     -- host:pid:start of the process that claimed the run
    claimed_at REAL,
    updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    checksum TEXT                   -- SHA-256 of key, status and result (finished / diverged)
)
"""
_SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(RuntimeError):
    """The results store cannot be used as asked; the message names the file and the reason."""


def checksum(key: str, status: str, result_json: str) -> str:
    return hashlib.sha256(f"{key}\0{status}\0{result_json}".encode()).hexdigest()


def _can_write_file(path: str) -> bool:
    try:
        os.close(os.open(path, os.O_RDWR))
        return True
    except OSError:
        return False


def _can_write_folder(folder: str) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def open_store(name: str, timeout_s: float) -> tuple[sqlite3.Connection, bool, bool]:
    """The connection to the store ``name``, whether it is read-only here, and whether its results
    carry checksums; StoreError for anything that is not an intact store."""
    path = os.path.abspath(name)
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise StoreError(f"results store {name}: expected a file (got a folder)")
    if not os.path.exists(path):
        _create(name, path, folder)
    _check_header(name, path)
    read_only = not (_can_write_file(path) and _can_write_folder(folder))
    uri = "file:" + urllib.parse.quote(path)
    if read_only:
        # Without write access to the folder SQLite cannot make the WAL index it needs to read
        # a WAL store; "immutable" reads the file as it is (no writer can exist there either).
        # A WAL file left by a killed writer holds commits, so it is read when it is there.
        uri += "?mode=ro" + ("" if os.path.exists(path + "-wal") or _can_write_folder(folder) else "&immutable=1")
    try:
        db = sqlite3.connect(uri, uri=True, timeout=timeout_s, isolation_level=None)
    except sqlite3.Error as e:
        raise StoreError(f"results store {name}: cannot open it ({e})") from None
    try:
        checked = _prepare(name, db, read_only)
    except BaseException:
        db.close()
        raise
    return db, read_only, checked


def _create(name: str, path: str, folder: str) -> None:
    """A new, empty store, made under a temporary name and linked into place: another process
    never sees it half made (a 0-byte file is therefore never a store being created, and is
    refused), and of two processes creating it at once, one wins and both use its file."""
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".new-store-", suffix=".sqlite")
    except OSError as e:
        raise StoreError(
            f"results store {name}: cannot create it in {folder} ({e.strerror}; expected a writable folder)"
        ) from None
    os.close(fd)
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
        finally:
            db.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # created meanwhile by another process
        except OSError:  # a file system without hard links: a rename, unless the file appeared
            if not os.path.exists(path):
                os.replace(tmp, path)
    except (OSError, sqlite3.Error) as e:
        raise StoreError(f"results store {name}: cannot create it ({e})") from None
    finally:
        for leftover in (tmp, tmp + "-wal", tmp + "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)


def _check_header(name: str, path: str) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as e:
        raise StoreError(f"results store {name}: cannot read it ({e.strerror})") from None
    if not head:
        raise StoreError(
            f"results store {name} is empty (0 bytes): expected a bnlab results store "
            f"(SQLite); it was truncated or is another file. Move it away to start a new store"
        )
    if head != _SQLITE_MAGIC:
        raise StoreError(
            f"results store {name}: expected a bnlab results store (SQLite), "
            f"got a file that is not SQLite (starts with {head[:8]!r})"
        )


def _prepare(name: str, db: sqlite3.Connection, read_only: bool) -> bool:
    """Check the opened file, create or upgrade the schema; whether results carry checksums."""
    try:
        problems = db.execute("PRAGMA quick_check").fetchall()
        if [r[0] for r in problems] != ["ok"]:
            raise StoreError(
                f"results store {name} is damaged (SQLite's check: {problems[0][0]}); "
                f"expected an intact bnlab results store. Move it away to start a new one"
            )
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "runs" not in tables:
            raise StoreError(
                f"results store {name}: expected a bnlab results store (a table 'runs'), "
                f"got a SQLite database with tables {sorted(tables)}"
            )
        if read_only:
            columns = {r[1] for r in db.execute("PRAGMA table_info(runs)")}
            return "checksum" in columns
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(_SCHEMA)
        columns = {r[1] for r in db.execute("PRAGMA table_info(runs)")}
        if not set(_COLUMNS) - {"checksum"} <= columns:
            raise StoreError(
                f"results store {name}: expected the columns {list(_COLUMNS)} in table runs (got {sorted(columns)})"
            )
        if "checksum" not in columns:
            _add_checksums(db)
        return True
    except sqlite3.DatabaseError as e:
        raise StoreError(f"results store {name}: expected an intact bnlab results store (SQLite says: {e})") from None


def _add_checksums(db: sqlite3.Connection) -> None:
    """A store written before checksums: add the column and checksum the rows it holds."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("ALTER TABLE runs ADD COLUMN checksum TEXT")
        rows = db.execute("SELECT key, status, result FROM runs WHERE status IN (?, ?)", DONE).fetchall()
        db.executemany("UPDATE runs SET checksum = ? WHERE key = ?", [(checksum(k, s, r), k) for k, s, r in rows])
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
