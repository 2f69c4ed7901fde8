"""bnlab's layers: drop-in replacements for torch.nn's batch norm and its variants."""

from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .nonfinite import skip_nonfinite_updates
from .sync_batchnorm import SyncBatchNorm, revert_sync_batchnorm

__all__ = [
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
    "SyncBatchNorm", "revert_sync_batchnorm",
    "skip_nonfinite_updates",
]
