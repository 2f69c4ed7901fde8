"""The non-finite guard: a batch with NaN/Inf must not poison a layer's running statistics.

One NaN in one training batch turns ``running_mean``/``running_var`` into NaN for good (the running
average never forgets it), and every later eval output with them. With the guard on, a layer checks
its running statistics after each training forward; if the update made any of them non-finite, the
update is undone -- ``running_mean``, ``running_var`` and ``num_batches_tracked`` go back to their
values before the batch, as if it had not been seen -- the layer's ``nonfinite_batches_skipped``
counter goes up by one and a ``RuntimeWarning`` is issued. The forward output is not changed (a
NaN input still gives NaN outputs and gradients: the guard protects the state, not the step).

Checking the (C,) statistics after the update instead of the input before it costs O(C) and also
catches finite inputs whose variance overflows. It needs one device-to-host sync per training
forward, which is why it is off by default (PyTorch parity); turn it on per layer with
``layer.skip_nonfinite_updates()`` or for a whole model with :func:`skip_nonfinite_updates`.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

__all__ = ["skip_nonfinite_updates"]

_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _tracks(module: nn.Module) -> bool:
    return module.training and getattr(module, "running_mean", None) is not None


def _snapshot(module: nn.Module, args) -> None:
    if _tracks(module):
        module._nonfinite_snapshot = [getattr(module, n).clone() for n in _BUFFERS if getattr(module, n) is not None]


def _check(module: nn.Module, args, output) -> None:
    saved = module.__dict__.pop("_nonfinite_snapshot", None)
    if saved is None:
        return
    stats = (module.running_mean, module.running_var)
    if bool(torch.stack([s.isfinite().all() for s in stats if s is not None]).all()):
        return
    with torch.no_grad():
        for name, old in zip((n for n in _BUFFERS if getattr(module, n) is not None), saved):
            getattr(module, name).copy_(old)
    module.nonfinite_batches_skipped += 1
    warnings.warn(
        f"{type(module).__name__}: a training batch made the running statistics non-finite "
        f"(NaN or Inf in the batch); their update was skipped "
        f"({module.nonfinite_batches_skipped} batch(es) skipped so far)",
        RuntimeWarning,
        stacklevel=2,
    )


def enable(module: nn.Module, enabled: bool = True) -> None:
    """Turn the guard on or off for one layer (idempotent); the counter starts at 0 when turned on."""
    handles = module.__dict__.pop("_nonfinite_handles", None)
    if handles is not None:
        for h in handles:
            h.remove()
    if enabled:
        module.nonfinite_batches_skipped = 0
        module._nonfinite_handles = (
            module.register_forward_pre_hook(_snapshot),
            module.register_forward_hook(_check),
        )


def skip_nonfinite_updates(model: nn.Module, enabled: bool = True) -> int:
    """Turn the guard on (or off) for every bnlab batch-norm layer in ``model``; returns how many."""
    from .batchnorm import _BatchNorm

    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    for m in layers:
        m.skip_nonfinite_updates(enabled)
    return len(layers)
