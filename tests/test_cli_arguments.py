"""Every command-line argument is checked before the work starts, with a one-line error.

Before: `train --device cuda` on a CPU-only torch and `train --device banana` ended in tracebacks
once training began, `train --model-kw widths=[64,64]` (the --help example) failed inside the
default model's constructor, `bench --json DIR` was checked after the whole benchmark ran, `check
--steps -2` was accepted, and `doctor --input-shape` built a float32 example for any model.
"""

from __future__ import annotations

import sys

import pytest
import torch

import bnlab.bench.command as bench_command
from bnlab import cli, models
from bnlab.train import trainer


def _no_work(*args, **kwargs):
    raise AssertionError("the work started before the arguments were checked")


@pytest.fixture
def guarded(monkeypatch, tmp_path):
    monkeypatch.setenv("BNLAB_STORE", str(tmp_path / "runs.sqlite"))
    monkeypatch.setattr(trainer, "train", _no_work)
    monkeypatch.setattr(bench_command, "run", _no_work)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a usable GPU")
def test_train_on_an_unavailable_device_is_one_line_before_training(guarded, capsys):
    assert cli.main(["train", "--device", "cuda"]) == 2
    assert _error_line(capsys).startswith("bnlab train: expected a device available here (got 'cuda'")


def test_train_on_an_unknown_device_is_an_argument_error(guarded, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--device", "banana"])
    assert exit_.value.code == 2
    assert _error_line(capsys).endswith(
        "argument --device: expected a device such as cpu, cuda or cuda:1 (got 'banana')"
    )


def test_model_options_are_checked_against_the_model(guarded, capsys):
    assert cli.main(["train", "--model-kw", "widths=[64,64]"]) == 2
    assert _error_line(capsys) == "bnlab train: expected options of model 'cnn' among ['channels'] (got widths)"
    assert cli.main(["train", "--norm", "bn", "--norm-kw", "banana=1"]) == 2
    assert "expected options that norm 'bn' takes" in _error_line(capsys)
    models.check_options("mlp", "bn", model_kw={"widths": [64, 64]})  # the --help example's models take it
    models.check_options("cnn", "bn", model_kw={"channels": 32})


def test_bench_json_is_checked_before_the_benchmark(guarded, capsys, tmp_path):
    assert cli.main(["bench", "--quick", "--json", str(tmp_path)]) == 2
    assert _error_line(capsys) == f"bnlab bench: expected --json to name a file (got the folder {str(tmp_path)!r})"
    assert cli.main(["bench", "--quick", "--json", str(tmp_path / "no" / "x.json")]) == 2
    assert "expected --json in an existing, writable folder" in _error_line(capsys)
    assert cli.main(["bench", "--quick", "--ops", "eval,banana"]) == 2
    assert "(got banana)" in _error_line(capsys)
    for option in ("--repeats", "--threads"):
        with pytest.raises(SystemExit):
            cli.main(["bench", option, "0"])
        assert _error_line(capsys).endswith("expected a positive integer (got 0)")


def test_check_refuses_negative_steps(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["check", "--steps", "-2"])
    assert exit_.value.code == 2
    assert _error_line(capsys).endswith("argument --steps: expected a non-negative integer (got -2)")


@pytest.mark.parametrize("dtype", ["float64", "half", "bfloat16"])
def test_doctor_builds_its_example_in_the_models_dtype(tmp_path, capsys, monkeypatch, dtype):
    (tmp_path / "typed_models.py").write_text(
        "import torch\n"
        "def net():\n"
        "    return torch.nn.Sequential(torch.nn.Linear(5, 4, bias=False), torch.nn.BatchNorm1d(4),\n"
        f"                               torch.nn.ReLU()).to(torch.{dtype}).eval()\n"
    )
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert cli.main(["doctor", "typed_models:net", "--path", str(tmp_path), "--input-shape", "8,5"]) == 0
    out = capsys.readouterr().out
    assert "could not compare" not in out and "relative output gap" in out


def test_run_passes_jobs_threads_and_scheduler_to_the_experiment(monkeypatch, capsys):
    from bnlab.experiments import registry

    seen = []

    def run(claim_id, ctx):
        seen.append((claim_id, ctx.jobs, ctx.threads, ctx.scheduler))
        raise RuntimeError("stop here")

    monkeypatch.setattr(registry, "run", run)
    with pytest.raises(RuntimeError, match="stop here"):
        cli.main(["run", "C4", "--jobs", "3", "--threads", "2", "--scheduler", "tcp://127.0.0.1:1"])
    assert seen == [("C4", 3, 2, "tcp://127.0.0.1:1")]
