"""torch.vmap, stack_module_state ensembles and torch.func.grad over bnlab's batch norm, each against
torch's BN under the same transform (float64, tolerance 1e-10 relative + 1e-12 absolute)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

import bnlab

TOL = {"rtol": 1e-10, "atol": 1e-12}
MEMBERS = 3


def _close(a, b):
    torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
@pytest.mark.parametrize("training", [True, False])
def test_vmap_over_any_dim_equals_torch(dim, training):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, 3, 6, dtype=torch.float64, generator=g)  # vmapped dim removed: a 3D (N, C, L) input
    C = x.movedim(dim, 0).shape[2]
    w, b = torch.rand(C, dtype=torch.float64, generator=g) + 0.5, torch.randn(C, dtype=torch.float64, generator=g)
    rm, rv = torch.randn(C, dtype=torch.float64, generator=g), torch.rand(C, dtype=torch.float64, generator=g) + 0.5

    def ours(t):
        stats = (None, None) if training else (rm, rv)
        return bnlab.functional.batch_norm(t, *stats, w, b, training=training)

    def torchs(t):
        stats = (None, None) if training else (rm, rv)
        return F.batch_norm(t, *stats, w, b, training=training)

    _close(vmap(ours, in_dims=dim, out_dims=dim)(x), vmap(torchs, in_dims=dim, out_dims=dim)(x))


ENSEMBLES = {
    "bn1d_2d": (lambda cls: nn.Sequential(nn.Linear(4, 6), cls(6)), (8, 4)),
    "bn1d_3d": (lambda cls: nn.Sequential(nn.Conv1d(2, 6, 3), cls(6)), (8, 2, 10)),
    "bn2d": (lambda cls: nn.Sequential(nn.Conv2d(2, 6, 3), cls(6)), (8, 2, 6, 6)),
    "bn2d_channels_last": (lambda cls: nn.Sequential(nn.Conv2d(2, 6, 3), cls(6)), (8, 2, 6, 6)),
    "bn3d": (lambda cls: nn.Sequential(nn.Conv3d(2, 4, 2), cls(4)), (6, 2, 4, 4, 4)),
}
TORCH_CLASS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _ensembles(name: str, momentum):
    """The same members built with bnlab's BN and with torch's (identical weights)."""
    make, shape = ENSEMBLES[name]
    dims = {"bn1d_2d": 1, "bn1d_3d": 1, "bn2d": 2, "bn2d_channels_last": 2, "bn3d": 3}[name]
    ours_cls = {1: bnlab.nn.BatchNorm1d, 2: bnlab.nn.BatchNorm2d, 3: bnlab.nn.BatchNorm3d}[dims]
    torch.manual_seed(0)
    ours, theirs = [], []
    for _ in range(MEMBERS):
        m = make(lambda c: ours_cls(c, momentum=momentum)).double()
        t = make(lambda c: TORCH_CLASS[dims](c, momentum=momentum)).double()
        t.load_state_dict(m.state_dict())
        with torch.no_grad():  # distinct affine parameters per member
            m[1].weight.uniform_(0.5, 1.5), m[1].bias.normal_()
            t[1].weight.copy_(m[1].weight), t[1].bias.copy_(m[1].bias)
        ours.append(m)
        theirs.append(t)
    x = torch.randn(MEMBERS, *shape, dtype=torch.float64)
    if name == "bn2d_channels_last":
        x = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)  # each member's (N, C, H, W) channels_last
        assert x[0].is_contiguous(memory_format=torch.channels_last)
    return ours, theirs, x


def _run_ensemble(members, x, training: bool, steps: int = 3):
    """``steps`` vmapped forwards (buffers updated per member in training); per-member gradients of
    a loss through functional_call; returns (outputs, grads, buffers)."""
    for m in members:
        m.train(training)
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")

    def loss(p, b, xi):
        return functional_call(base, (p, b), (xi,)).sin().sum()  # nonlinear: dy differs across positions

    outs = []
    for _ in range(steps):
        outs.append(vmap(lambda p, b, xi: functional_call(base, (p, b), (xi,)))(params, buffers, x))
    grads = vmap(grad(loss))(params, buffers, x)
    return outs, grads, buffers


def _run_alone(members, x, training: bool, steps: int = 3):
    """What :func:`_run_ensemble` computes, member by member without vmap (torch's BN cannot run
    momentum=None under vmap: it calls ``.item()``)."""
    outs, grads, bufs = [[] for _ in range(steps)], {}, {}
    for i, m in enumerate(members):
        m.train(training)
        for s in range(steps):
            outs[s].append(m(x[i]))
        params = dict(m.named_parameters())
        g = torch.autograd.grad(m(x[i]).sin().sum(), list(params.values()))
        for k, v in zip(params, g):
            grads.setdefault(k, []).append(v)
        for k, v in m.named_buffers():
            bufs.setdefault(k, []).append(v)
    stack = lambda d: {k: torch.stack(v) for k, v in d.items()}
    return [torch.stack(o) for o in outs], stack(grads), stack(bufs)


@pytest.mark.parametrize("name", list(ENSEMBLES))
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_stacked_ensemble_equals_torch(name, training, momentum):
    ours, theirs, x = _ensembles(name, momentum)
    if not training:  # eval with distinct running statistics per member
        for m, t in zip(ours, theirs):
            m.train()(torch.randn(*x.shape[1:], dtype=torch.float64) + 1.0)
            t.load_state_dict(m.state_dict())
    out_a, grads_a, bufs_a = _run_ensemble(ours, x, training)
    out_b, grads_b, bufs_b = (_run_ensemble if momentum is not None else _run_alone)(theirs, x, training)
    for a, b in zip(out_a, out_b):
        _close(a, b)
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        _close(grads_a[k], grads_b[k])
    for k in bufs_b:  # running statistics and num_batches_tracked, per member
        _close(bufs_a[k], bufs_b[k])


def test_ensemble_members_keep_their_own_statistics():
    """Each member's running statistics are those of its own batches (member i alone, unvmapped)."""
    ours, _, x = _ensembles("bn1d_3d", 0.1)
    alone = [copy.deepcopy(m) for m in ours]
    _, _, bufs = _run_ensemble(ours, x, training=True, steps=1)
    for i, m in enumerate(alone):
        for _ in range(2):  # the vmapped forward and the one under grad
            m.train()(x[i])
        _close(bufs["1.running_mean"][i], m[1].running_mean)
        _close(bufs["1.running_var"][i], m[1].running_var)


