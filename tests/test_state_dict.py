"""Checkpoints move between torch.nn and bnlab in both directions; repr and names match torch's."""

import pytest
import torch

import bnlab

PAIRS = [
    (bnlab.nn.BatchNorm1d, torch.nn.BatchNorm1d),
    (bnlab.nn.BatchNorm2d, torch.nn.BatchNorm2d),
    (bnlab.nn.BatchNorm3d, torch.nn.BatchNorm3d),
]
FLAGS = [dict(), dict(affine=False), dict(bias=False), dict(track_running_stats=False), dict(momentum=None, eps=1e-3)]


def _trained(cls, **kw):
    bn = cls(4, **kw)
    shape = (6, 4) + (3,) * {"BatchNorm1d": 1, "BatchNorm2d": 2, "BatchNorm3d": 3}[cls.__name__]
    for _ in range(3):
        bn(torch.randn(shape) * 2 + 1)
    with torch.no_grad():
        for p in bn.parameters():
            p.add_(torch.randn_like(p))
    return bn


@pytest.mark.parametrize("ours_cls,ref_cls", PAIRS)
@pytest.mark.parametrize("flags", FLAGS, ids=str)
def test_same_names_and_repr_as_torch(ours_cls, ref_cls, flags):
    ours, ref = ours_cls(4, **flags), ref_cls(4, **flags)
    assert repr(ours) == repr(ref)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in ref.named_buffers()]
    assert list(ours.state_dict()) == list(ref.state_dict())


@pytest.mark.parametrize("ours_cls,ref_cls", PAIRS)
@pytest.mark.parametrize("flags", FLAGS, ids=str)
def test_state_dict_round_trips_both_ways(ours_cls, ref_cls, flags):
    ref = _trained(ref_cls, **flags)
    ours = ours_cls(4, **flags)
    ours.load_state_dict(ref.state_dict())  # strict
    for k, v in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    back = ref_cls(4, **flags)
    back.load_state_dict(_trained(ours_cls, **flags).state_dict())
    assert list(back.state_dict()) == list(ref.state_dict())


def test_old_checkpoint_without_num_batches_tracked_loads():
    ref = _trained(torch.nn.BatchNorm2d)
    state = ref.state_dict()
    del state["num_batches_tracked"]
    state._metadata[""]["version"] = 1  # as saved before num_batches_tracked existed
    ours = bnlab.nn.BatchNorm2d(4)
    ours(torch.randn(4, 4, 3, 3))  # advance our counter: the old checkpoint must not reset it to garbage
    ours.load_state_dict(state)
    assert torch.equal(ours.running_mean, ref.running_mean)
    assert int(ours.num_batches_tracked) == 1  # kept, as torch does
    fresh = bnlab.nn.BatchNorm2d(4)
    fresh.load_state_dict(state)
    assert int(fresh.num_batches_tracked) == 0


def test_current_checkpoint_missing_num_batches_tracked_is_an_error():
    state = torch.nn.BatchNorm2d(4).state_dict()
    del state["num_batches_tracked"]
    with pytest.raises(RuntimeError, match="num_batches_tracked"):
        bnlab.nn.BatchNorm2d(4).load_state_dict(state)


def test_bnlab_layer_inside_a_torch_model_checkpoint():
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    ours = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), bnlab.nn.BatchNorm2d(8), torch.nn.ReLU())
    ref.train()
    ref(torch.randn(4, 3, 8, 8))
    ours.load_state_dict(ref.state_dict())
    ours.eval(), ref.eval()
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device_dtype", [torch.float64, torch.bfloat16])
def test_factory_kwargs_set_dtype_of_params_and_buffers(device_dtype):
    bn = bnlab.nn.BatchNorm2d(4, dtype=device_dtype, device="cpu")
    assert bn.weight.dtype == bn.running_var.dtype == device_dtype
    assert bn.num_batches_tracked.dtype == torch.long
