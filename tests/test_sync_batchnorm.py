"""SyncBatchNorm: two real gloo processes against single-process BN on the concatenated batch.

One spawn runs every distributed check (each spawn costs seconds); the conversion and the
not-distributed behaviour are tested in-process.
"""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import bnlab
from bnlab.nn import SyncBatchNorm, revert_sync_batchnorm

TOL = 1e-10  # float64 throughout: the only differences are summation order

# name -> (input shape after N, rank batch sizes, layer kwargs, training steps)
CASES = {
    "uneven_2d": ((3, 4, 5), (5, 3), dict(momentum=0.1), 2),
    "empty_rank": ((3, 4, 5), (4, 0), dict(momentum=0.3), 2),
    "cumulative_no_affine_1d": ((3, 6), (2, 7), dict(momentum=None, affine=False), 3),
}


def _batch(case: str, step: int, sizes) -> tuple[torch.Tensor, torch.Tensor]:
    """The full batch (concatenation of the ranks' slices) and the upstream gradient."""
    shape, *_ = CASES[case]
    gen = torch.Generator().manual_seed(1000 * list(CASES).index(case) + step)
    n = sum(sizes)
    x = torch.randn((n, *shape), generator=gen, dtype=torch.float64) * 3 + 2
    g = torch.randn((n, *shape), generator=gen, dtype=torch.float64)
    return x, g


def _run_layer(layer, x, g):
    x = x.clone().requires_grad_()
    y = layer(x)
    y.backward(g)
    grads = [None if p is None else p.grad.clone() for p in (layer.weight, layer.bias)]
    for p in (layer.weight, layer.bias):
        if p is not None:
            p.grad = None
    return {
        "y": y.detach(),
        "dx": x.grad,
        "dw": grads[0],
        "db": grads[1],
        "rm": layer.running_mean.clone(),
        "rv": layer.running_var.clone(),
        "nbt": int(layer.num_batches_tracked),
    }


def _worker(rank: int, port: int, out: str) -> None:
    # A timeout turns a collective that one rank misses (a deadlock) into an error.
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=timedelta(seconds=60)
    )
    results = {}
    primitives = _record_primitives()
    try:
        for case, (shape, sizes, kwargs, steps) in CASES.items():
            primitives.clear()
            torch.manual_seed(0)  # the reference layer's initial parameters
            layer = SyncBatchNorm(shape[0], dtype=torch.float64, **kwargs)
            if layer.affine:
                with torch.no_grad():
                    layer.weight.uniform_(0.5, 1.5)
                    layer.bias.uniform_(-1, 1)
            lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
            steps_out = []
            for step in range(steps):
                x, g = _batch(case, step, sizes)
                steps_out.append(_run_layer(layer, x[lo:hi], g[lo:hi]))
            # Eval must not communicate: any collective now raises.
            layer.eval()
            real = dist.all_gather, dist.all_reduce
            dist.all_gather = dist.all_reduce = _no_collective
            try:
                x, _ = _batch(case, steps, sizes)
                steps_out.append({"y": layer(x[lo:hi]).detach()})
            finally:
                dist.all_gather, dist.all_reduce = real
            results[case] = steps_out
            results[case + "/primitives"] = list(primitives)
        torch.save(results, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _record_primitives() -> list[tuple[str, str]]:
    """(backend, primitive) of every primitive call from now on in this process."""
    from bnlab.core import dispatch

    log = []
    for name, backend in (("fast", dispatch.FAST_BACKENDS["cpu"]), ("reference", dispatch.REFERENCE)):
        for primitive in (
            "forward",
            "stats",
            "normalize",
            "backward",
            "backward_reduce",
            "backward_elemt",
            "eval",
            "update_running_stats",
        ):
            real = getattr(backend, primitive)

            def spy(*args, _real=real, _key=(name, primitive)):
                log.append(_key)
                return _real(*args)

            setattr(backend, primitive, spy)
    return log


def _no_collective(*args, **kwargs):
    raise AssertionError("SyncBatchNorm communicated in eval mode")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("sync")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def _reference(case: str):
    """torch.nn BN (not bnlab) on the concatenated batch, with the same initial parameters."""
    shape, sizes, kwargs, steps = CASES[case]
    torch.manual_seed(0)
    layer = {3: nn.BatchNorm2d, 2: nn.BatchNorm1d}[len(shape)](shape[0], dtype=torch.float64, **kwargs)
    if layer.affine:
        with torch.no_grad():
            layer.weight.uniform_(0.5, 1.5)
            layer.bias.uniform_(-1, 1)
    out = [_run_layer(layer, *_batch(case, step, sizes)) for step in range(steps)]
    layer.eval()
    out.append({"y": layer(_batch(case, steps, sizes)[0]).detach()})
    return out


def _close(a, b) -> None:
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=TOL, atol=TOL)


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
@pytest.mark.parametrize("case", list(CASES))
def test_two_gloo_processes_equal_bn_on_the_concatenated_batch(two_rank_results, case):
    ref = _reference(case)
    ranks = [r[case] for r in two_rank_results]
    for step, want in enumerate(ref):
        got = [r[step] for r in ranks]
        _close(torch.cat([g["y"] for g in got]), want["y"])
        if "dx" not in want:
            continue  # the eval step
        _close(torch.cat([g["dx"] for g in got]), want["dx"])
        for key in ("dw", "db"):
            if want[key] is None:
                assert all(g[key] is None for g in got)
            else:
                _close(got[0][key] + got[1][key], want[key])
        for g in got:
            _close(g["rm"], want["rm"])
            _close(g["rv"], want["rv"])
            assert g["nbt"] == want["nbt"]


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_local_statistics_and_backward_sums_run_on_the_fast_backend(two_rank_results):
    """Each rank's statistics, normalization and backward sums are the primitives plain BN runs fast;
    only a rank with an empty slice (nothing for a kernel to do) takes the reference."""
    step = [
        ("fast", "stats"),
        ("fast", "normalize"),
        ("fast", "update_running_stats"),
        ("fast", "backward_reduce"),
        ("fast", "backward_elemt"),
    ]
    for case, (_, sizes, kwargs, steps) in CASES.items():
        for rank, results in enumerate(two_rank_results):
            log = results[case + "/primitives"]
            if sizes[rank] == 0:
                assert {b for b, _ in log} == {"reference"}, log
                continue
            # the eval step runs with grad mode on: with parameters requiring grad autograd records a
            # graph, and the kernel still computes the output (BatchNormEval), as for plain BN
            assert log == step * steps + [("fast", "eval")], (case, rank, log)


