"""Non-i.i.d. batches (RunConfig.batch_classes): k classes per batch, batch_size/k examples of each."""

import dataclasses

import pytest
import torch

from bnlab.data.dataset import Dataset
from bnlab.train import RunConfig, train
from bnlab.train.batches import class_batch_indices


def _labels(n_per_class=(30, 25, 40, 35, 20)) -> torch.Tensor:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    return labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(0))]


def test_each_batch_holds_k_classes_with_equal_counts():
    labels = _labels()
    batches = list(class_batch_indices(labels, 12, 3, 50, torch.Generator().manual_seed(1)))
    assert len(batches) == 50
    for idx in batches:
        counts = torch.bincount(labels[idx], minlength=5)
        assert sorted(counts[counts > 0].tolist()) == [4, 4, 4]
        assert idx.unique().numel() == 12  # no example twice within a batch


def test_every_example_of_a_class_is_used_once_before_any_repeats():
    labels = _labels((8, 8))
    batches = list(class_batch_indices(labels, 4, 1, 4, torch.Generator().manual_seed(2)))  # 4 per class
    seen = {0: [], 1: []}
    for idx in batches:
        seen[int(labels[idx[0]])].extend(idx.tolist())
    for c, used in seen.items():
        first = used[:8]
        assert len(set(first)) == len(first)  # a class's first 8 draws are distinct examples


def test_batches_are_seeded():
    labels = _labels()
    a = list(class_batch_indices(labels, 10, 2, 20, torch.Generator().manual_seed(3)))
    b = list(class_batch_indices(labels, 10, 2, 20, torch.Generator().manual_seed(3)))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_classes_are_drawn_roughly_uniformly():
    labels = _labels()
    batches = list(class_batch_indices(labels, 4, 2, 2000, torch.Generator().manual_seed(4)))
    picks = torch.stack([torch.bincount(labels[idx], minlength=5) > 0 for idx in batches]).float().mean(0)
    assert torch.allclose(picks, torch.full((5,), 2 / 5), atol=0.04)  # 2 of 5 classes per batch; ~4 sd


@pytest.mark.parametrize("bs, k", [(10, 3), (10, 6), (100, 2)])
def test_impossible_batches_are_refused(bs, k):
    with pytest.raises(ValueError, match="expected"):
        list(class_batch_indices(_labels(), bs, k, 1, torch.Generator()))


def test_config_rejects_batch_not_divisible_by_classes():
    with pytest.raises(ValueError, match="divisible by batch_classes"):
        RunConfig(batch_size=32, batch_classes=3)


def test_batch_classes_changes_the_key_and_the_trainers_batches():
    g = torch.Generator().manual_seed(5)
    y = torch.arange(60) % 3
    ds = Dataset(
        "toy",
        torch.randn(60, 8, generator=g) + y[:, None],
        y,
        torch.randn(30, 8, generator=g),
        torch.arange(30) % 3,
        ("a", "b", "c"),
    )
    base = RunConfig(model="mlp", norm="bn", data="toy", batch_size=12, steps=5, eval_every=5, model_kw={"widths": [6]})
    skewed = dataclasses.replace(base, batch_classes=2)
    assert base.key() != skewed.key()
    seen = []

    from bnlab.train.probes import Probe

    class Labels(Probe):
        def after_backward(self, ctx):
            seen.append(ctx.y.clone())

    train(skewed, ds, probes=[Labels()])
    train(base, ds, probes=[Labels()])
    assert len(torch.unique(seen[0])) == 2 and torch.bincount(seen[0]).max() == 6
    assert len(torch.unique(seen[1])) == 3  # i.i.d. batch of 12 from 3 balanced classes (this seed)
