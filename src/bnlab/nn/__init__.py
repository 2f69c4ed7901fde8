"""bnlab's layers: drop-in replacements for torch.nn's batch norm and its variants."""

from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]