def test_without_process_group_it_is_plain_batch_norm():
    assert not dist.is_initialized()
    torch.manual_seed(1)
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    sync, ref = SyncBatchNorm(3, dtype=torch.float64), nn.BatchNorm2d(3, dtype=torch.float64)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    _close(sync(a), ref(b))
    sync(a).sum().backward(), ref(b).sum().backward()
    _close(a.grad, b.grad)
    _close(sync.running_var, ref.running_var)


def test_convert_and_revert_keep_parameters_buffers_mode_and_outputs():
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Sequential(nn.Conv1d(4, 5, 1), bnlab.nn.BatchNorm1d(5))
    )
    model[1].running_mean.uniform_(-1, 1)
    model[3][1].num_batches_tracked.fill_(7)
    model.double().eval()
    model[3][1].train()
    weight = model[1].weight
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    conv_out = model[0](x)

    synced = SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(synced[1], SyncBatchNorm) and isinstance(synced[3][1], SyncBatchNorm)
    assert synced[1].weight is weight  # the optimizer's Parameter objects are kept
    assert not synced[1].training and synced[3][1].training
    assert synced[1].running_mean.dtype == torch.float64
    assert synced.state_dict().keys() == before.keys()
    for k, v in synced.state_dict().items():
        _close(v.double(), before[k].double())
    _close(
        synced[1](conv_out),
        nn.functional.batch_norm(
            conv_out, before["1.running_mean"], before["1.running_var"], before["1.weight"], before["1.bias"]
        ),
    )

    back = revert_sync_batchnorm(synced)
    assert type(back[1]) is bnlab.nn.BatchNorm2d and type(back[3][1]) is bnlab.nn.BatchNorm1d
    assert not back[1].training and back[3][1].training
    for k, v in back.state_dict().items():
        _close(v.double(), before[k].double())


def test_conversion_refuses_variants_and_revert_needs_a_class_for_bare_sync_layers():
    with pytest.raises(TypeError, match="GhostBatchNorm2d"):
        SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(bnlab.nn.GhostBatchNorm2d(4, 2)))
    with pytest.raises(ValueError, match="batchnorm_cls"):
        revert_sync_batchnorm(SyncBatchNorm(4))
    assert type(revert_sync_batchnorm(SyncBatchNorm(4), bnlab.nn.BatchNorm3d)) is bnlab.nn.BatchNorm3d


def test_sync_rejects_1d_input():
    with pytest.raises(ValueError, match=r"expected at least 2D input \(got 1D input\)"):
        SyncBatchNorm(3)(torch.randn(3))
