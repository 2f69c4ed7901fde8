"""The results store and the sweep runner: keys, claims, skipping, failures, and a real SIGKILL."""

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import bnlab
from bnlab.train import Probe, RunConfig, train
from bnlab.train.store import Store
from bnlab.train.seeds import train_group
from bnlab.train.sweep import SweepError, run_sweep

TINY = RunConfig(data="mnist1d", model="mlp", norm="bn", lr=0.1, steps=30, eval_every=15, batch_size=50)


def _no_time(series):
    return {k: v for k, v in series.items() if k != "time_s"}


def test_key_covers_every_result_relevant_field_and_the_version(monkeypatch):
    base = RunConfig()
    changes = dict(
        data="digits",
        model="mlp",
        norm="bn",
        placement="after",
        act="tanh",
        norm_kw={"eps": 0.1},
        model_kw={"widths": [3]},
        optimizer="adam",
        lr=0.2,
        momentum=0.5,
        weight_decay=1e-4,
        schedule="cosine",
        warmup_steps=3,
        batch_size=10,
        steps=5,
        seed=1,
        trainable="norm",
        trainable_k=3,
        eval_every=7,
        eval_samples=9,
        probes=("grad_norm",),
        diverge_factor=9.0,
        tag="x",
        batch_classes=2,
    )
    assert set(changes) | {"data_root"} == {f.name for f in dataclasses.fields(RunConfig)}
    keys = {base.key()} | {dataclasses.replace(base, **{k: v}).key() for k, v in changes.items()}
    assert len(keys) == len(changes) + 1
    assert dataclasses.replace(base, data_root="/elsewhere").key() == base.key()
    assert RunConfig(lr=1).key() == RunConfig(lr=1.0).key()
    assert RunConfig(model_kw={"a": 1, "b": 2}).key() == RunConfig(model_kw={"b": 2, "a": 1}).key()
    from bnlab.train import config as config_module

    monkeypatch.setattr(config_module, "code_version", lambda: "0.1.0+changed")
    assert base.key() not in keys


def test_code_version_digests_code_but_not_comments_or_docstrings():
    from bnlab.train.config import _code_digest, code_version

    version = code_version()
    assert version.startswith(bnlab.__version__ + "+") and len(version.split("+")[1]) == 12
    src = b'"""Doc."""\ndef f(x):\n    """Doc."""\n    return x + 1  # note\n'
    redocumented = b'"""Other doc."""\ndef f(x):\n    # why\n    return x + 1\n'
    changed = b'"""Doc."""\ndef f(x):\n    """Doc."""\n    return x + 2\n'
    assert _code_digest(src) == _code_digest(redocumented)
    assert _code_digest(src) != _code_digest(changed)


def test_store_round_trips_a_result(tmp_path):
    result = train(TINY, threads=1)
    with Store(tmp_path / "r.db") as store:
        assert store.get(TINY) is None and store.status(TINY) is None
        store.save(result)
        back = store.get(TINY)
    assert back.config == TINY and back.series == result.series and back.status == "finished"
    assert back.summary() == result.summary()


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def live_python():
    """A live python process (the kind of process that holds claims) and its owner string."""
    from bnlab.train import owner

    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    time.sleep(0.1)
    yield p, f"{socket.gethostname()}:{p.pid}:{owner._start_ticks(p.pid)}"
    p.kill()
    p.wait()


def test_claims_exclude_live_owners_and_take_over_dead_ones(tmp_path, live_python):
    store = Store(tmp_path / "c.db")
    assert store.claim(TINY)
    host = socket.gethostname()
    db = store._db
    db.execute("UPDATE runs SET owner = ? WHERE key = ?", (live_python[1], TINY.key()))
    assert not store.claim(TINY)
    db.execute("UPDATE runs SET claimed_at = 0 WHERE key = ?", (TINY.key(),))  # lease expired
    claim = store.claim(TINY)
    assert claim and claim.previous_owner == live_python[1] and "lease" in claim.reason
    db.execute("UPDATE runs SET owner = ? WHERE key = ?", (f"{host}:{_dead_pid()}:1", TINY.key()))
    claim = store.claim(TINY)
    assert claim and "exited" in claim.reason
    assert store.info(TINY)["attempts"] == 3
    store.save(train(TINY, threads=1))
    assert not store.claim(TINY)  # done


