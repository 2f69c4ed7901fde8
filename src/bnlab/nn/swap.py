"""Swapping one batch-norm layer for another: the one routine every conversion in bnlab runs.

``bnlab.convert`` (every target), ``SyncBatchNorm.convert_sync_batchnorm`` and
``revert_sync_batchnorm``, the fusion of BN with its activation and ``FrozenBatchNorm*d.from_batchnorm``
all build the new layer with the configuration of the old one (:func:`plain_config`) on the "meta"
device -- shapes only -- and hand both to :func:`swap`, which decides, once for all of them, what
the new layer holds:

**The old layer's tensors themselves, not copies** -- torch's own choice in
``torch.nn.SyncBatchNorm.convert_sync_batchnorm``, which assigns the same Parameter and buffer
objects. So an optimizer built before the swap keeps updating the parameters, ``requires_grad``,
values, device and dtype carry over (they are the same tensors), and nothing is allocated.
(``bnlab.convert`` deep-copies the model first unless ``inplace=True``, so the user's original
model never shares anything with the converted one.) Where a tensor changes role:

* a parameter the new layer holds as a buffer (FrozenBatchNorm's gamma and beta) is the
  parameter's tensor, detached: the same storage;
* a buffer the new layer holds as a parameter (unfreezing) becomes a Parameter on the same storage,
  with the ``requires_grad`` the layer had before it was frozen;
* a tensor the old layer lacks is created with the new layer's default (gamma 1, beta 0, running
  mean 0, running variance 1, count 0) on the old layer's device and dtype;
* what the new layer cannot hold (a frozen layer has no momentum, ``num_batches_tracked`` or
  ``requires_grad``) is kept on it (:data:`KEPT`), so that swapping back restores the layer exactly.

The new layer also takes the training flag, the forward and backward hooks (the same hook dicts,
so handles stay valid) and a quantization ``qconfig``.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import Tensor, nn

__all__ = ["swap", "plain_config", "KEPT"]

PARAMETERS = ("weight", "bias")
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
KEPT = "_bnlab_kept"  # attribute of a swapped-in layer: what it could not hold of the old layer
_DEFAULTS = {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0}
_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_backward_pre_hooks",
    "_backward_hooks",
)


def plain_config(layer: nn.Module) -> dict[str, Any]:
    """The constructor arguments of a plain batch norm equivalent to ``layer`` (any bnlab or torch
    BN layer; a frozen one gives back what it kept of the layer it froze, or, built directly,
    a plain affine layer with the default momentum)."""
    kept = getattr(layer, KEPT, None)
    if kept is not None:
        return dict(kept["config"])
    if not hasattr(layer, "affine"):  # frozen, built directly
        return {
            "num_features": layer.num_features,
            "eps": layer.eps,
            "momentum": 0.1,
            "affine": True,
            "track_running_stats": True,
        }
    config = {
        "num_features": layer.num_features,
        "eps": layer.eps,
        "momentum": layer.momentum,
        "affine": layer.affine,
        "track_running_stats": layer.track_running_stats,
    }
    if layer.affine and layer.bias is None:
        config["bias"] = False  # only when needed: older torch has no bias argument
    return config


def _held(module: nn.Module, name: str) -> Tensor | None:
    """The tensor ``module`` holds under ``name``, as a parameter or a buffer (None if neither)."""
    if name in module._parameters:
        return module._parameters[name]
    return module._buffers.get(name)


_M = TypeVar("_M", bound=nn.Module)


def _like(old: nn.Module) -> dict[str, Any]:
    ref = next((t for t in (_held(old, n) for n in PARAMETERS + BUFFERS[:2]) if t is not None), None)
    return {} if ref is None else {"device": ref.device, "dtype": ref.dtype}


def swap(old: nn.Module, new: _M) -> _M:
    """Give ``new`` (built with its configuration, on any device) ``old``'s tensors, training flag,
    hooks and qconfig under the policy of the module docstring; returns ``new``."""
    kept = dict(getattr(old, KEPT, None) or {})
    grads = kept.get("requires_grad", {})
    lost: dict[str, Any] = {}
    for name in PARAMETERS + BUFFERS:
        tensor = _held(old, name)
        if tensor is None and name == "num_batches_tracked":
            tensor = kept.get("num_batches_tracked")
        as_parameter = new._parameters.get(name) is not None
        if not as_parameter and new._buffers.get(name) is None:
            if tensor is not None:
                lost[name] = tensor  # the new layer has no slot for it
            continue
        if tensor is None:
            if name == "num_batches_tracked":
                tensor = torch.tensor(0, dtype=torch.long, device=_like(old).get("device"))
            else:
                tensor = torch.full((new.num_features,), _DEFAULTS[name], **_like(old))  # type: ignore[arg-type]  # BN's int
        if as_parameter:
            if not isinstance(tensor, nn.Parameter):
                tensor = nn.Parameter(tensor, requires_grad=grads.get(name, True))
            new._parameters[name] = tensor
        else:
            if isinstance(tensor, nn.Parameter):
                lost[f"requires_grad.{name}"] = tensor.requires_grad
                tensor = tensor.detach()
            new._buffers[name] = tensor
    if lost and hasattr(old, "affine"):  # a plain layer became one that cannot hold all of it
        object.__setattr__(
            new,
            KEPT,
            {
                "config": plain_config(old),
                "num_batches_tracked": lost.get("num_batches_tracked"),
                "requires_grad": {n: lost[f"requires_grad.{n}"] for n in PARAMETERS if f"requires_grad.{n}" in lost},
            },
        )
    new.train(old.training)
    for attr in _HOOK_DICTS:
        if hasattr(old, attr) and hasattr(new, attr):
            setattr(new, attr, getattr(old, attr))
    if hasattr(old, "qconfig"):
        new.qconfig = old.qconfig
    return new
