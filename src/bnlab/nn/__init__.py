"""bnlab's layers: drop-in replacements for torch.nn's batch norm and its variants."""

from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d, LazyBatchNorm1d, LazyBatchNorm2d, LazyBatchNorm3d
from .drop_act import BatchNormDropAct2d
from .frozen import FrozenBatchNorm1d, FrozenBatchNorm2d, FrozenBatchNorm3d
from .ghost import GhostBatchNorm1d, GhostBatchNorm2d, GhostBatchNorm3d
from .masked import MaskedBatchNorm1d
from .nonfinite import skip_nonfinite_updates
from .norm_act import BatchNormAct1d, BatchNormAct2d, BatchNormAct3d
from .renorm import BatchRenorm1d, BatchRenorm2d, BatchRenorm3d, renorm_warmup, set_renorm_limits
from .sync_batchnorm import SyncBatchNorm, SyncBatchNormDropAct2d, revert_sync_batchnorm
from .torch_fusion import register as _register_fusion

_register_fusion()

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "LazyBatchNorm1d",
    "LazyBatchNorm2d",
    "LazyBatchNorm3d",
    "SyncBatchNorm",
    "SyncBatchNormDropAct2d",
    "revert_sync_batchnorm",
    "GhostBatchNorm1d",
    "GhostBatchNorm2d",
    "GhostBatchNorm3d",
    "BatchRenorm1d",
    "BatchRenorm2d",
    "BatchRenorm3d",
    "renorm_warmup",
    "set_renorm_limits",
    "FrozenBatchNorm1d",
    "FrozenBatchNorm2d",
    "FrozenBatchNorm3d",
    "BatchNormAct1d",
    "BatchNormAct2d",
    "BatchNormAct3d",
    "BatchNormDropAct2d",
    "MaskedBatchNorm1d",
    "skip_nonfinite_updates",
]
