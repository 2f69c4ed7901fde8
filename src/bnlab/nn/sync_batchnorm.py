r"""SyncBatchNorm: batch statistics over the whole global batch, on any torch.distributed backend.

Data-parallel training splits a batch over P processes; plain BN normalizes each process's slice
with its own statistics. SyncBatchNorm normalizes every slice with the statistics of the union
(Peng et al., "MegDet: A Large Mini-Batch Object Detector", 2018, "cross-GPU batch norm";
torch.nn.SyncBatchNorm). Conventions as in :mod:`bnlab.functional`: biased variance to normalize,
unbiased in the running variance, momentum the weight of the new batch.

Training runs :func:`bnlab.core.sync.sync_train`: local statistics and the backward's local sums
come from the batch-norm primitives (the fast kernels wherever plain BN takes them), and one
collective each way combines them: an all_gather of (count, mean, M2) per rank in the forward,
combined with Chan's formula, and an all_reduce of the two backward sums. The weight/bias
gradients are the *local* ones, as in torch (DDP sums them over ranks).

Eval mode does not communicate (running statistics are used; with ``track_running_stats=False``
each rank normalizes with its own batch statistics, as torch does). When torch.distributed is not
available or not initialised, or the group has one process, the layer is plain batch norm.
Collectives work for gloo with CPU tensors (torch's own SyncBatchNorm refuses them) and NCCL with
CUDA tensors; nothing here assumes a device.

The class is a subclass of torch's ``_BatchNorm`` (so every tool that looks for batch norm finds
it) but not of ``torch.nn.SyncBatchNorm``: ``DistributedDataParallel`` refuses any
``torch.nn.SyncBatchNorm`` in a CPU module ("SyncBatchNorm layers only work with GPU modules"),
which is where this layer is meant to run too.

:class:`SyncBatchNormDropAct2d` is the synchronized twin of :class:`bnlab.nn.BatchNormDropAct2d`
(timm's ``BatchNormAct2d`` structure): the statistics above, then the layer's own ``drop`` and
``act`` modules, so a sync conversion keeps them (torch's converter builds a plain SyncBatchNorm
and leaves them behind, unused).
"""

from __future__ import annotations

from typing import TypeVar, cast

import torch.distributed as dist
from torch import Tensor, nn

from ..core.sync import sync_train
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d, _BatchNorm
from .drop_act import BatchNormDropAct2d
from .swap import plain_config, swap

__all__ = ["SyncBatchNorm", "SyncBatchNormDropAct2d", "revert_sync_batchnorm"]


def _world_size(process_group) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(process_group)


class SyncBatchNorm(_BatchNorm):
    r"""Batch norm whose training statistics are those of the global batch over all processes.

    Same constructor as ``torch.nn.SyncBatchNorm``; accepts inputs ``(N, C, *)`` of 2 or more dims.
    See the module docstring (:mod:`bnlab.nn.sync_batchnorm`) for the math and the collectives.

    .. math::
        y = \frac{x - \mathrm{E}_{\text{all ranks}}[x]}{\sqrt{\mathrm{Var}_{\text{all ranks}}[x] + \epsilon}}
            \cdot \gamma + \beta

    Args:
        num_features, eps, momentum, affine, track_running_stats, bias: as
            :class:`bnlab.nn.BatchNorm2d` (momentum is the weight of the new batch). Default
            eps 1e-5, momentum 0.1.
        process_group: the group whose processes share statistics; ``None`` is the default
            (world) group. Default: ``None``

    Every process of the group must call forward (and backward) in training, even with an empty
    batch (N = 0): the statistics are then those of the other processes.

    Examples::

        >>> model = SyncBatchNorm.convert_sync_batchnorm(model)      # before wrapping in DDP
        >>> model = bnlab.nn.revert_sync_batchnorm(model)             # back, e.g. for export
    """

    _not_scriptable = "its statistics are gathered across processes"

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group=None,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def _normalize(self, input, running_mean, running_var, use_batch_stats, momentum) -> Tensor:
        world_size = _world_size(self.process_group)
        if not (self.training and use_batch_stats and world_size > 1):
            return super()._normalize(input, running_mean, running_var, use_batch_stats, momentum)
        return sync_train(
            input, self.weight, self.bias, running_mean, running_var, momentum, self.eps, self.process_group, world_size
        )

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group=None) -> nn.Module:
        """Replace every plain BatchNorm1d/2d/3d (bnlab's or torch's, or torch's SyncBatchNorm) in
        ``module`` by a SyncBatchNorm; returns the converted module (``module`` itself is changed
        in place where it has children). A :class:`bnlab.nn.BatchNormDropAct2d` becomes a
        :class:`SyncBatchNormDropAct2d` with the same drop and act modules.

        As torch's ``convert_sync_batchnorm``, the new layers hold the *same* Parameter and buffer
        tensors (so an optimizer built before keeps working) and keep ``training``, device and
        dtype (:mod:`bnlab.nn.swap`). The original class is remembered for
        :func:`revert_sync_batchnorm`. Other batch-norm subclasses (ghost, renorm, fused
        activation, lazy ...) are refused with a TypeError rather than converted and silently
        stripped of their behaviour.
        """
        if isinstance(module, SyncBatchNorm):
            return module
        if type(module) is BatchNormDropAct2d:
            return SyncBatchNormDropAct2d.from_drop_act(module, process_group)
        if type(module) in _CONVERTIBLE:
            new = swap(module, cls(**plain_config(module), process_group=process_group, device="meta"))
            new._converted_from = _CONVERTIBLE[type(module)]  # type: ignore[assignment]  # a plain attribute
            return new
        if isinstance(module, (_BatchNorm, nn.modules.batchnorm._BatchNorm)):
            raise TypeError(
                f"convert_sync_batchnorm: expected BatchNorm1d/2d/3d (got {type(module).__name__}, whose "
                f"behaviour SyncBatchNorm would drop)"
            )
        for name, child in module.named_children():
            new = cls.convert_sync_batchnorm(child, process_group)
            if new is not child:
                module.add_module(name, new)
        return module


