"""Batch order: a seeded permutation per epoch, consecutive slices of it as batches.

Replaces a DataLoader for in-memory data: one ``randperm`` per epoch and one index_select per
batch. The last incomplete batch of an epoch is dropped so every batch has ``batch_size``
examples (BN statistics then always come from equally large batches).
"""

from __future__ import annotations

from collections.abc import Iterator

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
            yield perm[i * batch_size : (i + 1) * batch_size]
        done += min(per_epoch, steps - done)


def class_batch_indices(
    labels: Tensor, batch_size: int, classes_per_batch: int, steps: int, generator: torch.Generator
) -> Iterator[Tensor]:
    """``steps`` non-i.i.d. batches: each of ``classes_per_batch`` random classes, ``batch_size / k`` of each.

    Ioffe (2017, §4.3) trains on batches built from few labels (16 labels x 2 images) to show how BN
    suffers when the examples of a batch are not independent. Per batch, ``k`` distinct classes are
    drawn uniformly (a seeded ``randperm`` of the classes present); each class yields the next
    ``batch_size / k`` examples of its own seeded permutation, reshuffled when used up, so every
    example of a class is seen once before any is seen twice. The batch is then shuffled (the
    order does not matter to BN; it does to ghost batches). ``labels`` is the (N,) tensor of
    training labels on the CPU.
    """
    if classes_per_batch < 1 or batch_size % classes_per_batch:
        raise ValueError(
            f"expected batch_size divisible by classes_per_batch >= 1 (got {batch_size} and {classes_per_batch})"
        )
    per_class = batch_size // classes_per_batch
    classes = torch.unique(labels)
    if classes_per_batch > classes.numel():
        raise ValueError(f"expected classes_per_batch <= the {classes.numel()} classes (got {classes_per_batch})")
    members = [torch.nonzero(labels == c).flatten() for c in classes.tolist()]
    small = min(m.numel() for m in members)
    if per_class > small:
        raise ValueError(f"expected batch_size / classes_per_batch <= {small}, the smallest class (got {per_class})")
    perms = [m[torch.randperm(m.numel(), generator=generator)] for m in members]
    pos = [0] * len(members)
    for _ in range(steps):
        parts = []
        for c in torch.randperm(len(members), generator=generator)[:classes_per_batch].tolist():
            if pos[c] + per_class > perms[c].numel():  # used up: a new permutation of this class
                perms[c] = members[c][torch.randperm(members[c].numel(), generator=generator)]
                pos[c] = 0
            parts.append(perms[c][pos[c] : pos[c] + per_class])
            pos[c] += per_class
        batch = torch.cat(parts)  # (batch_size,)
        yield batch[torch.randperm(batch_size, generator=generator)]
