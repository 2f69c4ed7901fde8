"""Batch Renorm's warm-up inside the layer (warmup_steps): plain BN first, then relaxed limits."""

import pytest
import torch

from bnlab import nn as bnn
from bnlab.nn.renorm import BatchRenorm1d, compressed_warmup, renorm_warmup


def test_compressed_warmup_keeps_the_papers_proportions():
    # Paper: hold 5k, d_max reached at 25k, r_max at 40k; compressed to 40k it is the paper's schedule.
    for step in (0, 5000, 10000, 25000, 30000, 40000, 50000):
        assert compressed_warmup(step, 40000) == renorm_warmup(step)
    assert compressed_warmup(0, 80) == (1.0, 0.0)
    assert compressed_warmup(80, 80) == (3.0, 5.0)
    assert compressed_warmup(50, 80) == pytest.approx((1 + 2 * 40 / 70, 5.0))


def test_layer_follows_the_warmup_by_num_batches_tracked():
    torch.manual_seed(0)
    warm = BatchRenorm1d(3, r_max=3.0, d_max=5.0, warmup_steps=16)
    fixed = BatchRenorm1d(3, r_max=1.0, d_max=0.0)
    for step in range(1, 21):
        x = torch.randn(8, 3) * 2 + 1
        expected = compressed_warmup(step, 16)
        fixed.r_max, fixed.d_max = expected  # the reference: limits set by hand each step
        torch.testing.assert_close(warm(x), fixed(x), rtol=0, atol=0)
        assert int(warm.num_batches_tracked) == step
    assert warm.limits() == compressed_warmup(20, 16)


def test_first_steps_are_plain_bn():
    torch.manual_seed(1)
    warm = BatchRenorm1d(4, warmup_steps=80)  # hold = 10 steps
    bn = bnn.BatchNorm1d(4)
    for _ in range(10):
        x = torch.randn(6, 4) * 3 - 2
        torch.testing.assert_close(warm(x), bn(x), rtol=1e-6, atol=1e-6)


def test_no_warmup_uses_the_given_limits():
    m = BatchRenorm1d(2, r_max=1.5, d_max=0.5)
    assert m.limits() == (1.5, 0.5)


@pytest.mark.parametrize("bad", [-1, 2.5, True])
def test_bad_warmup_steps_are_refused(bad):
    with pytest.raises(ValueError, match="warmup_steps"):
        BatchRenorm1d(2, warmup_steps=bad)
