"""Sweeps on Dask: a local cluster by default, and a real scheduler with workers started by Dask's
own command-line tools on 127.0.0.1 -- one of them killed mid-sweep, nothing lost."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bnlab import cli
from bnlab.train import RunConfig, cluster, train
from bnlab.train.seeds import train_group
from bnlab.train.store import Store
from bnlab.train.sweep import run_sweep

distributed = pytest.importorskip("distributed")

TINY = RunConfig(data="mnist1d", model="mlp", norm="bn", lr=0.1, steps=30, eval_every=15, batch_size=50)
DASK = str(Path(sys.executable).parent / "dask")


def _no_time(series):
    return {k: v for k, v in series.items() if k != "time_s"}


def test_local_cluster_runs_give_the_same_bits_as_runs_in_this_process(tmp_path):
    # two settings, so two tasks (a setting's seeds are trained together, as one task)
    settings = [[dataclasses.replace(TINY, seed=s, lr=lr) for s in range(n)] for lr, n in ((0.1, 3), (0.2, 1))]
    configs = settings[0] + settings[1]
    seen = []
    results = run_sweep(configs, tmp_path / "s.db", jobs=2, progress=seen.append)
    assert [p.done for p in seen] == [1, 2, 3, 4] and seen[-1].total == 4
    here = [r for group in settings for r in train_group(group, threads=1, progress=False)]
    for r, h in zip(results, here):
        assert _no_time(r.series) == _no_time(h.series)
        assert r.env["worker"].startswith("tcp://127.0.0.1:")
    with Store(tmp_path / "s.db") as store:
        assert store.counts() == {"finished": 4}


def test_dask_logs_stay_silenced_until_the_local_clusters_loop_has_stopped(monkeypatch):
    """The cluster restores dask's log levels as its close() starts, while its loop runs on: a comm to
    a killed worker then printed an INFO traceback into a Ctrl-C'd `bnlab run` (once in CI)."""
    # dask prints to stderr through StreamHandlers on this logger (level NOTSET); pytest's logging plugin
    # may have taken dask's own away, so one like it is the probe
    probe = logging.StreamHandler(sys.stderr)
    monkeypatch.setattr(logging.getLogger("distributed"), "handlers", [probe])
    after_close = []
    real_close = distributed.LocalCluster.close

    def close(self, *args, **kwargs):
        out = real_close(self, *args, **kwargs)  # returns once the cluster's loop has stopped
        after_close.append(probe.level)
        return out

    monkeypatch.setattr(distributed.LocalCluster, "close", close)
    with cluster.connect(None, 1):
        assert probe.level == logging.ERROR
    assert after_close and after_close[0] == logging.ERROR
    assert probe.level == logging.NOTSET


def test_a_worker_with_other_code_refuses_the_run():
    out = cluster.run_on_worker(TINY.to_dict(), "0.0.0+000000000000", "cpu", 1, None)
    assert out["outcome"] == "failed" and "the sweep expects 0.0.0+000000000000" in out["error"]


def test_a_worker_with_other_code_refuses_a_call():
    with pytest.raises(RuntimeError, match=r"the caller expects 0\.0\.0\+000000000000: install the same bnlab"):
        cluster.call_on_worker(os.getpid, "0.0.0+000000000000")


class _TwoRounds:
    """An experiment of two settings (two tasks a round) whose verdict settles at the second look."""

    ID = "CR"

    def __init__(self):
        from bnlab.experiments.spec import Seeds

        self.SEEDS = Seeds(start=2, step=1, cap=3, cluster_cap=3)
        self.looks = []

    def sweep(self, quick, seeds):
        return [dataclasses.replace(TINY, lr=lr, seed=s) for lr in (0.1, 0.2) for s in range(seeds)]

    def analyze(self, runs, ctx):
        from bnlab.experiments import ClaimResult, stability

        self.looks.append(runs)
        result = ClaimResult("CR", "fake", "?", "-", "-", "-", "inconclusive", "-", {}, {})
        return stability.settle(result, stability.computed(["inconclusive"], "a fake"))


