"""Train a chosen subset of a model's weights, leaving the rest at their initial values.

* :func:`train_only_norm_affine` -- only the norms' gamma and beta (Frankle et al. 2021, "Training
  BatchNorm and Only BatchNorm", https://arxiv.org/abs/2003.00152);
* :func:`train_random_subset` -- exactly ``k`` scalar weights drawn at random from the parameters
  that are not norm parameters (the control that has as many trainable values as the first).

Both set ``requires_grad`` and return the number of trainable scalars. The random subset masks the
gradients of partly trained tensors with a hook, so the untrained entries get a zero gradient: with
plain SGD (with momentum) or Adam they never move, but weight decay would still shrink them, which
is why the trainer refuses weight decay for a random subset.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .norms import is_norm_layer


def norm_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every norm layer's affine weight and bias, in module order."""
    out = []
    for mname, module in model.named_modules():
        if is_norm_layer(module):
            for pname, p in module.named_parameters(recurse=False):
                out.append((f"{mname}.{pname}" if mname else pname, p))
    return out


def _keep(name: str, also: Iterable[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in also)


def train_only_norm_affine(model: nn.Module, also: Iterable[str] = ()) -> int:
    """Freeze every parameter but the norms' gamma/beta (and those under the module names in ``also``,
    e.g. ``("head",)``). Returns the number of trainable scalars; raises if the model has no norm."""
    also = tuple(also)
    norm_ids = {id(p) for _, p in norm_parameters(model)}
    if not norm_ids:
        raise ValueError("expected a model with affine norm layers to train (found none)")
    count = 0
    for name, p in model.named_parameters():
        p.requires_grad_(id(p) in norm_ids or _keep(name, also))
        count += p.numel() if p.requires_grad else 0
    return count


def train_random_subset(model: nn.Module, k: int, generator: torch.Generator, also: Iterable[str] = ()) -> int:
    """Train exactly ``k`` scalars drawn uniformly from the non-norm parameters (plus everything
    under ``also``); every other parameter is frozen. Returns the number of trainable scalars."""
    also = tuple(also)
    norm_ids = {id(p) for _, p in norm_parameters(model)}
    pool = [(n, p) for n, p in model.named_parameters() if id(p) not in norm_ids and not _keep(n, also)]
    total = sum(p.numel() for _, p in pool)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= total:
        raise ValueError(f"expected k in 1..{total} (the non-norm weights of this model) (got {k!r})")
    chosen = torch.randperm(total, generator=generator)[:k]
    flat_mask = torch.zeros(total, dtype=torch.bool)
    flat_mask[chosen] = True
    count, start = 0, 0
    for name, p in model.named_parameters():
        if _keep(name, also):
            p.requires_grad_(True)
            count += p.numel()
        else:
            p.requires_grad_(False)
    for _, p in pool:
        mask = flat_mask[start : start + p.numel()].view(p.shape)
        start += p.numel()
        if mask.any():
            p.requires_grad_(True)
            count += int(mask.sum())
            if not mask.all():
                m = mask.to(device=p.device, dtype=p.dtype)
                p.register_hook(lambda g, m=m: g * m)
    return count
