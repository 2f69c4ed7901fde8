"""The trainer: reproducibility, divergence, metrics, probes, schedules, batching, freezing."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from bnlab import data
from bnlab.train import Probe, RunConfig, train
from bnlab.train.batches import batch_indices
from bnlab.train.schedule import lr_factor

QUICK = RunConfig(data="mnist1d", model="cnn", norm="bn", lr=0.1, steps=60, eval_every=20, batch_size=50)


def _no_time(series):
    return {k: v for k, v in series.items() if k != "time_s"}


def test_same_config_and_seed_give_identical_metrics():
    a = train(QUICK, threads=1)
    b = train(QUICK, threads=1)
    assert _no_time(a.series) == _no_time(b.series)
    c = train(dataclasses.replace(QUICK, seed=1), threads=1)
    assert c.series["train_loss"] != a.series["train_loss"]


def test_noisy_bn_runs_are_reproducible_too():
    cfg = dataclasses.replace(QUICK, norm="noisy_bn", steps=20, eval_every=10)
    assert _no_time(train(cfg, threads=1).series) == _no_time(train(cfg, threads=1).series)


def test_training_leaves_the_callers_rng_and_threads_alone():
    torch.manual_seed(7)
    want = torch.rand(3)
    threads = torch.get_num_threads()
    torch.manual_seed(7)
    train(dataclasses.replace(QUICK, steps=5, eval_every=5), threads=1)
    assert torch.equal(torch.rand(3), want)
    assert torch.get_num_threads() == threads


def test_metric_rows_come_every_k_steps_and_after_the_last():
    r = train(dataclasses.replace(QUICK, steps=50, eval_every=20), threads=1)
    assert r.series["step"] == [20.0, 40.0, 50.0]
    assert r.status == "finished" and r.steps_done == 50
    lengths = {len(v) for v in r.series.values()}
    assert lengths == {3}
    for name in ("train_acc", "test_acc"):
        assert all(0.0 <= v <= 1.0 for v in r.series[name])


def test_metrics_match_an_independent_evaluation():
    cfg = dataclasses.replace(QUICK, steps=20, eval_every=20, eval_samples=300)
    r = train(cfg, threads=1, keep_model=True)  # the last metric row is taken after the last step
    model = r.model.eval()
    ds = data.load("mnist1d")
    with torch.no_grad():
        logits = model(ds.x_test[:300])
    acc = float((logits.argmax(1) == ds.y_test[:300]).double().mean())
    loss = float(torch.nn.functional.cross_entropy(logits, ds.y_test[:300]))
    assert r.final("test_acc") == pytest.approx(acc, abs=1e-12)
    assert r.final("test_loss") == pytest.approx(loss, rel=1e-5)


def test_learns_mnist1d_with_bn():
    r = train(dataclasses.replace(QUICK, steps=300, eval_every=300, batch_size=100), threads=1)
    assert r.final("test_acc") > 0.75  # chance is 0.1; BN at lr 0.1 is near 0.85 after 300 steps


@pytest.mark.parametrize("lr", [30.0, 1e6])
def test_divergence_is_a_result_not_a_crash(lr):
    r = train(dataclasses.replace(QUICK, norm="none", lr=lr, steps=200, eval_every=100), threads=1)
    assert r.status == "diverged" and r.diverged
    assert 1 <= r.diverged_step < 200 and r.steps_done == r.diverged_step
    last = r.series["train_loss"][-1]
    assert not math.isfinite(last) or last > 2.0
    assert r.series["step"][-1] == r.diverged_step


def test_act_percentile_probe_matches_numpy_on_the_same_batch():
    raw = {}

    class Raw(Probe):  # an independent record of the same input on the same step
        def attach(self, model):
            self._handles.append(model.blocks[2].act.register_forward_pre_hook(self.hook))

        def hook(self, module, args):
            if self.armed:
                raw.setdefault("x", args[0].detach().clone())

    cfg = dataclasses.replace(
        QUICK,
        model="mlp",
        steps=10,
        eval_every=10,
        probes=("act_pct:blocks.2.act:3", "act_pct:blocks.2.act", "grad_norm"),
    )
    r = train(cfg, threads=1, probes=[Raw()])
    x = raw["x"].numpy()
    for q in (15, 50, 85):
        assert r.final(f"act_pct/blocks.2.act:3/p{q}") == pytest.approx(np.percentile(x[:, 3], q), abs=1e-6)
        assert r.final(f"act_pct/blocks.2.act/p{q}") == pytest.approx(np.percentile(x, q), abs=1e-6)
    norms = [r.final(k) for k in r.series if k.startswith("grad_norm/") and k != "grad_norm/total"]
    assert len(norms) == 2 * 3 + 2 + 2 * 3  # 3 linear + head (weight, bias) and 3 BN (gamma, beta)
    assert r.final("grad_norm/total") == pytest.approx(math.sqrt(sum(n * n for n in norms)), rel=1e-9)


def test_fixed_sample_probe_reads_its_own_forward_of_the_sample_and_leaves_no_trace():
    import copy

    import torch.nn.functional as F

    from bnlab import models
    from bnlab.train.probes import StepContext, make_probe

    torch.manual_seed(0)
    model = models.build("mlp", norm="bn", act="sigmoid", placement="before")
    batch, sample = torch.randn(60, 40), torch.randn(500, 40) * 2 + 1
    twin = copy.deepcopy(model)  # an independent path: the sample through a copy, in train mode
    h = sample
    for block in twin.blocks[:2]:
        h = torch.sigmoid(block.norm(block.op(h)))
    want = torch.quantile(twin.blocks[2].norm(twin.blocks[2].op(h))[:, 3].detach(), torch.tensor([0.15, 0.5, 0.85]))

    probe = make_probe("act_pct_fixed:blocks.2.act:3")
    probe.attach(model)
    probe.arm()
    loss = F.cross_entropy(model(batch), torch.zeros(60, dtype=torch.long))  # the training forward: not read
    loss.backward()
    buffers = [b.clone() for b in model.buffers()]
    rng = torch.get_rng_state()
    probe.after_backward(StepContext(10, model, None, batch, None, loss.detach(), None, sample))
    got = probe.collect()
    probe.detach()
    assert list(got) == [f"act_pct_fixed/blocks.2.act:3/p{q}" for q in (15, 50, 85)]
    assert list(got.values()) == pytest.approx(want.tolist(), abs=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))  # running statistics restored
    assert torch.equal(rng, torch.get_rng_state()) and model.training
    probe.arm()
    with pytest.raises(ValueError, match=r"expected the run's fixed sample .* \(got none\)"):
        probe.after_backward(StepContext(10, model, None, batch, None, loss.detach(), None))


def test_fixed_sample_probe_in_a_run_reads_the_training_accuracy_sample():
    cfg = dataclasses.replace(
        QUICK, model="mlp", steps=20, eval_every=10, eval_samples=300, probes=("act_pct_fixed:blocks.1.norm",)
    )
    r = train(cfg, threads=1)
    names = [k for k in r.series if k.startswith("act_pct_fixed/")]
    assert names == [f"act_pct_fixed/blocks.1.norm/p{q}" for q in (15, 50, 85)]
    assert all(len(r.series[n]) == 2 and all(math.isfinite(v) for v in r.series[n]) for n in names)
    plain = train(dataclasses.replace(cfg, probes=()), threads=1)  # the probe changes nothing of the run
    assert r.series["test_acc"] == plain.series["test_acc"] and r.series["train_loss"] == plain.series["train_loss"]


def test_bad_probe_specs_are_refused():
    with pytest.raises(ValueError, match=r"expected a probe in .* \(got 'act_pcts:x'\)"):
        train(dataclasses.replace(QUICK, probes=("act_pcts:x",)))
    with pytest.raises(ValueError, match=r"expected a module path of the model such as"):
        train(dataclasses.replace(QUICK, probes=("act_pct:blocks.9.act",)))


def test_trainable_norm_trains_only_gamma_and_beta():
    captured = {}

    class Capture(Probe):
        def attach(self, model):
            captured["init"] = {n: p.detach().clone() for n, p in model.named_parameters()}
            captured["model"] = model

    r = train(dataclasses.replace(QUICK, trainable="norm", steps=10, eval_every=10), threads=1, probes=[Capture()])
    assert r.trainable_params == 150
    changed = {n for n, p in captured["model"].named_parameters() if not torch.equal(p, captured["init"][n])}
    assert changed and all(".norm." in n for n in changed)


def test_config_rejects_bad_values_with_what_was_expected():
    with pytest.raises(ValueError, match=r"expected optimizer in \('sgd', 'adam'\) \(got 'adamw'\)"):
        RunConfig(optimizer="adamw")
    with pytest.raises(ValueError, match=r"expected weight_decay 0 with trainable='random'"):
        RunConfig(trainable="random", trainable_k=10, weight_decay=1e-4)
    with pytest.raises(ValueError, match=r"expected batch_size <= the 4000 training examples \(got 5000\)"):
        train(dataclasses.replace(QUICK, batch_size=5000))


def test_lr_schedules():
    cos = lr_factor("cosine", 100, warmup=10)
    assert [cos(t) for t in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert cos(10) == pytest.approx(1.0) and cos(55) == pytest.approx(0.5) and cos(100) == pytest.approx(0.0)
    lin = lr_factor("linear", 100)
    assert lin(0) == 1.0 and lin(50) == pytest.approx(0.5)
    step = lr_factor("step", 100)
    assert (step(49), step(50), step(75)) == (1.0, pytest.approx(0.1), pytest.approx(0.01))
    r = train(
        dataclasses.replace(QUICK, schedule="linear", steps=40, eval_every=20, optimizer="adam", lr=1e-2), threads=1
    )
    assert r.series["lr"] == pytest.approx([1e-2 * 0.5, 0.0])  # the lr of the next step


def test_batches_are_seeded_epoch_permutations_without_a_short_last_batch():
    gen = torch.Generator().manual_seed(3)
    batches = list(batch_indices(10, 3, 7, gen))
    assert len(batches) == 7 and all(len(b) == 3 for b in batches)
    ref = torch.Generator().manual_seed(3)
    perms = [torch.randperm(10, generator=ref) for _ in range(3)]  # 3 batches per epoch, 10th dropped
    want = [p[i * 3 : (i + 1) * 3] for p in perms for i in range(3)][:7]
    assert all(torch.equal(a, b) for a, b in zip(batches, want))
    assert len(set(torch.cat(batches[:3]).tolist())) == 9  # no repeats within an epoch


def test_progress_bar_only_when_asked_or_on_a_terminal(capsys):
    cfg = dataclasses.replace(QUICK, steps=10, eval_every=10)
    train(cfg, threads=1)  # stderr is captured here, not a terminal: quiet
    assert capsys.readouterr().err == ""
    train(cfg, threads=1, progress=True)
    assert "10/10" in capsys.readouterr().err


class _WeightNorm(Probe):
    """A finish-time metric: the norm of the head's weight and the test accuracy, of the trained model."""

    def finish(self, model, dataset):
        with torch.no_grad():
            acc = (model.eval()(dataset.x_test).argmax(1) == dataset.y_test).double().mean()
        model.train()
        return {"head_norm": float(model.head.weight.detach().norm()), "acc_again": float(acc)}


def test_probe_finish_metrics_are_kept_and_the_model_can_be_returned():
    r = train(dataclasses.replace(QUICK, steps=20, eval_every=20), threads=1, probes=[_WeightNorm()], keep_model=True)
    assert r.final_metrics["head_norm"] == pytest.approx(float(r.model.head.weight.detach().norm()), rel=1e-12)
    assert r.final_metrics["acc_again"] == pytest.approx(r.final("test_acc"), abs=1e-12)
    assert "model" not in r.to_dict() and r.to_dict()["final_metrics"] == r.final_metrics
