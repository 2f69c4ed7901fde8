"""Batch order: a seeded permutation per epoch, consecutive slices of it as batches.

Replaces a DataLoader for in-memory data: one ``randperm`` per epoch and one index_select per
batch. The last incomplete batch of an epoch is dropped so every batch has ``batch_size``
examples (BN statistics then always come from equally large batches).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor


def batch_indices(n: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[Tensor]:
    """``steps`` index tensors of ``batch_size`` each, from successive seeded permutations of range(n)."""
    if batch_size > n:
        raise ValueError(f"expected batch_size <= the {n} training examples (got {batch_size})")
    per_epoch = n // batch_size
    done = 0
    while done < steps:
        perm = torch.randperm(n, generator=generator)
        for i in range(min(per_epoch, steps - done)):
            yield perm[i * batch_size:(i + 1) * batch_size]
        done += min(per_epoch, steps - done)
