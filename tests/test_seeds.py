"""Seeds trained together (bnlab.train.seeds): each seed as train() trains it alone, within a stated
float tolerance; a group bit-reproducible and a seed's result independent of its group; a diverged
member leaves the others as they were; bnlab's layers on the fast kernels inside the group."""

from __future__ import annotations

import logging
import math

import pytest
import torch

import bnlab.data as bdata
import bnlab.experiments.probes  # noqa: F401 -- registers the experiments' probes
import one_model_probe  # noqa: F401 -- registers one_model, a probe that runs on one model only
from bnlab.core import dispatch
from bnlab.train import RunConfig, train
from bnlab.train import seeds as seeds_module
from bnlab.train.grouped import group, ungroup
from bnlab.train.seeds import train_group, train_seeds, why_not_grouped

# Grouped and single runs compute the same sums in another order (grouped convolutions, batched
# products, a per-member loss reduction). Over these 20-step runs (seeds 0, 5, 7, 11, 12) the
# measured gaps are at most 2.2e-6 in the parameters and buffers and 5e-7 in the losses; the
# tolerance is 1e-5. Accuracy may flip an example whose logits tie within that gap: at most 2 of
# the 500 evaluated (none flipped). Longer runs and some settings amplify last-bit differences,
# as they amplify a change of train()'s thread count: Adam on a bias before BN (its exact
# gradient is zero, so its update follows the sign of rounding noise), ReLU before BN (a channel
# almost dead after the ReLU has a variance near 0, by whose root BN divides), SGD near its
# largest stable learning rate; the tests of groups below are therefore bit for bit, not tolerant.
PARAM_TOL = {"rtol": 1e-5, "atol": 1e-5}
LOSS_TOL = 1e-5
ACC_TOL = 2 / 500

SETTINGS = {
    "cnn_bn": {"model": "cnn", "norm": "bn", "lr": 0.05},
    "mlp_bn_sigmoid": {"model": "mlp", "norm": "bn", "act": "sigmoid", "lr": 0.5},
    "cnn_torch_bn_wd": {"model": "cnn", "norm": "torch_bn", "lr": 0.05, "weight_decay": 1e-4},
    "mlp_none_adam": {"model": "mlp", "norm": "none", "optimizer": "adam", "lr": 1e-3},
    "cnn_bn_only_gamma_beta": {"model": "cnn", "norm": "bn", "lr": 0.05, "trainable": "norm"},
}


@pytest.fixture(scope="module")
def ds():
    return bdata.load("mnist1d")


def _configs(setting: str, seeds, **kw) -> list[RunConfig]:
    base = dict(steps=40, eval_every=20, eval_samples=500, **SETTINGS[setting])
    base.update(kw)
    return [RunConfig(seed=s, **base) for s in seeds]


def _same_run(a, b) -> None:
    """Bit-identical results (times aside)."""
    assert (a.status, a.steps_done, a.diverged_step, a.trainable_params) == (
        b.status,
        b.steps_done,
        b.diverged_step,
        b.trainable_params,
    )
    assert {k: v for k, v in a.series.items() if k != "time_s"} == {
        k: v for k, v in b.series.items() if k != "time_s"
    } or _nan_equal(a.series, b.series)
    if a.model is not None:
        for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert torch.equal(p, q), name


def _nan_equal(x: dict, y: dict) -> bool:
    keys = [k for k in x if k != "time_s"]
    if sorted(keys) != sorted(k for k in y if k != "time_s"):
        return False
    return all(
        len(x[k]) == len(y[k]) and all(u == v or (math.isnan(u) and math.isnan(v)) for u, v in zip(x[k], y[k]))
        for k in keys
    )


def test_grouping_keeps_each_members_initialization():
    members = []
    for s in (0, 1, 2):
        torch.manual_seed(s)
        members.append(seeds_module._build(RunConfig(model="cnn", norm="bn", seed=s), ((40,), 10)))
    grouped = group(members)
    for i, m in enumerate(members):
        torch.manual_seed(100 + i)
        fresh = seeds_module._build(RunConfig(model="cnn", norm="bn"), ((40,), 10))
        ungroup(grouped, i, fresh)
        for (name, p), q in zip(m.state_dict().items(), fresh.state_dict().values()):
            assert torch.equal(p, q), name


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_seed_in_group_matches_seed_alone(ds, setting):
    configs = _configs(setting, (0, 5, 7), steps=20, eval_every=10)
    _matches_alone(configs, ds)


