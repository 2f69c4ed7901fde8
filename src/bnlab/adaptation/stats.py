r"""AdaBN: re-estimate every BN layer's statistics on unlabeled target data.

Li, Wang, Shi, Liu & Hou, "Revisiting Batch Normalization For Practical Domain Adaptation", 2016
(https://arxiv.org/abs/1603.04779): the weights hold what a model knows, the BN statistics what
domain it is in; replacing the source running statistics with the target's adapts the model
without labels, training or new parameters.

The statistics are computed by :func:`bnlab.precise_bn` (exact pooled mean and population variance
of every value a layer sees over all target batches, whatever their sizes), with the BN layers in
training mode while they are collected -- so a deeper layer sees features normalized by the batch,
as in training -- and every other module in eval mode (dropout off). Afterwards the model is in
the modes it was in; only ``running_mean`` and ``running_var`` have changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor, nn

from ..surgery.precise_bn import _precise_bn
from ._layers import bn_layers, default_forward, first_batch, restore_modes, save_modes

__all__ = ["adapt_statistics"]


def adapt_statistics(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    num_samples: int | None = None,
) -> tuple[list[str], dict[str, Tensor], int, int]:
    """Set the running statistics of ``model``'s BN layers to those of ``batches``.

    Returns ``(layer names, {buffer name: value before}, samples used, batches seen)``.
    """
    layers = bn_layers(model, "stats")
    _, batches = first_batch(batches)
    run = default_forward if forward is None else forward
    seen = {"batches": 0}

    def counted(m: nn.Module, batch: Any) -> Any:
        seen["batches"] += 1
        return run(m, batch)

    prefix = {id(m): ("" if name == "<model>" else name + ".") for name, m in layers}
    before = {}
    for _, m in layers:
        assert m.running_mean is not None and m.running_var is not None  # method 'stats': tracked layers
        before[f"{prefix[id(m)]}running_mean"] = m.running_mean.clone()
        before[f"{prefix[id(m)]}running_var"] = m.running_var.clone()
    modes = save_modes(model)
    try:
        model.eval()  # precise_bn puts the BN layers in training mode, and back
        samples, unused = _precise_bn(model, batches, num_samples, counted, False)
    finally:
        restore_modes(modes)
    for name, m in layers:  # a layer the forward never reached was not adapted (precise_bn warned)
        if name in unused:
            del before[f"{prefix[id(m)]}running_mean"], before[f"{prefix[id(m)]}running_var"]
    return [name for name, _ in layers if name not in unused], before, samples, seen["batches"]
