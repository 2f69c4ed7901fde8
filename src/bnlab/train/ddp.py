"""The model's side of a data-parallel run, inside a process group: BN to SyncBN, and the DDP wrapper.

The trainer calls these; :mod:`bnlab.train.distributed` starts the processes and joins the group.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import nn as bnn


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """The model with its BN layers synchronised across the process group (see :mod:`bnlab.train.distributed`)."""
    return bnn.SyncBatchNorm.convert_sync_batchnorm(model)


def keep_per_process_bn(model: nn.Module) -> nn.Module:
    """The model unchanged: each process normalizes with its own slice of the batch."""
    return model


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
