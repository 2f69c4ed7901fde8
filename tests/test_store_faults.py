"""The results store under faults: stale and reused-pid claims, a full disk, empty, foreign, damaged
and tampered files, read-only stores, and the one-line errors the command line makes of them."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
import unprivileged

from bnlab import cli
from bnlab.train import RunConfig, owner, train
from bnlab.train.store import Store, StoreError
from bnlab.train.sweep import run_sweep

TINY = RunConfig(data="mnist1d", model="mlp", norm="bn", lr=0.1, steps=10, eval_every=10, batch_size=50)


@pytest.fixture(scope="module")
def tiny_result():
    return train(TINY, threads=1, progress=False)


@pytest.fixture
def sleeper():
    """A live process that is not python (a pid a crashed sweep's pid could come back as)."""
    p = subprocess.Popen(["sleep", "120"])
    time.sleep(0.05)
    yield p
    p.kill()
    p.wait()


def _set_owner(store: Store, config, holder: str) -> None:
    store._db.execute("UPDATE runs SET owner = ?, claimed_at = ? WHERE key = ?", (holder, time.time(), config.key()))


# --- claims -------------------------------------------------------------------------------------


def test_a_claim_whose_pid_now_belongs_to_a_later_process_is_taken_over(tmp_path, sleeper):
    store = Store(tmp_path / "s.db")
    assert store.claim(TINY)
    started = int(owner._start_ticks(sleeper.pid))
    _set_owner(store, TINY, f"{socket.gethostname()}:{sleeper.pid}:{started - 1}")  # same pid, earlier process
    claim = store.claim(TINY)
    assert claim and f"pid {sleeper.pid} now belongs to another process" in claim.reason
    _set_owner(store, TINY, f"{socket.gethostname()}:{sleeper.pid}:{started}")  # the process itself: held
    assert not store.claim(TINY)


def test_a_claim_recorded_without_start_time_is_held_only_by_a_python_or_bnlab_process(tmp_path, sleeper):
    store = Store(tmp_path / "s.db")
    assert store.claim(TINY)
    _set_owner(store, TINY, f"{socket.gethostname()}:{sleeper.pid}")
    claim = store.claim(TINY)
    assert claim and "now belongs to another program (sleep 120)" in claim.reason
    python = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.1)
        _set_owner(store, TINY, f"{socket.gethostname()}:{python.pid}")
        assert not store.claim(TINY)
    finally:
        python.kill()
        python.wait()


SWEEP = textwrap.dedent("""
    import sys
    from bnlab.train import RunConfig
    from bnlab.train.sweep import run_sweep
    run_sweep([RunConfig(data="mnist1d", model="mlp", norm="bn", lr=0.1, steps=10, eval_every=10,
                         batch_size=50)], sys.argv[1])
    print("done")
""")


