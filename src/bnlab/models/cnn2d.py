"""A small 2D CNN for digits (8x8) and CIFAR-10 (32x32).

Stages of ``convs_per_stage`` 3x3 conv blocks (conv-norm-act in the chosen placement) with a 2x2
max-pool between stages, then global average pooling and a linear head. Default widths (32, 64).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from .block import Block


class CNN2d(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        norm: Callable[[int], nn.Module],
        act: Callable[[], nn.Module],
        placement: str = "before",
        widths: Sequence[int] = (32, 64),
        convs_per_stage: int = 2,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"cnn2d expects images of shape (C, H, W) (got {tuple(input_shape)})")
        cin, blocks, pools = input_shape[0], [], []
        for i, w in enumerate(widths):
            for _ in range(convs_per_stage):
                blocks.append(Block(nn.Conv2d(cin, w, 3, padding=1), norm(w), act(), placement))
                pools.append(False)
                cin = w
            pools[-1] = i < len(widths) - 1  # pool after every stage but the last
        self.blocks = nn.ModuleList(blocks)
        self._pool_after = tuple(pools)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        for block, pool in zip(self.blocks, self._pool_after):
            x = block(x)  # (N, C, H, W)
            if pool:
                x = nn.functional.max_pool2d(x, 2)  # (N, C, H/2, W/2)
        return self.head(x.mean((2, 3)))  # global average pool: (N, C)
