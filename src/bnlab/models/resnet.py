"""A small ResNet (He et al. 2016, CIFAR variant) for digits and CIFAR-10.

A 3x3 stem block, then stages of basic blocks with widths (16, 32, 64), the first block of each
stage after the first halving the resolution (stride 2, 1x1 conv + norm shortcut), global average
pooling and a linear head. ``blocks_per_stage=1`` is a ResNet-8, ``3`` a ResNet-20.

A basic block with ``placement="before"`` is the original one,
``act(norm2(conv2(act(norm1(conv1 x)))) + shortcut(x))``; with ``"after"`` every norm follows its
activation, ``norm2(act(conv2(norm1(act(conv1 x))))) + shortcut(x)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from .block import Block, check_placement


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class BasicBlock(nn.Module):
    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        norm: Callable[[int], nn.Module],
        act: Callable[[], nn.Module],
        placement: str,
    ) -> None:
        super().__init__()
        self.placement = check_placement(placement)
        self.block1 = Block(_conv3x3(cin, cout, stride), norm(cout), act(), placement)
        self.conv2 = _conv3x3(cout, cout)
        self.norm2 = norm(cout)
        self.act2 = act()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride), norm(cout))

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(self.block1(x))
        if self.placement == "before":
            return self.act2(self.norm2(h) + self.shortcut(x))
        return self.norm2(self.act2(h)) + self.shortcut(x)


class ResNet(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        norm: Callable[[int], nn.Module],
        act: Callable[[], nn.Module],
        placement: str = "before",
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 1,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"resnet expects images of shape (C, H, W) (got {tuple(input_shape)})")
        self.stem = Block(_conv3x3(input_shape[0], widths[0]), norm(widths[0]), act(), placement)
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks_per_stage):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(cin, w, stride, norm, act, placement))
                cin = w
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # (N, 16, H, W)
        for block in self.blocks:
            x = block(x)  # (N, C, H', W')
        return self.head(x.mean((2, 3)))  # (N, C) -> (N, classes)