def _gap(got, alone) -> str | None:
    """The first of the tolerances above that ``got`` exceeds against ``alone``, or None."""
    for name in ("train_loss", "train_eval_loss", "test_loss"):
        worst = max(abs(u - v) for u, v in zip(got.series[name], alone.series[name]))
        if worst > LOSS_TOL:
            return f"{name} differs by {worst:.1e} (tolerance {LOSS_TOL:g})"
    for name in ("train_acc", "test_acc"):
        worst = max(abs(u - v) for u, v in zip(got.series[name], alone.series[name]))
        if worst > ACC_TOL:
            return f"{name} differs by {worst:.3f} (tolerance {ACC_TOL:g})"
    for (name, p), q in zip(alone.model.state_dict().items(), got.model.state_dict().values()):
        if p.is_floating_point() and not torch.allclose(q, p, **PARAM_TOL):
            return f"{name} differs by {float((q - p).abs().max()):.1e}"
    return None


def _matches_alone(configs, ds) -> None:
    """Each config trained in one group equals it trained alone by train(), within the tolerances above.

    A seed whose run turns last-bit differences into larger ones on this machine cannot meet any float
    tolerance: the same train() at 2 threads (its sums in another order) parts from its 1-thread run as far
    (a ReLU input within 1e-7 of the kink, which side it falls on decided by the last bit; which seeds do this
    depends on the CPU's kernels). Such a seed is measured, not assumed: it is let off only when train()
    itself, 1 against 2 threads, exceeds the tolerances, and at most one seed of a call may be let off."""
    together = train_seeds(configs, ds, threads=1, keep_model=True)
    let_off = []
    for c, got in zip(configs, together):
        alone = train(c, ds, threads=1, keep_model=True)
        assert (got.status, got.steps_done, got.trainable_params) == (
            alone.status,
            alone.steps_done,
            alone.trainable_params,
        )
        assert got.series["step"] == alone.series["step"] and got.series["lr"] == alone.series["lr"]
        gap = _gap(got, alone)
        if gap is None:
            continue
        itself = _gap(train(c, ds, threads=2, keep_model=True), alone)
        assert itself is not None, f"seed {c.seed} in a group: {gap}, where train() at 2 threads stays within"
        let_off.append(c.seed)
    assert len(let_off) <= 1 and len(let_off) < len(configs), f"seeds {let_off} amplify last bits here: choose others"


def test_group_is_bit_reproducible(ds):
    configs = _configs("cnn_bn", (1, 2, 3))
    first = train_seeds(configs, ds, threads=1, keep_model=True)
    again = train_seeds(configs, ds, threads=1, keep_model=True)
    for a, b in zip(first, again):
        _same_run(a, b)


@pytest.mark.parametrize("setting", ["cnn_bn", "mlp_bn_sigmoid"])
def test_seed_result_is_the_same_in_any_group(ds, setting):
    """The store keys a seed's result by its config alone: any group gives the same bits."""
    groups = [(3,), (1, 3), (0, 2, 4, 3), (9, 0, 2, 4, 5, 6, 7, 3)]  # seed 3 in slots 0, 1, 3 and 7
    results = []
    for seeds in groups:
        out = train_seeds(_configs(setting, seeds), ds, threads=1, keep_model=True)
        results.append(out[seeds.index(3)])
    for r in results[1:]:
        _same_run(results[0], r)


@pytest.mark.parametrize(
    "layer",
    ["first_conv", "conv", "head", "linear"],
)
def test_each_grouped_layer_computes_a_member_the_same_in_every_slot(layer):
    """One member's output and parameter gradients, bit for bit, in slots 0, 3, 5 and 7 of a group of 8
    whose other members hold other weights, inputs and output gradients. The first convolution (one
    input channel per member), when it was unfold and a batched product, once summed its bias gradient
    across the k*C columns in vectors, and the columns of the last, partial vector in another order: a
    member in slot 7 of C's 25 channels got other bits (seen in training at lr 0.1 after 18 steps; the
    training tests above, at lr 0.05, happened not to show it). It now runs on bnlab's own loops
    (bnlab.kernels.numba_conv), which run along all k*C columns too."""
    from torch import nn

    from bnlab.train.grouped import GroupedConv1d, GroupedLinear

    k, n = 8, 100
    make, x_shape, y_shape = {
        "first_conv": (lambda: nn.Conv1d(1, 25, 5, 2, 1), (n, 1, 40), (n, 25, 1, 19)),
        "conv": (lambda: nn.Conv1d(25, 25, 3, 2, 1), (n, 25, 19), (n, 25, 1, 10)),
        "head": (lambda: nn.Linear(125, 10), (125, n), (n, 10)),
        "linear": (lambda: nn.Linear(100, 100), (100, n), (100, n)),
    }[layer]
    torch.manual_seed(0)
    mine, x_mine, dy_mine = make(), torch.randn(x_shape), torch.randn(y_shape)
    seen = []
    for slot in (0, 3, 5, 7):
        torch.manual_seed(10 + slot)
        layers, xs, dys = (
            [make() for _ in range(k)],
            [torch.randn(x_shape) for _ in range(k)],
            [torch.randn(y_shape) for _ in range(k)],
        )
        layers[slot], xs[slot], dys[slot] = mine, x_mine, dy_mine
        if layer in ("head", "linear"):
            grouped = GroupedLinear(layers)
            y = grouped(torch.stack(xs))  # (k, out, N)
            out = y.transpose(1, 2) if layer == "head" else y  # the CNN's head is read as (k, N, classes)
            out.backward(torch.stack(dys))
            got = (out[slot], grouped.weight.grad[slot], grouped.bias.grad[slot])
        else:
            grouped = GroupedConv1d(layers)
            x = torch.cat(xs, 1)  # (N, k*Cin, L)
            x = x if layer == "first_conv" else x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
            y = grouped(x)  # (N, k*Cout, 1, L') channels_last
            y.backward(torch.cat(dys, 1).contiguous(memory_format=torch.channels_last))
            part = slice(slot * 25, (slot + 1) * 25)
            got = (y[:, part], grouped.weight.grad[part], grouped.bias.grad[part])
        seen.append([t.detach() for t in got])
    for other in seen[1:]:
        for a, b in zip(seen[0], other):
            assert torch.equal(a, b)


