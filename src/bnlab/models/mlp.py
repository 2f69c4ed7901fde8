"""The fully connected net of Ioffe & Szegedy 2015, §4.1: 3 hidden layers of 100 sigmoid units.

``Linear(in->100)-[norm]-sigmoid`` three times, then ``Linear(100->classes)``; the input is
flattened. ``widths`` and the activation are arguments (the paper's are (100, 100, 100), sigmoid).
The input of the last hidden sigmoid -- the distribution of the paper's Fig. 1b/c -- is the
input of ``model.blocks[-1].act``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import Tensor, nn

from .block import Block


class MLP(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        norm: Callable[[int], nn.Module],
        act: Callable[[], nn.Module],
        placement: str = "before",
        widths: Sequence[int] = (100, 100, 100),
    ) -> None:
        super().__init__()
        if not widths or any(int(w) < 1 for w in widths):
            raise ValueError(f"expected positive hidden widths (got {widths!r})")
        cin, blocks = math.prod(input_shape), []
        for w in widths:
            blocks.append(Block(nn.Linear(cin, int(w)), norm(int(w)), act(), placement))
            cin = int(w)
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # (N, features)
        for block in self.blocks:
            x = block(x)  # (N, width)
        return self.head(x)