# class converted from -> bnlab class to revert to (None: unknown, revert needs batchnorm_cls)
_CONVERTIBLE: dict[type, type | None] = {
    BatchNorm1d: BatchNorm1d,
    BatchNorm2d: BatchNorm2d,
    BatchNorm3d: BatchNorm3d,
    nn.BatchNorm1d: BatchNorm1d,
    nn.BatchNorm2d: BatchNorm2d,
    nn.BatchNorm3d: BatchNorm3d,
    nn.SyncBatchNorm: None,
}


def revert_sync_batchnorm(module: nn.Module, batchnorm_cls: type | None = None) -> nn.Module:
    """The way back: replace every SyncBatchNorm (bnlab's or torch's) by a bnlab BatchNorm layer
    (a :class:`SyncBatchNormDropAct2d` by a :class:`bnlab.nn.BatchNormDropAct2d`, same modules).

    The class is the one the layer was converted from (remembered by
    :meth:`SyncBatchNorm.convert_sync_batchnorm`, bnlab's equivalent where that was torch's), else
    ``batchnorm_cls`` (e.g. ``bnlab.nn.BatchNorm2d``); a SyncBatchNorm does not know its input's
    dimensionality, so one built directly needs it. The new layers hold the same tensors and keep
    ``training``, device and dtype, as in the conversion (:mod:`bnlab.nn.swap`).
    """
    if isinstance(module, SyncBatchNormDropAct2d):
        return module.to_drop_act()
    if isinstance(module, (SyncBatchNorm, nn.SyncBatchNorm)):
        target = getattr(module, "_converted_from", None) or batchnorm_cls
        if target is None:
            raise ValueError(
                f"revert_sync_batchnorm: expected batchnorm_cls (e.g. bnlab.nn.BatchNorm2d) for a "
                f"{type(module).__name__} that was not made by convert_sync_batchnorm (got None)"
            )
        if not (isinstance(target, type) and issubclass(target, _BatchNorm)):
            raise TypeError(f"expected a bnlab batch-norm class for batchnorm_cls (got {target!r})")
        return swap(module, target(**plain_config(module), device="meta"))
    for name, child in module.named_children():
        new = revert_sync_batchnorm(child, batchnorm_cls)
        if new is not child:
            module.add_module(name, new)
    return module


class SyncBatchNormDropAct2d(SyncBatchNorm):
    """``act(drop(SyncBatchNorm(x)))`` over (N, C, H, W) input: :class:`bnlab.nn.BatchNormDropAct2d`
    with the statistics of the global batch.

    Same attributes, forward order and state_dict keys as timm's ``BatchNormAct2d`` (``drop`` and
    ``act`` are submodules), so its checkpoints load. ``bnlab.convert(model, "sync")`` builds it
    from timm's layer or bnlab's twin, keeping their very ``drop`` and ``act`` modules; converting
    to "bnlab" gives :class:`bnlab.nn.BatchNormDropAct2d` and to "torch" timm's class again, where
    the layer came from timm (:mod:`bnlab.surgery.norm_act`).

    Args:
        num_features, eps, momentum, affine, track_running_stats, process_group, bias: as
            :class:`SyncBatchNorm`.
        drop: a module applied after the normalization. Default: ``nn.Identity()``
        act: an activation module applied last. Default: ``nn.Identity()``

    Every process runs its own ``drop`` on its own slice: a random drop module (DropBlock,
    drop path) draws its masks from each process's generator, as under torch's SyncBatchNorm
    followed by the same module.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group=None,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
        drop: nn.Module | None = None,
        act: nn.Module | None = None,
    ) -> None:
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, process_group, device, dtype, bias=bias
        )
        self.drop = nn.Identity() if drop is None else drop
        self.act = nn.Identity() if act is None else act

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")

    def _normalize(self, input, running_mean, running_var, use_batch_stats, momentum) -> Tensor:
        y = super()._normalize(input, running_mean, running_var, use_batch_stats, momentum)
        return self.act(self.drop(y))

    @classmethod
    def from_drop_act(cls, layer: nn.Module, process_group=None) -> SyncBatchNormDropAct2d:
        """``layer`` (a batch norm with ``drop`` and ``act`` modules) as this class, holding its
        tensors (:mod:`bnlab.nn.swap`) and its very drop and act modules; a class the layer
        remembers converting from (timm's) is remembered too."""
        new = swap(layer, cls(**plain_config(layer), process_group=process_group, device="meta"))
        return _same_drop_act(layer, new)

    def to_drop_act(self) -> BatchNormDropAct2d:
        """This layer as a :class:`bnlab.nn.BatchNormDropAct2d`, with the same tensors and modules."""
        return _same_drop_act(self, swap(self, BatchNormDropAct2d(**plain_config(self), device="meta")))


_L = TypeVar("_L", BatchNormDropAct2d, SyncBatchNormDropAct2d)


def _same_drop_act(old: nn.Module, new: _L) -> _L:
    new.drop, new.act = cast(nn.Module, old.drop), cast(nn.Module, old.act)
    origin = getattr(old, "_converted_from", None)
    if origin is not None:
        new._converted_from = origin  # a plain attribute
    return new