def test_forced_divergence_of_one_member_leaves_the_others_unchanged(ds, monkeypatch):
    configs = _configs("cnn_bn", (0, 1, 2), steps=60)
    clean = train_seeds(configs, ds, threads=1, keep_model=True)
    real_group = seeds_module.group

    def poisoned(members):
        grouped = real_group(members)
        with torch.no_grad():
            grouped.head.weight[1].fill_(float("inf"))  # member 1's head: its loss is not finite
        return grouped

    monkeypatch.setattr(seeds_module, "group", poisoned)
    hurt = train_seeds(configs, ds, threads=1, keep_model=True)
    assert hurt[1].status == "diverged" and hurt[1].diverged_step == 1 and hurt[1].steps_done == 1
    assert len(hurt[1].series["step"]) == 1 and "test_acc" not in hurt[1].series  # as train() records it
    for j in (0, 2):
        assert hurt[j].status == "finished"
        _same_run(clean[j], hurt[j])


def test_divergence_by_loss_factor_is_per_member(ds):
    """A member that diverges by the loss rule stops at the step train() stops it at."""
    configs = _configs("mlp_bn_sigmoid", (0, 1), lr=2000.0, steps=60, diverge_factor=3.0)
    together = train_seeds(configs, ds, threads=1)
    for c, got in zip(configs, together):
        alone = train(c, ds, threads=1)
        assert (got.status, got.diverged_step) == (alone.status, alone.diverged_step)
        assert got.series["step"] == alone.series["step"]


def test_bnlab_layers_run_on_the_fast_path_in_a_group(ds, monkeypatch):
    chosen = []
    real_select, real_backward = dispatch.select, dispatch.select_backward

    def select(*args, **kw):
        chosen.append(real_select(*args, **kw))
        return chosen[-1]

    def select_backward(*args, **kw):
        chosen.append(real_backward(*args, **kw))
        return chosen[-1]

    monkeypatch.setattr(dispatch, "select", select)
    monkeypatch.setattr(dispatch, "select_backward", select_backward)
    for setting in ("cnn_bn", "mlp_bn_sigmoid"):
        chosen.clear()
        train_seeds(_configs(setting, (0, 1), steps=3, eval_every=3), ds, threads=1)
        assert chosen and all(b is dispatch.FAST_BACKENDS["cpu"] for b in chosen), chosen


def test_what_cannot_be_grouped_trains_alone_and_says_so(ds, caplog):
    probed = _configs("cnn_bn", (0, 1), steps=20, probes=("one_model",))  # a probe that runs on one model
    assert "probes" in why_not_grouped(probed, ds)
    with pytest.raises(ValueError, match="expected configs that can be trained together"):
        train_seeds(probed, ds)
    assert "more than the seed" in why_not_grouped(_configs("cnn_bn", (0,)) + _configs("mlp_bn_sigmoid", (1,)), ds)
    assert "norm" in why_not_grouped(_configs("cnn_bn", (0, 1), norm="frozen_bn"), ds)
    assert "batches of 1024" in why_not_grouped(_configs("cnn_bn", (0, 1), batch_size=1024), ds)
    assert why_not_grouped(_configs("cnn_bn", (0, 1), batch_size=512), ds) is None
    with caplog.at_level(logging.INFO, logger="bnlab"):
        out = train_group(probed, ds, threads=1)
    assert "one at a time" in caplog.text
    for c, got in zip(probed, out):
        _same_run(train(c, ds, threads=1), got)
