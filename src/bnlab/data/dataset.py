"""The in-memory data set every loader returns.

Data sit in memory as tensors so the trainer can index batches with a permutation instead of a
per-sample DataLoader (on these small sets the DataLoader's per-sample Python calls would cost
more than the model's step).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor


@dataclasses.dataclass
class Dataset:
    """A train/test split held as tensors.

    ``x_*`` are float32 inputs of shape ``(N, *input_shape)`` -- (N, L) for 1D signals, (N, C, H, W)
    for images, scaled as described by ``name``'s loader; ``y_*`` are int64 class indices (N,).
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: tuple[str, ...]  # readable class names; len(classes) is the number of classes

    def __post_init__(self) -> None:
        # Loaders check their files and name them; these checks catch a loader that let something
        # through, with the same plain errors.
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"{self.name} {split}: expected as many labels as inputs "
                    f"(got {x.shape[0]} inputs, {y.shape[0]} labels)"
                )
            if y.dtype != torch.int64 or not x.is_floating_point():
                raise TypeError(
                    f"{self.name} {split}: expected float inputs and int64 labels "
                    f"(got {x.dtype} inputs, {y.dtype} labels)"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"{self.name}: expected train and test inputs of one shape "
                f"(got {tuple(self.x_train.shape[1:])} and {tuple(self.x_test.shape[1:])})"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example without the batch dimension, (L,) or (C, H, W)."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device: torch.device | str) -> Dataset:
        """A copy with every tensor on ``device`` (the trainer moves the whole set once)."""
        moved = {f: getattr(self, f).to(device) for f in ("x_train", "y_train", "x_test", "y_test")}
        return dataclasses.replace(self, **moved)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
            f"classes={self.num_classes})"
        )
