"""BatchNormDropAct2d: bnlab's batch norm, then a drop module, then an activation module.

The structure of timm's ``BatchNormAct2d`` (``timm.layers.norm_act``), which subclasses
``BatchNorm2d`` and adds two submodules, ``drop`` (identity or a drop-path/drop-block layer) and
``act`` (any activation module, or identity): same attributes, same forward order, same
state_dict keys. ``bnlab.convert(model, "bnlab")`` turns timm's layers into this one, keeping the
very ``drop`` and ``act`` modules, ``convert(model, "sync")`` gives
:class:`bnlab.nn.SyncBatchNormDropAct2d` and ``convert(model, "torch")`` timm's class back
(:mod:`bnlab.surgery.norm_act`); ``bnlab.fold`` folds it into the conv before it and leaves
``drop`` and ``act`` in its place. The normalization is bnlab's own; the activation is the module's
(any torch activation), so the fused kernels of :class:`bnlab.nn.BatchNormAct2d` are not used.
"""

from __future__ import annotations

from torch import Tensor, nn

from .batchnorm import BatchNorm2d

__all__ = ["BatchNormDropAct2d"]


class BatchNormDropAct2d(BatchNorm2d):
    """``act(drop(BatchNorm2d(x)))`` over (N, C, H, W) input.

    Args:
        num_features, eps, momentum, affine, track_running_stats, device, dtype, bias: as
            :class:`bnlab.nn.BatchNorm2d`.
        drop: a module applied after the normalization. Default: ``nn.Identity()``
        act: an activation module applied last. Default: ``nn.Identity()``
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
        drop: nn.Module | None = None,
        act: nn.Module | None = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.drop = nn.Identity() if drop is None else drop
        self.act = nn.Identity() if act is None else act

    def _normalize(self, input, running_mean, running_var, use_batch_stats, momentum) -> Tensor:
        y = super()._normalize(input, running_mean, running_var, use_batch_stats, momentum)
        return self.act(self.drop(y))

    def _script_activation(self, y: Tensor) -> Tensor:
        # under torch.jit.script (bnlab.nn.batchnorm's _script_forward): the same drop and act
        return self.act(self.drop(y))
