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
``layer.skip_nonfinite_updates()`` or for a whole model with :func:`skip_nonfinite_updates`. The hooks
that do it live in :mod:`bnlab.nn.nonfinite_guard`, below the layers that turn them on.
"""

from __future__ import annotations

from torch import nn

from .batchnorm import _BatchNorm

__all__ = ["skip_nonfinite_updates"]


def skip_nonfinite_updates(model: nn.Module, enabled: bool = True) -> int:
    """Turn the guard on (or off) for every bnlab batch-norm layer in ``model``; returns how many."""
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    for m in layers:
        m.skip_nonfinite_updates(enabled)
    return len(layers)
