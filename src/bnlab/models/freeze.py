"""Train a chosen subset of a model's weights, leaving the rest at their initial values.

* :func:`train_only_norm_affine` -- only the norms' gamma and beta (Frankle et al. 2021, "Training
  BatchNorm and Only BatchNorm", https://arxiv.org/abs/2003.00152);
* :func:`train_random_subset` -- exactly ``k`` scalar weights drawn at random from the parameters
  that are not norm parameters (the control that has as many trainable values as the first);
  :func:`random_subset_masks` gives the draw as masks.

Both set ``requires_grad`` and return the number of trainable scalars. The random subset masks the
gradients of partly trained tensors with a hook, so the untrained entries get a zero gradient: with
plain SGD (with momentum) or Adam they never move, but weight decay would still shrink them, which
is why the trainer refuses weight decay for a random subset.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

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


def random_subset_masks(
    model: nn.Module, k: int, generator: torch.Generator, also: Iterable[str] = ()
) -> dict[str, Tensor]:
    """{name: boolean mask of the entries that train} for every parameter of ``model``, as
    :func:`train_random_subset` draws them (the same use of ``generator``): exactly ``k`` entries of
    the non-norm parameters, everything under ``also``, no entry of the norms' parameters."""
    also = tuple(also)
    norm_ids = {id(p) for _, p in norm_parameters(model)}
    pool = [(n, p) for n, p in model.named_parameters() if id(p) not in norm_ids and not _keep(n, also)]
    total = sum(p.numel() for _, p in pool)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= total:
        raise ValueError(f"expected k in 1..{total} (the non-norm weights of this model) (got {k!r})")
    chosen = torch.randperm(total, generator=generator)[:k]
    flat_mask = torch.zeros(total, dtype=torch.bool)
    flat_mask[chosen] = True
    masks, start = {}, 0
    for name, p in pool:
        masks[name] = flat_mask[start : start + p.numel()].view(p.shape)
        start += p.numel()
    return {
        name: masks[name] if name in masks else torch.full(p.shape, _keep(name, also), dtype=torch.bool)
        for name, p in model.named_parameters()
    }


def train_random_subset(model: nn.Module, k: int, generator: torch.Generator, also: Iterable[str] = ()) -> int:
    """Train exactly ``k`` scalars drawn uniformly from the non-norm parameters (plus everything
    under ``also``); every other parameter is frozen. Returns the number of trainable scalars."""
    masks = random_subset_masks(model, k, generator, also)
    count = 0
    for name, p in model.named_parameters():
        mask = masks[name]
        p.requires_grad_(bool(mask.any()))
        count += int(mask.sum())
        if mask.any() and not mask.all():
            m = mask.to(device=p.device, dtype=p.dtype)
            p.register_hook(lambda g, m=m: g * m)
    return count