def test_the_rounds_run_on_one_local_cluster_and_the_reports_demos_on_one_of_its_workers(tmp_path, monkeypatch):
    from bnlab.experiments import registry
    from bnlab.report import cli as report_cli

    fake = _TwoRounds()
    monkeypatch.setattr(registry, "EXPERIMENTS", {"CR": "CR"})
    monkeypatch.setattr(registry, "get", lambda k: fake)
    starts = []
    real_connect = cluster.connect

    def connect(*args, **kwargs):
        starts.append(args)
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(cluster, "connect", connect)
    monkeypatch.setattr("bnlab.demos.run", lambda: {"pid": os.getpid()})  # pickled by value to the worker
    with cluster.Session(None, 2) as session:
        demos = report_cli.start_demos(session)
        (result,) = registry.run_all(store=tmp_path / "runs.sqlite", jobs=2, session=session)
        measured = demos()
        workers = set(session.client().scheduler_info()["workers"])
    assert starts == [(None, 2)]  # one cluster for both rounds and the demos
    assert [len(look) for look in fake.looks] == [4, 6] and result.rounds["rounds"] == 2
    first, second = ({r.env["worker"] for r in look if r.config.seed == seed} for look, seed in zip(fake.looks, (0, 2)))
    assert first | second <= workers  # the second round's runs ran on the workers that ran the first's
    assert measured["pid"] != os.getpid()


def test_a_report_whose_runs_need_no_cluster_starts_none_and_measures_the_demos_here(tmp_path, monkeypatch):
    from bnlab.experiments import registry
    from bnlab.report import cli as report_cli

    fake = _TwoRounds()
    monkeypatch.setattr(registry, "EXPERIMENTS", {"CR": "CR"})
    monkeypatch.setattr(registry, "get", lambda k: fake)
    registry.run_all(store=tmp_path / "runs.sqlite", jobs=1)  # every run stored (in this process)
    monkeypatch.setattr(cluster, "connect", lambda *a, **k: pytest.fail("a cluster was started"))
    monkeypatch.setattr("bnlab.demos.run", lambda: {"pid": os.getpid()})
    with cluster.Session(None, 2) as session:
        demos = report_cli.start_demos(session)
        registry.run_all(store=tmp_path / "runs.sqlite", jobs=2, session=session)
        assert demos() == {"pid": os.getpid()}


def test_demos_whose_task_was_lost_are_measured_here_with_a_warning(monkeypatch, caplog):
    from bnlab.report import cli as report_cli

    class _Lost:
        def result(self):
            raise OSError("the worker holding it died")

    class _Started:  # a session whose cluster is up
        def when_started(self, fn):
            fn(object())

    monkeypatch.setattr(cluster, "submit_call", lambda client, fn, name: _Lost())
    monkeypatch.setattr("bnlab.demos.run", lambda: {"pid": os.getpid()})
    with caplog.at_level(logging.WARNING, logger="bnlab"):
        assert report_cli.start_demos(_Started())() == {"pid": os.getpid()}
    assert "the demos' task on the cluster failed (OSError: the worker holding it died)" in caplog.text


@pytest.mark.slow
def test_the_demos_measured_on_a_worker_are_the_same_bits_as_here():
    from bnlab import demos
    from bnlab.report import cli as report_cli

    with cluster.Session(None, 2) as session:
        demos_there = report_cli.start_demos(session)
        session.client()  # started as a sweep starts it: the demos go to a worker
        there = demos_there()
    here = demos.run()
    assert there.pop("seconds") > 0 and here.pop("seconds") > 0
    assert json.dumps(there, sort_keys=True) == json.dumps(here, sort_keys=True)


