"""Leave a model exactly as it was: :func:`preserved` saves and restores everything a probe's extra
forward/backward passes or trial steps could change.

Saved and restored: every parameter's value and ``.grad``, every buffer (BN running mean/var and
``num_batches_tracked``), each module's train/eval flag, torch's CPU RNG state (and the CUDA one of
the model's device, for norms that draw noise), and -- if given -- the optimizer's state and
hyper-parameters (so a trial ``optimizer.step()`` leaves no trace in momentum buffers or Adam moments).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def preserved(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> Iterator[None]:
    params = [(p, p.detach().clone(), None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    opt_state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    devices = sorted({p.device.index or 0 for p, _, _ in params if p.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for p, value, grad in params:
                p.copy_(value)
                p.grad = grad
            for b, value in buffers:
                b.copy_(value)
        for m, training in modes:
            m.training = training
        if optimizer is not None and opt_state is not None:
            optimizer.load_state_dict(opt_state)
