"""The report's measured demos: each measures what its text says it measures."""

from __future__ import annotations

import copy

import pytest
import torch

from bnlab import data
from bnlab import demos as demos_module
from bnlab.demos import diagnostics, pitfalls
from bnlab.surgery import conventions


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    ds = data.load("mnist1d")
    return pitfalls.train_cnn(ds, steps=60), ds


def test_run_measures_everything_on_one_thread_and_restores_the_thread_count(demos, monkeypatch):
    assert set(demos) == {"parity", "pitfalls", "diagnostics", "seconds"}
    from bnlab.demos import parity

    seen = []
    for module in (parity, pitfalls, diagnostics):
        monkeypatch.setattr(module, "run", lambda: seen.append(torch.get_num_threads()) or {})
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = demos_module.run()
        assert seen == [1, 1, 1] and torch.get_num_threads() == 2
        assert set(out) == {"parity", "pitfalls", "diagnostics", "seconds"}
    finally:
        torch.set_num_threads(before)


def test_the_scratch_module_matches_torch_in_float32(demos):
    parity = demos["parity"]
    assert parity["largest"] < 1e-5  # relative; float32 rounding only
    assert set(parity) >= {"output", "input_gradient", "weight_gradient", "running_mean", "running_var", "eval_output"}


def test_training_mode_prediction_uses_the_batch_and_changes_the_running_statistics(trained):
    model, ds = trained
    x, y = ds.x_test[:200], ds.y_test[:200]
    copy_ = copy.deepcopy(model)
    acc = pitfalls.accuracy(copy_, x, y, batch=200, train_mode=True)
    with torch.no_grad():  # the reference: the same model, in training mode, by hand
        ref = copy.deepcopy(model).train()
        expected = float((ref(x).argmax(1) == y).float().mean())
    assert acc == pytest.approx(expected)
    assert not copy_.training and pitfalls._stat_change(model, copy_) > 0  # statistics moved
    assert pitfalls._stat_change(model, model) == 0


def test_a_batch_of_one_fails_as_torch_fails(trained):
    model, ds = trained
    out = pitfalls.batch_of_one(model, ds)
    with pytest.raises(ValueError) as ref:
        torch.nn.BatchNorm1d(8).train()(torch.randn(1, 8))
    assert out["error"].split(",")[0] == str(ref.value).split(",")[0]
    assert out["eval_alone_vs_batch"] < 1e-4 < out["train_alone_vs_eval"]


def test_reestimating_with_momentum_one_keeps_the_last_batch_only(trained):
    model, ds = trained
    m = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(pitfalls.SEED)
    last = pitfalls._batches(len(ds.x_train), pitfalls.BATCH, gen)[-1]
    with torch.no_grad():  # the reference: running stats of one forward of the last batch, momentum 1
        ref = copy.deepcopy(model).train()
        for bn in pitfalls._bn_layers(ref):
            bn.reset_running_stats()
            bn.momentum = 1.0
        ref(ds.x_train[last])
    acc = pitfalls._reestimate(m, ds, 1.0)
    assert acc == pytest.approx(pitfalls.accuracy(ref.eval(), ds.x_test, ds.y_test))


def test_the_momentum_demo_uses_the_one_conversion_function(demos):
    mo = demos["pitfalls"]["momentum"]
    assert mo["converted"] == conventions.decay_to_momentum(conventions.KERAS_DEFAULTS["momentum"])
    assert mo["keras_decay"] == 0.99 and mo["batches_per_epoch"] == 40


def test_frozen_bn_keeps_its_statistics_while_training_mode_bn_moves_them(trained):
    model, ds = trained
    out = pitfalls.fine_tune(model, ds, steps=20, batch=2)
    assert out["frozen_bn_running_mean_change"] == 0.0
    assert out["bn_in_training_mode_running_mean_change"] > 0.0


def test_the_diagnostics_net_saturates_without_bn_and_not_with_it():
    ds = data.load("mnist1d")
    x, y = ds.x_train[:500], ds.y_train[:500]
    none = diagnostics.measure(diagnostics.build("none"), x, y)
    bn = diagnostics.measure(diagnostics.build(diagnostics.NORM), x, y)
    assert min(none["saturation"]) > 0.3 and max(bn["saturation"]) < 0.1  # what the caption says
    assert len(none["grad_to_data"]) == diagnostics.HIDDEN + 1 and all(r > 0 for r in bn["grad_to_data"])
    for hist in none["hist"]:
        assert sum(hist) == pytest.approx(1.0, abs=1e-6)
