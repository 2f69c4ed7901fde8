"""SyncBatchNormDropAct2d: bnlab's sync conversion keeps the drop and act modules of a BN + drop/act
layer (timm's BatchNormAct2d, bnlab's BatchNormDropAct2d).

Two real gloo processes (127.0.0.1) against torch's BatchNorm2d on the concatenated batch followed
by the same drop and act modules -- what torch's SyncBatchNorm computes, which itself refuses CPU
tensors under a process group -- and, in one process, against timm's layer.
"""

from __future__ import annotations

import functools
import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import bnlab
from bnlab.nn import BatchNormDropAct2d, SyncBatchNormDropAct2d, revert_sync_batchnorm
from zoo import import_timm

TOL = 1e-10  # float64: the only differences are summation order
SIZES = (5, 3)  # the ranks' batch sizes (uneven)
STEPS = 2


class _Mask(nn.Module):
    """A deterministic "drop": multiplies sample i by mask[i] (the slice of the process that runs it)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.mask = mask  # a plain attribute: no state_dict entry

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.mask


def _masks(step: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(100 + step)
    return (torch.rand(sum(SIZES), 4, 1, 1, generator=gen, dtype=torch.float64) > 0.3).double() / 0.7


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The full batch (concatenation of the ranks' slices) and the upstream gradient."""
    gen = torch.Generator().manual_seed(step)
    x = torch.randn(sum(SIZES), 3, 6, 6, generator=gen, dtype=torch.float64) * 2 + 1
    return x, torch.randn(sum(SIZES), 4, 4, 4, generator=gen, dtype=torch.float64)


def _model(norm: type[nn.Module]) -> nn.Sequential:
    """conv -> ``norm`` (BatchNorm2d or bnlab's BatchNormDropAct2d) with SiLU; the same weights for both."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, bias=False, dtype=torch.float64)
    bn = norm(4, momentum=0.3, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    if isinstance(bn, BatchNormDropAct2d):
        bn.act = nn.SiLU()
    return nn.Sequential(conv, bn)


def _step(model: nn.Sequential, x, g, apply_drop_act) -> dict:
    x = x.clone().requires_grad_()
    y = apply_drop_act(model(x))
    y.backward(g)
    conv, bn = model
    out = {"y": y.detach(), "dx": x.grad, "dconv": conv.weight.grad.clone()}
    out |= {"dw": bn.weight.grad.clone(), "db": bn.bias.grad.clone()}
    out |= {"rm": bn.running_mean.clone(), "rv": bn.running_var.clone(), "nbt": int(bn.num_batches_tracked)}
    model.zero_grad()
    return out


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=timedelta(seconds=60)
    )
    try:
        model = bnlab.convert(_model(BatchNormDropAct2d), "sync")
        assert type(model[1]) is SyncBatchNormDropAct2d and isinstance(model[1].act, nn.SiLU)
        lo, hi = sum(SIZES[:rank]), sum(SIZES[: rank + 1])
        results = []
        for step in range(STEPS):
            model[1].drop = _Mask(_masks(step)[lo:hi])
            x, g = _batch(step)
            results.append(_step(model, x[lo:hi], g[lo:hi], lambda y: y))
        model.eval()
        model[1].drop = nn.Identity()
        results.append({"y": model(_batch(STEPS)[0][lo:hi]).detach()})
        torch.save(results, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_two_gloo_processes_equal_torchs_bn_on_the_whole_batch_then_the_same_drop_and_act(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    reference = _model(nn.BatchNorm2d)  # torch's BN on the concatenated batch, then the same drop and act
    act = nn.SiLU()
    for step in range(STEPS):
        mask = _Mask(_masks(step))
        expected = _step(reference, *_batch(step), lambda y, mask=mask: act(mask(y)))
        got = [r[step] for r in ranks]
        for key in ("y", "dx"):  # each rank holds its slice
            torch.testing.assert_close(torch.cat([g[key] for g in got]), expected[key], rtol=TOL, atol=TOL)
        for key in ("dconv", "dw", "db"):  # local gradients: DDP sums them over the ranks
            torch.testing.assert_close(got[0][key] + got[1][key], expected[key], rtol=TOL, atol=TOL)
        for g in got:
            for key in ("rm", "rv"):
                torch.testing.assert_close(g[key], expected[key], rtol=TOL, atol=TOL)
            assert g["nbt"] == expected["nbt"] == step + 1
    reference.eval()
    with torch.no_grad():
        expected_eval = act(reference(_batch(STEPS)[0]))
    torch.testing.assert_close(torch.cat([r[STEPS]["y"] for r in ranks]), expected_eval, rtol=TOL, atol=TOL)


def _timm_layer(timm) -> nn.Module:
    torch.manual_seed(0)
    layer = timm.layers.BatchNormAct2d(
        6, momentum=0.2, act_layer=nn.SiLU, drop_layer=functools.partial(nn.Dropout, 0.25)
    ).double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-1, 1)
    return layer


def test_one_process_equals_timms_layer_and_converts_back_to_it():
    timm = import_timm()
    original = _timm_layer(timm)
    synced = bnlab.convert(original, "sync")
    assert type(synced) is SyncBatchNormDropAct2d
    assert isinstance(synced.act, nn.SiLU) and isinstance(synced.drop, nn.Dropout)
    assert synced.state_dict().keys() == original.state_dict().keys()
    for step in range(3):  # training (same dropout masks: same seed), then eval
        x = torch.randn(4, 6, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(step)) * 3 + 1
        outs = []
        for layer in (original, synced):
            layer.train(step < 2)
            xi = x.clone().requires_grad_()
            torch.manual_seed(7)
            y = layer(xi)
            y.backward(torch.cos(y.detach()))
            outs.append((y.detach(), xi.grad, layer.weight.grad.clone(), layer.bias.grad.clone()))
            layer.zero_grad()
        for a, b in zip(*outs):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        for a, b in zip(synced.state_dict().values(), original.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    back = bnlab.convert(synced, "torch", inplace=True)  # in place: the very modules move over
    assert type(back) is type(original)
    assert back.act is synced.act and back.drop is synced.drop
    for (k, a), (k0, b) in zip(back.state_dict().items(), synced.state_dict().items()):
        assert k == k0 and torch.equal(a, b)
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(back.eval()(x), synced.eval()(x), rtol=0, atol=0)


def test_bnlab_layer_round_trips_through_sync_and_revert():
    layer = BatchNormDropAct2d(4, act=nn.ReLU(), drop=nn.Dropout(0.1))
    for synced in (bnlab.convert(layer, "sync", inplace=True), bnlab.nn.SyncBatchNorm.convert_sync_batchnorm(layer)):
        assert type(synced) is SyncBatchNormDropAct2d and synced.act is layer.act and synced.drop is layer.drop
        assert synced.weight is layer.weight and synced.running_var is layer.running_var
        for back in (bnlab.convert(synced, "bnlab", inplace=True), revert_sync_batchnorm(synced)):
            assert type(back) is BatchNormDropAct2d and back.act is layer.act and back.drop is layer.drop
            assert back.state_dict().keys() == layer.state_dict().keys()
    with pytest.raises(TypeError, match="not converted from a torch-based class"):
        bnlab.convert(bnlab.convert(layer, "sync"), "torch")  # built by bnlab: no torch class to go back to


def test_sync_drop_act_rejects_non_4d_input():
    with pytest.raises(ValueError, match=r"expected 4D input \(got 3D input\)"):
        SyncBatchNormDropAct2d(4)(torch.randn(2, 4, 3))
