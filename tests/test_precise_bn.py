"""bnlab.precise_bn: running stats become the exact statistics of the whole data set."""

import pytest
import torch
from torch import nn

import bnlab
from bnlab.surgery import precise_bn

TOL = dict(rtol=1e-10, atol=1e-12)  # float64 model: pooling batches exactly loses nothing


def _data(sizes, c=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, 5, 4, generator=gen, dtype=torch.float64) * 3 + 2 for n in sizes]


def _direct(x: torch.Tensor, unbiased: bool):
    """Per-channel mean and variance of every value of x (N, C, H, W), straight from torch."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    return flat.mean(1), flat.var(1, unbiased=unbiased)


@pytest.mark.parametrize("sizes", [[8, 8, 8, 8], [7, 1, 13, 3, 8]], ids=["even", "uneven"])
@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("bn_cls", [nn.BatchNorm2d, bnlab.nn.BatchNorm2d])
def test_first_layer_stats_equal_whole_data_set(sizes, unbiased, bn_cls):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 1).double()
    model = nn.Sequential(conv, bn_cls(4, dtype=torch.float64)).eval()
    batches = _data(sizes)
    n = precise_bn(model, batches, unbiased=unbiased)
    assert n == sum(sizes)
    with torch.no_grad():
        mean, var = _direct(conv(torch.cat(batches)), unbiased)
    torch.testing.assert_close(model[1].running_mean, mean, **TOL)
    torch.testing.assert_close(model[1].running_var, var, **TOL)


def test_deeper_layer_sees_batch_normalized_features():
    """Layer 2's input depends on layer 1 normalizing each batch; the reference does that with torch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2)).double()
    batches = _data([5, 9, 2])
    precise_bn(model, batches)
    with torch.no_grad():
        feats = [model[2](torch.relu(nn.functional.batch_norm(b, None, None, training=True))) for b in batches]
        mean, var = _direct(torch.cat(feats), unbiased=False)
    torch.testing.assert_close(model[3].running_mean, mean, **TOL)
    torch.testing.assert_close(model[3].running_var, var, **TOL)


def test_num_samples_cuts_the_last_batch_and_forward_reads_any_structure():
    model = nn.Sequential(nn.BatchNorm2d(3)).double()
    batches = [{"image": b, "label": torch.zeros(len(b))} for b in _data([6, 6, 6])]
    used = precise_bn(model, batches, num_samples=10, forward=lambda m, batch: m(batch["image"]))
    assert used == 10
    mean, var = _direct(torch.cat([batches[0]["image"], batches[1]["image"][:4]]), unbiased=False)
    torch.testing.assert_close(model[0].running_mean, mean, **TOL)
    torch.testing.assert_close(model[0].running_var, var, **TOL)


def test_default_forward_takes_the_inputs_of_a_tuple_batch():
    model = nn.Sequential(nn.BatchNorm2d(3)).double()
    data = _data([4, 5])
    precise_bn(model, [(x, torch.zeros(len(x))) for x in data])
    torch.testing.assert_close(model[0].running_mean, _direct(torch.cat(data), False)[0], **TOL)


def test_momentum_modes_hooks_and_counter_are_restored():
    model = nn.Sequential(nn.BatchNorm2d(3, momentum=0.3), nn.Dropout(), bnlab.nn.BatchNorm2d(3, momentum=None))
    model.eval()
    model[1].train()
    hooks_before = [dict(m._forward_pre_hooks) for m in model]
    precise_bn(model, [x.float() for x in _data([4, 4])])
    assert model[0].momentum == 0.3 and model[2].momentum is None
    assert [m.training for m in model] == [False, True, False]
    assert [dict(m._forward_pre_hooks) for m in model] == hooks_before
    assert int(model[0].num_batches_tracked) == 0 and int(model[2].num_batches_tracked) == 0


def test_failure_restores_running_stats():
    model = nn.Sequential(nn.BatchNorm2d(3))
    before = model[0].running_mean.clone()

    def forward(m, batch):
        m(batch)
        raise RuntimeError("data loader broke")

    with pytest.raises(RuntimeError, match="data loader broke"):
        precise_bn(model, [x.float() for x in _data([4])], forward=forward)
    assert torch.equal(model[0].running_mean, before) and model[0].momentum == 0.1
    assert not model[0]._forward_pre_hooks


def test_refuses_models_without_tracked_bn_and_warns_of_unused_layers():
    with pytest.raises(ValueError, match="found none"):
        precise_bn(nn.Sequential(nn.Linear(2, 2)), [torch.randn(2, 2)])

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.BatchNorm1d(2), nn.BatchNorm1d(2)

        def forward(self, x):
            return self.used(x)

    with pytest.warns(UserWarning, match="saw no input in the forward and keep their running statistics: unused"):
        precise_bn(Branchy(), [torch.randn(4, 2)])  # as torch.optim.swa_utils.update_bn, which accepts it