def test_sweep_skips_finished_runs_and_reports_progress(tmp_path):
    configs = [dataclasses.replace(TINY, seed=s) for s in range(3)]
    seen = []
    first = run_sweep(configs[:2], tmp_path / "s.db", progress=seen.append)
    assert [p.done for p in seen] == [1, 2] and seen[-1].total == 2 and seen[-1].eta_s == 0
    assert seen[0].last["status"] == "finished"
    seen.clear()
    second = run_sweep(configs + configs[:1], tmp_path / "s.db", progress=seen.append)  # a duplicate, too
    assert len(seen) == 1 and seen[0].skipped == 2 and seen[0].done == 3 and seen[0].total == 3
    assert [r.config for r in second] == configs + configs[:1]
    assert _no_time(second[0].series) == _no_time(first[0].series)


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    bad = dataclasses.replace(TINY, model_kw={"bogus": 1})
    with pytest.raises(SweepError, match=r"(?s)1 of 2 runs failed.*bogus"):
        run_sweep([bad, TINY], tmp_path / "f.db")
    with Store(tmp_path / "f.db") as store:
        assert store.status(bad) == "failed" and "bogus" in store.info(bad)["error"]
        assert store.status(TINY) == "finished"
    assert run_sweep([bad, TINY], tmp_path / "f.db", on_error="skip")[0] is None


SCRIPT = textwrap.dedent("""
    import os, sys, time
    from bnlab.train import RunConfig
    from bnlab.train.sweep import run_sweep

    # one learning rate per seed: settings the sweep runs one after another (a setting's seeds train together)
    CONFIGS = [RunConfig(data="mnist1d", model="mlp", norm="bn", lr=0.1 + s / 1000, steps={steps},
                         eval_every={steps}, batch_size=50, seed=s) for s in range({n})]

    if __name__ == "__main__":
        if len(sys.argv) > 3:  # a start line: say "ready", wait for "go", so two sweeps start together
            open(os.path.join(sys.argv[3], f"ready-{{os.getpid()}}"), "w").close()
            while not os.path.exists(os.path.join(sys.argv[3], "go")):
                time.sleep(0.01)
        run_sweep(CONFIGS, sys.argv[1], jobs=int(sys.argv[2]), progress=lambda p: print(p, flush=True))
""")


def _script(tmp_path, n, steps):
    path = tmp_path / "sweep_script.py"
    path.write_text(SCRIPT.format(n=n, steps=steps))
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        mod = importlib.import_module("sweep_script")
        mod = importlib.reload(mod)
    finally:
        sys.path.remove(str(tmp_path))
    return path, mod.CONFIGS


def test_sigkill_mid_sweep_loses_only_runs_in_flight_and_resumes(tmp_path):
    n = 8
    script, configs = _script(tmp_path, n, steps=200)
    db = tmp_path / "kill.db"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db), "2"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if db.exists():
                with Store(db) as s:
                    if s.counts().get("finished", 0) >= 2:
                        break
            time.sleep(0.05)
        else:
            pytest.fail("the sweep finished no run within 120 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its worker processes, mid-run
        proc.wait()

    with Store(db) as store:
        assert store.integrity_check() == "ok"
        done_before = {c.key(): store.info(c) for c in configs if store.status(c) == "finished"}
        assert 2 <= len(done_before) < n, "the kill came after the sweep ended: lengthen the runs"
        for c in configs:
            if c.key() in done_before:
                assert store.get(c).series["step"] == [200.0]  # stored whole

    seen = []
    results = run_sweep(configs, db, jobs=1, progress=seen.append)
    assert seen[-1].skipped == len(done_before) and len(seen) == n - len(done_before)
    with Store(db) as store:
        assert store.counts() == {"finished": n}
        for key, info in done_before.items():
            assert store.info(key) == info  # not run again
    # a run written by a killed sweep's worker equals a fresh run of its config
    first_done = next(c for c in configs if c.key() in done_before)
    fresh = train_group([first_done], threads=1)[0]
    stored = results[configs.index(first_done)]
    assert _no_time(stored.series) == _no_time(fresh.series)


@pytest.mark.slow
def test_two_sweeps_sharing_a_store_run_each_config_once(tmp_path):
    n = 6
    script, configs = _script(tmp_path, n, steps=100)
    db = tmp_path / "shared.db"
    line = tmp_path / "line"
    line.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(db), "1", str(line)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    deadline = time.monotonic() + 120
    while len(list(line.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    (line / "go").touch()
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    with Store(db) as store:
        assert store.counts() == {"finished": n}
        assert [store.info(c)["attempts"] for c in configs] == [1] * n
        owners = {store.info(c)["owner"] for c in configs}
    assert len(owners) == 2  # both processes did part of the work


class _SeedProbe(Probe):
    def finish(self, model, dataset):
        return {"first_weight": float(next(model.parameters()).detach().flatten()[0])}


def register_seed_probe():
    """A worker_setup: registers a probe the way an experiment module would."""
    from bnlab.train.probes import register_probe

    register_probe("test_first_weight", lambda arg: _SeedProbe())


@pytest.mark.slow
def test_worker_setup_registers_custom_probes_in_sweep_workers(tmp_path):
    register_seed_probe()
    configs = [dataclasses.replace(TINY, seed=s, probes=("test_first_weight",)) for s in range(2)]
    results = run_sweep(configs, tmp_path / "w.db", jobs=2, worker_setup=register_seed_probe)
    for c, r in zip(configs, results):
        want = train(c, threads=1).final_metrics["first_weight"]
        assert r.final_metrics["first_weight"] == want
