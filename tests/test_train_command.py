"""``bnlab train`` end to end, the overhead measurement, and (slow) the MNIST-1D reference accuracy."""

import argparse
import dataclasses
import json

import pytest
import torch

from bnlab import cli, data
from bnlab.train import RunConfig, train
from bnlab.train.overhead import bare_loop, measure_overhead
from bnlab.train.store import Store

ARGS = [
    "train",
    "--data",
    "mnist1d",
    "--model",
    "cnn",
    "--norm",
    "bn",
    "--placement",
    "before",
    "--lr",
    "0.1",
    "--seed",
    "0",
    "--steps",
    "40",
    "--eval-every",
    "20",
]


def test_train_command_prints_the_result_of_the_config(capsys):
    assert cli.main(ARGS) == 0
    out = capsys.readouterr().out
    want = train(RunConfig(norm="bn", lr=0.1, steps=40, eval_every=20), threads=1)
    assert "status finished; 40 steps" in out
    assert f"final test accuracy {want.final('test_acc'):.4f}" in out
    assert want.config.key() in out


def test_train_command_json_and_store_reuse(tmp_path, capsys):
    db = str(tmp_path / "r.db")
    assert cli.main(ARGS + ["--json", "--store", db, "--norm-kw", "momentum=0.2", "--probe", "grad_norm"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["config"]["norm_kw"] == {"momentum": 0.2} and "grad_norm/total" in first["series"]
    with Store(db) as store:
        assert store.status(first["key"]) == "finished"
    assert cli.main(ARGS + ["--json", "--store", db, "--norm-kw", "momentum=0.2", "--probe", "grad_norm"]) == 0
    captured = capsys.readouterr()
    assert "stored result" in captured.err and json.loads(captured.out)["series"] == first["series"]


def test_train_command_rejects_bad_options(capsys):
    assert cli.main(["train", "--optimizer", "sgd", "--lr", "-1"]) == 2
    assert "expected lr > 0 (got -1.0)" in capsys.readouterr().err


def test_bare_loop_does_the_same_work_as_the_trainer():
    config = RunConfig(norm="bn", lr=0.1, steps=30, eval_every=30)
    ds = data.load("mnist1d")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the trainer runs (the same kernels give the same sums)
    try:
        bare_acc = bare_loop(config, ds)
    finally:
        torch.set_num_threads(threads)
    assert bare_acc == train(config, ds, threads=1).final("test_acc")
    numbers = measure_overhead(dataclasses.replace(config, steps=10), repeats=1)
    assert numbers["ratio"] == pytest.approx(numbers["trainer_s"] / numbers["bare_s"])
    assert numbers["trainer_steps_per_s"] > 0 and numbers["steps"] == 10


@pytest.mark.slow
def test_mnist1d_reference_cnn_reaches_the_published_accuracy():
    # Greydanus 2020: 94 +- 2 % with Adam 1e-2, batch 100 (8000 steps in the MNIST-1D reference); one seed here
    r = train(
        RunConfig(
            model="cnn", norm="none", optimizer="adam", lr=1e-2, batch_size=100, steps=8000, eval_every=8000, seed=0
        ),
        threads=1,
    )
    assert r.final("test_acc") >= 0.90


def test_data_option_takes_shifted_sets_and_refuses_unknown_names(capsys):
    from bnlab.train import command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert parser.parse_args(["--data", "mnist1d-c/gain/3"]).data == "mnist1d-c/gain/3"
    assert parser.parse_args(["--data", "digits"]).data == "digits"
    for bad, said in (("mnist1d-c/bogus/3", "expected a corruption of mnist1d"), ("foo", "expected a data set name")):
        with pytest.raises(SystemExit):
            parser.parse_args(["--data", bad])
        assert said in capsys.readouterr().err
