"""The ICS (C6) and landscape (C7) probes against the same quantities computed by hand on explicit
model copies, and the promise that a probe leaves the model and optimizer exactly as it found them.

Float64 models: the probe and the reference do the same arithmetic in a different order, so they
agree to ~1e-12; the tolerance 1e-9 (relative) leaves room for that and nothing else.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from bnlab import models
from bnlab.experiments.probes.ics import ICS, weight_layers
from bnlab.experiments.probes.landscape import ETAS, Landscape
from bnlab.train.probes import StepContext, make_probe

RTOL = 1e-9


def _setup(norm: str, optimizer: str = "sgd", warm_steps: int = 2):
    """A tiny float64 CNN after ``warm_steps`` real steps (so momentum / Adam state is non-trivial),
    with the gradient of the next batch computed, as the trainer leaves it before ``after_backward``."""
    torch.manual_seed(0)
    model = models.build("cnn", norm=norm, channels=4).double()
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        if optimizer == "sgd"
        else torch.optim.Adam(model.parameters(), lr=0.01)
    )
    x, y = torch.randn(16, 40, dtype=torch.float64), torch.randint(0, 10, (16,))
    for _ in range(warm_steps):
        opt.zero_grad()
        F.cross_entropy(model(x * 0.9), y).backward()
        opt.step()
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return model, opt, StepContext(3, model, opt, x, y, loss.detach(), F.cross_entropy)


def _snapshot(model, opt):
    return (
        copy.deepcopy(model.state_dict()),
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        copy.deepcopy(opt.state_dict()),
        [m.training for m in model.modules()],
        torch.get_rng_state(),
    )


def _assert_same(a, b):
    sd_a, grads_a, opt_a, modes_a, rng_a = a
    sd_b, grads_b, opt_b, modes_b, rng_b = b
    assert sd_a.keys() == sd_b.keys()
    for k in sd_a:
        assert torch.equal(sd_a[k], sd_b[k]), k
    assert all(torch.equal(g, h) for g, h in zip(grads_a, grads_b))
    assert modes_a == modes_b
    assert torch.equal(rng_a, rng_b)
    assert opt_a["param_groups"] == opt_b["param_groups"]
    for i in opt_a["state"]:
        for k, v in opt_a["state"][i].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(opt_b["state"][i][k])), (i, k)


def _reference_ics_sgd(model, opt, ctx, path):
    """G' by hand: SGD with momentum mu, dampening 0, weight decay wd (torch's convention):
    buf <- mu * buf + (g + wd * w);  w <- w - lr * buf -- applied to the parameters before ``path``."""
    group = opt.param_groups[0]
    lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
    moved = copy.deepcopy(model)
    names = [n for n, _ in model.named_parameters()]
    first = names.index(f"{path}.weight")
    with torch.no_grad():
        for i, (p, q) in enumerate(zip(model.parameters(), moved.parameters())):
            if i < first:
                buf = mu * opt.state[p]["momentum_buffer"] + (p.grad + wd * p)
                q.copy_(p - lr * buf)
    loss = F.cross_entropy(moved(ctx.x), ctx.y)
    g_new = torch.autograd.grad(loss, [moved.get_submodule(path).weight])[0]
    g = model.get_submodule(path).weight.grad
    l2 = float((g - g_new).norm())
    cos = float((g * g_new).sum() / (g.norm() * g_new.norm()))
    return l2, cos, l2 / float(g.norm())


@pytest.mark.parametrize("norm", ["bn", "none"])
def test_ics_matches_two_explicit_model_copies_with_sgd_momentum(norm):
    model, opt, ctx = _setup(norm)
    probe = ICS()
    probe.attach(model)
    probe.arm()
    probe.after_backward(ctx)
    values = probe.collect()
    assert probe.layers == weight_layers(model)[1:] == ["blocks.1.op", "blocks.2.op", "head"]
    for path in probe.layers:
        l2, cos, rel = _reference_ics_sgd(model, opt, ctx, path)
        assert l2 > 0
        assert values[f"ics/{path}/l2"] == pytest.approx(l2, rel=RTOL)
        assert values[f"ics/{path}/cos"] == pytest.approx(cos, rel=RTOL)
        assert values[f"ics/{path}/rel"] == pytest.approx(rel, rel=RTOL)


@pytest.mark.parametrize("norm,optimizer", [("bn", "sgd"), ("bn", "adam"), ("none", "sgd")])
@pytest.mark.parametrize("spec", ["ics", "ics:blocks.2.op", "landscape"])
def test_probes_leave_model_buffers_grads_optimizer_and_rng_unchanged(norm, optimizer, spec):
    model, opt, ctx = _setup(norm, optimizer)
    before = _snapshot(model, opt)
    probe = make_probe(spec)
    probe.attach(model)
    probe.arm()
    probe.after_backward(ctx)
    assert probe.collect()
    _assert_same(before, _snapshot(model, opt))


def test_ics_single_layer_spec_and_bad_path():
    model, _, ctx = _setup("bn")
    probe = make_probe("ics:head")
    probe.attach(model)
    probe.arm()
    probe.after_backward(ctx)
    assert sorted(probe.collect()) == ["ics/head/cos", "ics/head/l2", "ics/head/rel"]
    with pytest.raises(ValueError, match="expected ics:PATH"):
        make_probe("ics:blocks.0.op").attach(model)  # the first layer has no earlier layer


@pytest.mark.parametrize("norm", ["bn", "none"])
def test_landscape_matches_fresh_copies_moved_along_the_gradient(norm):
    model, opt, ctx = _setup(norm)
    lr = opt.param_groups[0]["lr"]
    g = [p.grad.clone() for p in model.parameters()]
    g_flat = torch.cat([t.flatten() for t in g])
    losses, diffs, betas = [float(ctx.loss)], [], []
    for eta in ETAS:
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for q, gq in zip(moved.parameters(), g):
                q -= eta * lr * gq
        loss = F.cross_entropy(moved(ctx.x), ctx.y)
        grad = torch.cat([t.flatten() for t in torch.autograd.grad(loss, list(moved.parameters()))])
        losses.append(float(loss.detach()))
        diffs.append(float((grad - g_flat).norm()))
        betas.append(diffs[-1] / (eta * lr * float(g_flat.norm())))
    probe = Landscape()
    probe.attach(model)
    probe.arm()
    probe.after_backward(ctx)
    v = probe.collect()
    assert v["landscape/loss_range"] == pytest.approx(max(losses) - min(losses), rel=RTOL)
    assert v["landscape/loss_min"] == pytest.approx(min(losses), rel=RTOL)
    assert v["landscape/grad_diff_max"] == pytest.approx(max(diffs), rel=RTOL)
    assert v["landscape/grad_diff_min"] == pytest.approx(min(diffs), rel=RTOL)
    assert v["landscape/beta"] == pytest.approx(max(betas), rel=RTOL)
    assert v["landscape/loss_range"] > 0
