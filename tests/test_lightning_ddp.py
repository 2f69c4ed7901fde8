"""Lightning DDP (``strategy="ddp"``, two CPU processes, gloo) on a model converted with
``bnlab.convert(model, "sync")`` trains as one process does on the whole batch with torch's BN.

The two processes are started as torchrun starts them (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR/PORT`` set, one ``Trainer.fit`` each), by ``torch.multiprocessing.spawn``: each worker
imports this module first, which makes torchvision importable with the CPU torch before Lightning
imports it (``ddp_spawn`` would unpickle Lightning in the worker before anything of ours).

torch's own SyncBatchNorm cannot be the reference here: it refuses CPU tensors under a process
group, and DDP refuses it in a CPU module. What it computes is BN over the global batch, so the
reference is Lightning in one process, torch's BatchNorm2d, each step's batch the union of the two
processes' batches (a DistributedSampler without shuffling deals samples 0, 2, 4, ... to rank 0
and 1, 3, 5, ... to rank 1; the loss is a mean over equal halves, and DDP averages the gradients).
float64, 4 SGD steps with momentum; parameters and buffers (running statistics, counts) equal.
Marked slow: two worker processes importing torch and Lightning take 20-35 s on a loaded 2-core machine.
"""

from __future__ import annotations

import importlib.util
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import bnlab
from zoo import import_torchvision

if importlib.util.find_spec("torchvision") is not None:
    import_torchvision()  # lightning imports torchvision, which needs the operator schemas with CPU torch
L = pytest.importorskip("lightning")

PER_RANK = 4  # samples per process per step; the single-process reference takes 2 x PER_RANK


class _Module(L.LightningModule):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3),
        nn.BatchNorm2d(8, momentum=None),  # cumulative average: num_batches_tracked matters
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).double()


def _fit(net: nn.Module, devices: int, strategy: str, root, rank: int = 0) -> None:
    torch.manual_seed(1)
    data = torch.utils.data.TensorDataset(
        torch.randn(16, 3, 8, 8, dtype=torch.float64) * 2 + 1, torch.randint(0, 4, (16,))
    )
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        use_distributed_sampler=False,  # Lightning's would shuffle
    )
    # rank r takes samples r, r + 2, r + 4, ...: each step's two batches are the reference's batch
    sampler = torch.utils.data.DistributedSampler(data, num_replicas=devices, rank=rank, shuffle=False)
    loader = torch.utils.data.DataLoader(data, batch_size=PER_RANK * 2 // devices, sampler=sampler)
    trainer.fit(_Module(net), loader)


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank)
    )
    net = bnlab.convert(_cnn(), "sync")
    _fit(net, 2, "ddp", out, rank)
    if rank == 0:
        torch.save(net.state_dict(), f"{out}/ddp.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_lightning_ddp_with_bnlab_sync_trains_as_torchs_bn_on_the_whole_batch(tmp_path):
    assert sum(isinstance(m, bnlab.nn.SyncBatchNorm) for m in bnlab.convert(_cnn(), "sync").modules()) == 2
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ours = torch.load(tmp_path / "ddp.pt")
    theirs = _cnn()
    _fit(theirs, 1, "auto", tmp_path)
    assert int(ours["1.num_batches_tracked"]) == int(theirs[1].num_batches_tracked) == 4
    for (name, a), b in zip(ours.items(), theirs.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
