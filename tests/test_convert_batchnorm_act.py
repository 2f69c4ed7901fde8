"""convert(to="batchnorm_act") fuses BN + the activation after it, and converting back restores both."""

import pytest
import torch
from torch import nn

import bnlab
from bnlab.surgery.fuse_act import FusedActivation


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3),
        bnlab.nn.BatchNorm2d(8),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(128, 10),
        nn.BatchNorm1d(10),
        nn.SiLU(),
    ).double()


def test_fused_model_matches_original_in_training_outputs_and_gradients():
    ref = _model()
    fused = bnlab.convert(ref, to="batchnorm_act")
    assert [type(fused[i]).__name__ for i in (1, 4, 8)] == ["BatchNormAct2d", "BatchNormAct2d", "BatchNormAct1d"]
    assert isinstance(fused[2], FusedActivation) and fused[4].negative_slope == 0.2
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    ys = []
    for m in (ref, fused):
        y = m(x)
        y.pow(2).sum().backward()
        ys.append(y)
    torch.testing.assert_close(ys[1], ys[0], rtol=1e-12, atol=1e-12)
    for (name, p), q in zip(ref.named_parameters(), fused.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-10, atol=1e-12, msg=name)
    for a, b in zip(ref.buffers(), fused.buffers()):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=0)


@pytest.mark.parametrize("back", ["torch", "bnlab"])
def test_round_trip_restores_activations_and_state(back):
    ref = _model().eval()
    again = bnlab.convert(bnlab.convert(ref, to="batchnorm_act"), to=back)
    assert [
        type(m)
        for m in again
        if not isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, bnlab.nn.BatchNorm1d, bnlab.nn.BatchNorm2d))
    ] == [type(m) for m in ref if not isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, bnlab.nn.BatchNorm2d))]
    assert again[5].negative_slope == 0.2
    assert list(again.state_dict()) == list(ref.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(again(x), ref(x), rtol=0, atol=0)
    assert not again.training


def test_pairs_it_cannot_fuse_are_left_alone():
    class Custom(nn.Module):  # children in registration order, but forward decides the data flow
        def __init__(self):
            super().__init__()
            self.bn, self.act = nn.BatchNorm1d(4), nn.ReLU()

        def forward(self, x):
            return self.bn(self.act(x))

    model = nn.Sequential(nn.BatchNorm1d(4), nn.Tanh(), Custom())
    out = bnlab.convert(model, to="batchnorm_act")
    assert type(out[0]) is nn.BatchNorm1d and type(out[1]) is nn.Tanh
    assert type(out[2].bn) is nn.BatchNorm1d and type(out[2].act) is nn.ReLU