@pytest.mark.parametrize("training", [True, False])
def test_func_grad_over_functional_batch_norm_equals_torch(training):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, 5, dtype=torch.float64, generator=g)
    w, b = torch.rand(4, dtype=torch.float64, generator=g) + 0.5, torch.randn(4, dtype=torch.float64, generator=g)
    rm, rv = torch.randn(4, dtype=torch.float64, generator=g), torch.rand(4, dtype=torch.float64, generator=g) + 0.5
    target = torch.randn(6, 4, 5, dtype=torch.float64, generator=g)

    def loss(fn):
        def f(x, w, b):
            stats = (None, None) if training else (rm, rv)
            return (fn(x, *stats, w, b, training=training) * target).sum()

        return f

    ours = grad(loss(bnlab.functional.batch_norm), argnums=(0, 1, 2))(x, w, b)
    theirs = grad(loss(F.batch_norm), argnums=(0, 1, 2))(x, w, b)
    for a, t in zip(ours, theirs):
        _close(a, t)
    # per-example gradients: vmap over grad, a batch of independent inputs
    xs = torch.randn(3, 6, 4, 5, dtype=torch.float64, generator=g)
    ours = vmap(grad(loss(bnlab.functional.batch_norm)), in_dims=(0, None, None))(xs, w, b)
    theirs = vmap(grad(loss(F.batch_norm)), in_dims=(0, None, None))(xs, w, b)
    _close(ours, theirs)


def test_vmap_alone_runs_the_fast_kernels_with_each_members_statistics(monkeypatch):
    """Under torch.vmap alone the vmapped dimension folds into the channels and the kernels run."""
    from bnlab.core import dispatch

    chosen = []
    real = dispatch.select

    def select(*args, **kw):
        chosen.append(real(*args, **kw))
        return chosen[-1]

    monkeypatch.setattr(dispatch, "select", select)
    x = torch.randn(4, 16, 6, 10, requires_grad=True)  # 4 members of (16, 6, 10), float32
    w = torch.rand(4, 6) + 0.5
    out = vmap(lambda xi, wi: bnlab.functional.batch_norm(xi, None, None, wi, None, training=True))(x, w)
    assert dispatch.FAST_BACKENDS["cpu"] in chosen
    ref = vmap(lambda xi, wi: F.batch_norm(xi, None, None, wi, None, training=True))(x, w)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)  # float32
    g = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, g)
    (gr,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(gx, gr, rtol=1e-4, atol=1e-5)
