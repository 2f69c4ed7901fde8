"""bnlab.scratch.BatchNorm2d, the from-scratch module the report shows, against torch.nn.BatchNorm2d.

Reference: torch's own layer. Tolerance: 1e-10 absolute in float64 (the two compute the same
formulas in a different order; float64 rounding differences stay near 1e-15 on O(1) values).
"""

import pytest
import torch

from bnlab import scratch

TOL = dict(rtol=0, atol=1e-10)


def _pair(channels, momentum=0.1, eps=1e-5):
    ours = scratch.BatchNorm2d(channels, eps=eps, momentum=momentum).double()
    ref = torch.nn.BatchNorm2d(channels, eps=eps, momentum=momentum).double()
    gen = torch.Generator().manual_seed(channels)
    with torch.no_grad():  # non-trivial gamma and beta, the same in both
        for p in (ours.weight, ours.bias):
            p.copy_(torch.randn(channels, generator=gen, dtype=torch.float64))
    ref.load_state_dict(ours.state_dict())
    return ours, ref


@pytest.mark.parametrize("momentum", [0.1, 0.37, 1.0])
@pytest.mark.parametrize("shapes", [[(8, 3, 5, 5), (4, 3, 2, 7), (1, 3, 4, 4)], [(2, 6, 1, 3), (16, 6, 3, 3)]])
def test_training_steps_match_torch_in_outputs_gradients_and_running_statistics(shapes, momentum):
    ours, ref = _pair(shapes[0][1], momentum)
    gen = torch.Generator().manual_seed(0)
    for shape in shapes:  # batches of different sizes, one of them a single example
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * 3 + 2
        grad = torch.randn(shape, generator=gen, dtype=torch.float64)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), ref(xb)
        torch.testing.assert_close(ya, yb, **TOL)
        ya.backward(grad)
        yb.backward(grad)
        torch.testing.assert_close(xa.grad, xb.grad, **TOL)
        torch.testing.assert_close(ours.weight.grad, ref.weight.grad, **TOL)
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, **TOL)
        torch.testing.assert_close(ours.running_mean, ref.running_mean, **TOL)
        torch.testing.assert_close(ours.running_var, ref.running_var, **TOL)  # the unbiased variance
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == len(shapes)


def test_evaluation_uses_the_running_statistics_like_torch():
    ours, ref = _pair(4)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(6, 4, 3, 3, generator=gen, dtype=torch.float64) * 2 - 1
        ours(x), ref(x)
    ours.eval(), ref.eval()
    x = torch.randn(1, 4, 3, 3, generator=gen, dtype=torch.float64)  # one example alone is fine in eval
    torch.testing.assert_close(ours(x), ref(x), **TOL)
    before = ours.running_mean.clone()
    ours(x)
    assert torch.equal(ours.running_mean, before)  # evaluation leaves the statistics alone


def test_state_dict_is_torchs():
    ours, ref = _pair(5)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert ours.weight.shape == ours.bias.shape == (5,)
    torch.nn.BatchNorm2d(5).double().load_state_dict(ours.state_dict())


def test_wrong_input_and_one_value_per_channel_are_refused_as_torch_does():
    bn = scratch.BatchNorm2d(3)
    with pytest.raises(ValueError, match=r"expected 4D input \(got 3D input\)"):
        bn(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(torch.randn(1, 3, 1, 1))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.BatchNorm2d(3)(torch.randn(1, 3, 1, 1))
