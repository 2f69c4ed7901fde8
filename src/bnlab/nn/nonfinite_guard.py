"""The hooks of the non-finite guard on one layer (:mod:`bnlab.nn.nonfinite` describes the guard).

Below the layers: a layer's ``skip_nonfinite_updates`` calls :func:`enable`; the model-wide switch in
:mod:`bnlab.nn.nonfinite` finds the layers.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _tracks(module: nn.Module) -> bool:
    return module.training and getattr(module, "running_mean", None) is not None


# Hooks on a layer: its guard state is plain attributes, which nn.Module's typed __setattr__ does not
# describe (hence the ignores below).


def _snapshot(module: nn.Module, args) -> None:
    if _tracks(module):
        module._nonfinite_snapshot = [getattr(module, n).clone() for n in _BUFFERS if getattr(module, n) is not None]  # type: ignore[assignment]  # (see above)


def _check(module: nn.Module, args, output) -> None:
    saved = module.__dict__.pop("_nonfinite_snapshot", None)
    if saved is None:
        return
    stats = (module.running_mean, module.running_var)
    if bool(torch.stack([s.isfinite().all() for s in stats if s is not None]).all()):  # type: ignore[operator]  # BN buffers
        return
    with torch.no_grad():
        for name, old in zip((n for n in _BUFFERS if getattr(module, n) is not None), saved):
            getattr(module, name).copy_(old)
    module.nonfinite_batches_skipped += 1  # type: ignore[operator, assignment]  # declared by bnlab's _BatchNorm
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
        module.nonfinite_batches_skipped = 0  # type: ignore[assignment]  # declared by bnlab's _BatchNorm
        module._nonfinite_handles = (  # type: ignore[assignment]  # plain attribute (kept in __dict__)
            module.register_forward_pre_hook(_snapshot),
            module.register_forward_hook(_check),
        )