def test_a_sweep_takes_over_a_stale_claim_at_once_and_says_so(tmp_path, sleeper):
    db = tmp_path / "s.db"
    with Store(db) as store:
        assert store.claim(TINY)
        _set_owner(store, TINY, f"{socket.gethostname()}:{sleeper.pid}")  # a pid reused by `sleep`
    t = time.monotonic()
    out = subprocess.run([sys.executable, "-c", SWEEP, str(db)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr[-2000:]
    assert time.monotonic() - t < 60
    assert f"taking over 1 run(s) claimed by {socket.gethostname()}:{sleeper.pid}" in out.stderr
    with Store(db) as store:
        assert store.status(TINY) == "finished"


# --- a full disk ----------------------------------------------------------------------------------


def test_a_full_disk_surfaces_sqlites_own_error(tmp_path):
    store = Store(tmp_path / "full.db")
    store._db.execute("PRAGMA max_page_count = 12")  # SQLite's SQLITE_FULL, as on a full disk
    with pytest.raises(StoreError, match=r"full\.db: claim run \w+ failed: database or disk is full"):
        for i in range(100):
            store.claim(RunConfig(tag=f"{i:04d}" + "x" * 3000))


# --- files that are not stores ----------------------------------------------------------------


def test_an_empty_store_file_is_refused_not_replaced(tmp_path):
    path = tmp_path / "runs.sqlite"
    path.write_bytes(b"")
    with pytest.raises(StoreError, match=r"runs\.sqlite is empty \(0 bytes\): expected a bnlab results store"):
        Store(path)
    assert path.read_bytes() == b""


def test_stores_created_at_once_by_many_openers_are_one_store(tmp_path):
    import threading

    path, barrier, errors = tmp_path / "new" / "runs.sqlite", threading.Barrier(8), []

    def open_and_claim(i):
        barrier.wait()
        try:
            with Store(path) as store:
                assert store.claim(RunConfig(seed=i))
        except Exception as e:  # a half-made store seen as "empty" would land here
            errors.append(e)

    threads = [threading.Thread(target=open_and_claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Store(path) as store:
        assert store.counts() == {"running": 8}
    assert sorted(os.listdir(path.parent)) == ["runs.sqlite"]  # no temporary file left


def test_a_file_that_is_not_sqlite_or_not_a_store_is_refused(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 100)
    with pytest.raises(
        StoreError, match=r"notes\.txt: expected a bnlab results store \(SQLite\), got a file that is not"
    ):
        Store(text)
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE people (name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(
        StoreError,
        match=r"other\.db: expected a bnlab results store \(a table 'runs'\), "
        r"got a SQLite database with tables \['people'\]",
    ):
        Store(other)
    with pytest.raises(StoreError, match="expected a file"):
        Store(tmp_path)


def test_a_damaged_store_is_refused(tmp_path, tiny_result):
    path = tmp_path / "runs.sqlite"
    with Store(path) as store:
        for seed in range(30):
            store.save(
                train(
                    RunConfig(**{**TINY.to_dict(), "seed": seed, "steps": 2, "eval_every": 2}),
                    threads=1,
                    progress=False,
                )
            )
    blob = bytearray(path.read_bytes())
    assert len(blob) > 3 * 4096
    blob[4096 : 4096 * 2] = os.urandom(4096)  # a page of the table's b-tree
    path.write_bytes(bytes(blob))
    with pytest.raises(StoreError, match=r"runs\.sqlite.*(damaged|intact)"):
        Store(path)


def test_a_tampered_result_fails_its_checksum_and_is_run_again(tmp_path, tiny_result, caplog):
    path = tmp_path / "runs.sqlite"
    with Store(path) as store:
        store.save(tiny_result)
        blob = json.loads(store._db.execute("SELECT result FROM runs").fetchone()[0])
        blob["series"]["test_acc"][-1] = 0.999
        store._db.execute("UPDATE runs SET result = ?", (json.dumps(blob),))
        with pytest.raises(StoreError, match=rf"the stored result of run {TINY.key()} fails its checksum"):
            store.get(TINY)
        assert store.done([TINY]) == set() and store.damaged([TINY]) == {TINY.key()}
    with caplog.at_level("WARNING", logger="bnlab"):
        (again,) = run_sweep([TINY], path)
    assert "1 stored run(s)" in caplog.text and "fail their checksum" in caplog.text
    assert again.series["test_acc"][-1] == tiny_result.series["test_acc"][-1] != 0.999


def test_a_store_written_before_checksums_gets_them(tmp_path, tiny_result):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE runs (key TEXT PRIMARY KEY, status TEXT NOT NULL, config TEXT NOT NULL, result TEXT, "
        "owner TEXT, claimed_at REAL, updated_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, error TEXT)"
    )
    db.execute(
        "INSERT INTO runs (key, status, config, result, owner, updated_at) VALUES (?, ?, ?, ?, 'h:1', 0)",
        (TINY.key(), "finished", json.dumps(TINY.to_dict()), json.dumps(tiny_result.to_dict())),
    )
    db.commit()
    db.close()
    with Store(path) as store:
        assert store.get(TINY).series == tiny_result.series
        assert store._db.execute("SELECT checksum FROM runs").fetchone()[0] is not None


# --- read-only stores -------------------------------------------------------------------------


READ = textwrap.dedent("""
    import sys
    from bnlab.train import RunConfig
    from bnlab.train.store import Store, StoreError
    store = Store(sys.argv[1])
    cfg = RunConfig(data="mnist1d", model="mlp", norm="bn", lr=0.1, steps=10, eval_every=10, batch_size=50)
    print(store.read_only, store.get(cfg).series["test_acc"][-1])
    try:
        store.claim(RunConfig(seed=5))
    except StoreError as e:
        print(e)
""")


@pytest.mark.parametrize("what", ["folder", "file"])
def test_a_read_only_store_can_be_read(tmp_path, tiny_result, what):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "runs.sqlite"
    with Store(path) as store:
        store.save(tiny_result)
    unprivileged.make_read_only(folder if what == "folder" else path)
    try:
        out = unprivileged.run([sys.executable, "-c", READ, str(path)], timeout=120)
    finally:
        unprivileged.make_writable(folder, path)
    assert out.returncode == 0, out.stderr[-2000:]
    first, second = out.stdout.splitlines()
    assert first == f"True {tiny_result.series['test_acc'][-1]}"
    assert second.startswith(f"results store {path} is read-only here") and "cannot claim run" in second


# --- the command line -------------------------------------------------------------------------


def test_a_damaged_store_is_one_line_from_the_command_line(tmp_path, monkeypatch, capsys):
    store = tmp_path / "runs.sqlite"
    store.write_bytes(b"")
    monkeypatch.setenv("BNLAB_STORE", str(store))
    assert cli.main(["run", "C10", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"bnlab run: results store {store} is empty (0 bytes): expected a bnlab results store (SQLite); "
        f"it was truncated or is another file. Move it away to start a new store\n"
    )
    assert cli.main(["train", "--model", "mlp", "--steps", "1", "--store", str(store)]) == 2
    assert capsys.readouterr().err.startswith(f"bnlab train: results store {store} is empty")


def test_a_read_only_out_folder_is_refused_before_the_sweep(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    unprivileged.make_read_only(out)
    env = {**os.environ, "BNLAB_STORE": str(tmp_path / "runs.sqlite")}
    t = time.monotonic()
    try:
        res = unprivileged.run(
            [sys.executable, "-m", "bnlab.cli", "report", "--quick", "--out", str(out)], env=env, timeout=120
        )
    finally:
        unprivileged.make_writable(out)
    assert time.monotonic() - t < 60
    assert res.returncode == 2, res.stderr[-2000:]
    assert (
        res.stderr == f"bnlab report: --out {out}: expected a folder the report can be written to (Permission denied)\n"
    )
    assert not (tmp_path / "runs.sqlite").exists()  # nothing ran