def _start(args, log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _worker(address: str, name: str, logs: Path) -> subprocess.Popen:
    return _start(
        [
            DASK,
            "worker",
            address,
            "--name",
            name,
            "--nthreads",
            "1",
            "--no-nanny",
            "--no-dashboard",
            "--host",
            "127.0.0.1",
        ],
        logs / f"worker-{name}.log",
    )


def _wait_for_workers(client, names, timeout_s=120.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        by_name = {w["name"]: addr for addr, w in client.scheduler_info()["workers"].items()}
        if set(names) <= set(by_name):
            return by_name
        time.sleep(0.2)
    raise AssertionError(f"workers {names} did not join the scheduler within {timeout_s:g} s")


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """`dask scheduler` and two `dask worker`s on 127.0.0.1: the address and the test's own client."""
    logs = tmp_path_factory.mktemp("dask")
    file = logs / "scheduler.json"
    procs = [
        _start(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(file)],
            logs / "scheduler.log",
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(file.read_text())["address"]
        procs += [_worker(address, name, logs) for name in ("a", "b")]
        client = distributed.Client(address, set_as_default=False)
        _wait_for_workers(client, ["a", "b"])
        yield address, client, logs
        client.close()
    finally:
        for p in procs:
            _stop(p)


def test_a_worker_killed_mid_sweep_loses_nothing(tmp_path, scheduler):
    address, client, logs = scheduler
    victim = _worker(address, "victim", logs)
    try:
        workers = _wait_for_workers(client, ["a", "b", "victim"])
        # one learning rate per seed: nine settings, nine tasks (a setting's seeds are one task)
        configs = [dataclasses.replace(TINY, seed=s, lr=0.1 + s / 1000, steps=300, eval_every=150) for s in range(9)]
        killed = {}

        def kill_victim_while_it_runs(p):
            if killed:
                return
            running = client.processing(workers=[workers["victim"]])[workers["victim"]]
            if running:  # it holds a run right now: kill it with that run in flight
                killed["run"] = running[0].split("-")[2]
                victim.send_signal(signal.SIGKILL)
                victim.wait()

        results = run_sweep(configs, tmp_path / "k.db", scheduler=address, progress=kill_victim_while_it_runs)
    finally:
        _stop(victim)
    assert killed, "the victim held no run when runs finished: make the runs longer"
    with Store(tmp_path / "k.db") as store:
        assert store.counts() == {"finished": len(configs)}  # nothing lost, nothing failed
    rerun = next(r for r in results if r.config.key().startswith(killed["run"]))
    assert rerun.env["worker"] in (workers["a"], workers["b"])  # rescheduled on a surviving worker
    for r in (rerun, results[0]):  # the same bits whichever worker ran it
        assert _no_time(r.series) == _no_time(train_group([r.config], threads=1, progress=False)[0].series)


def test_train_and_run_commands_take_the_scheduler_from_the_option_or_the_environment(
    tmp_path, scheduler, monkeypatch, capsys
):
    address, client, _ = scheduler
    argv = ["train", "--model", "mlp", "--norm", "bn", "--steps", "20", "--eval-every", "20", "--json"]
    assert cli.main(argv + ["--scheduler", address]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["env"]["worker"] in client.scheduler_info()["workers"]
    monkeypatch.setenv("BNLAB_SCHEDULER", address)
    monkeypatch.setenv("BNLAB_STORE", str(tmp_path / "runs.sqlite"))
    assert cli.main(["run", "C10", "--quick"]) == 0
    assert "verdict:" in capsys.readouterr().out
    with Store(tmp_path / "runs.sqlite") as store:
        workers = {r.env.get("worker") for r in store.iter_results()}
    assert workers <= set(client.scheduler_info()["workers"]) and workers


def test_an_unreachable_scheduler_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("BNLAB_STORE", str(tmp_path / "runs.sqlite"))
    monkeypatch.setattr(cluster, "connect", _fast_fail(cluster.connect))
    assert cli.main(["run", "C10", "--quick", "--scheduler", "tcp://127.0.0.1:9"]) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after the progress display's plan
    assert last.startswith("bnlab run: cannot reach the Dask scheduler at tcp://127.0.0.1:9 within 2 s")
    with Store(tmp_path / "runs.sqlite") as store:
        assert store.counts().get("running", 0) == 0  # claims released


def _fast_fail(connect):
    def quick(scheduler, jobs, timeout_s=30.0):
        return connect(scheduler, jobs, timeout_s=2.0)

    return quick
