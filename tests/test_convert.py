"""bnlab.convert: layer swaps keep state, flags, device and dtype; round trips are exact."""

import pytest
import torch
from torch import nn

import bnlab
from bnlab.surgery import convert
from bnlab.surgery.convert import is_batchnorm


def _trained(model: nn.Module, x: torch.Tensor, steps: int = 3) -> nn.Module:
    """A few training forwards so the running stats and num_batches_tracked are not defaults."""
    model.train()
    with torch.no_grad():
        for i in range(steps):
            model(x + i)
    return model


def _cnn(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8, momentum=0.2, eps=1e-3),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 6, 3), nn.BatchNorm2d(6, affine=False)),
        nn.Flatten(),
        nn.Linear(6 * 6 * 6, 5),
        nn.BatchNorm1d(5, momentum=None),
    ).to(dtype)


def _bn_types(model):
    return [type(m) for m in model.modules() if is_batchnorm(m)]


def test_torch_to_bnlab_swaps_every_layer_and_keeps_outputs():
    x = torch.randn(4, 3, 8, 8)
    ref = _trained(_cnn(), x)
    out = convert(ref, "bnlab")
    assert _bn_types(out) == [bnlab.nn.BatchNorm2d, bnlab.nn.BatchNorm2d, bnlab.nn.BatchNorm1d]
    for mode in (False, True):  # eval first: training forwards change the running stats
        ref.train(mode)
        out.train(mode)
        torch.testing.assert_close(out(x), ref(x), rtol=1e-5, atol=1e-5)
    assert out[1].momentum == 0.2 and out[1].eps == 1e-3 and out[3][1].affine is False
    assert out[6].momentum is None


@pytest.mark.parametrize("training", [True, False])
def test_round_trip_gives_identical_state_dict_and_outputs(training):
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    ref = _trained(_cnn(torch.float64), x)
    ref.train(training)
    back = convert(convert(ref, "bnlab"), "torch")
    assert [type(m) for m in back.modules()] == [type(m) for m in ref.modules()]
    assert back.state_dict().keys() == ref.state_dict().keys()
    for k, v in ref.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    assert all(a.training == b.training for a, b in zip(back.modules(), ref.modules()))
    ref.eval(), back.eval()
    assert torch.equal(back(x), ref(x))


def test_conversion_keeps_dtype_requires_grad_and_training_flag():
    bn = nn.BatchNorm3d(4, dtype=torch.float64).eval()
    bn.weight.requires_grad_(False)
    new = convert(bn, "bnlab")
    assert isinstance(new, bnlab.nn.BatchNorm3d)
    assert new.weight.dtype == torch.float64 and new.running_var.dtype == torch.float64
    assert new.weight.requires_grad is False and new.bias.requires_grad is True
    assert new.training is False


def test_bias_false_and_untracked_layers_round_trip():
    layer = bnlab.nn.BatchNorm1d(3, bias=False, track_running_stats=False)
    there = convert(layer, "torch")
    assert there.bias is None and there.running_mean is None
    back = convert(there, "bnlab")
    x = torch.randn(6, 3)
    assert torch.equal(back(x), layer(x))


def test_inplace_false_leaves_original_and_inplace_shares_parameters():
    model = _cnn()
    copy_ = convert(model, "bnlab")
    assert type(model[1]) is nn.BatchNorm2d and copy_[1].weight is not model[1].weight
    opt_param = model[1].weight
    same = convert(model, "bnlab", inplace=True)
    assert same is model and type(model[1]) is bnlab.nn.BatchNorm2d
    assert model[1].weight is opt_param  # an optimizer built before the swap still updates it


def test_hooks_move_with_the_layer():
    bn = nn.BatchNorm1d(3)
    seen = []
    handle = bn.register_forward_hook(lambda m, i, o: seen.append(type(m)))
    new = convert(bn, "bnlab", inplace=True)
    new(torch.randn(4, 3))
    assert seen == [bnlab.nn.BatchNorm1d]
    handle.remove()
    new(torch.randn(4, 3))
    assert len(seen) == 1


def test_unknown_batchnorm_subclass_is_refused():
    class ScaledBN(nn.BatchNorm2d):
        def forward(self, x):
            return 2 * super().forward(x)

    model = nn.Sequential(nn.Conv2d(3, 4, 1), ScaledBN(4))
    with pytest.raises(TypeError, match="ScaledBN.*'1'"):
        convert(model, "bnlab")


def test_unknown_target_and_dimension_free_source_are_refused():
    with pytest.raises(ValueError, match="expected to= one of"):
        convert(nn.BatchNorm2d(3), "bogus")
    with pytest.raises(ValueError, match="needs dims=1, 2 or 3"):
        convert(nn.SyncBatchNorm(3), "bnlab")
    assert isinstance(convert(nn.SyncBatchNorm(3), "bnlab", dims=2), bnlab.nn.BatchNorm2d)


def test_groupnorm_maps_parameters_and_matches_single_sample_batch_norm():
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2), bn.bias.normal_()
    gn = convert(bn, "groupnorm", num_groups=64)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 6 and gn.eps == bn.eps
    assert torch.equal(gn.weight, bn.weight) and torch.equal(gn.bias, bn.bias)
    x = torch.randn(3, 6, 5, 5, dtype=torch.float32)
    # GroupNorm with one channel per group = training-mode BN applied to each sample alone
    expected = torch.cat([bn.train()(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(gn(x), expected, rtol=1e-5, atol=1e-5)


def test_groupnorm_picks_a_divisor_of_the_channels():
    assert convert(nn.BatchNorm2d(48), "groupnorm").num_groups == 24  # 32 does not divide 48
    assert convert(nn.BatchNorm2d(64), "groupnorm").num_groups == 32
    with pytest.raises(ValueError, match="bias=False"):
        convert(nn.BatchNorm2d(4, bias=False), "groupnorm")


# --- the variants ------------------------------------------------------------------------------


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype, k


@pytest.mark.parametrize(
    "to,options,cls2d,cls1d",
    [
        ("sync", {}, bnlab.nn.SyncBatchNorm, bnlab.nn.SyncBatchNorm),
        ("ghost", {"virtual_batch_size": 2}, bnlab.nn.GhostBatchNorm2d, bnlab.nn.GhostBatchNorm1d),
        ("frozen", {}, bnlab.nn.FrozenBatchNorm2d, bnlab.nn.FrozenBatchNorm1d),
    ],
)
@pytest.mark.parametrize("back", ["bnlab", "torch"])
def test_variant_round_trip_gives_identical_state_dict_and_outputs(to, options, cls2d, cls1d, back):
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    ref = _trained(_cnn(torch.float64), x)
    ref.eval()
    ref[1].weight.requires_grad_(False)
    if back == "bnlab":
        ref = convert(ref, "bnlab")
    there = convert(ref, to, **options)
    assert [type(there[1]), type(there[3][1]), type(there[6])] == [cls2d, cls2d, cls1d]
    torch.testing.assert_close(there(x), ref(x), rtol=0, atol=1e-12)  # eval: the same affine map
    again = convert(there, back)
    assert [type(m) for m in again.modules()] == [type(m) for m in ref.modules()]
    _assert_same_state(again, ref)
    assert [p.requires_grad for p in again.parameters()] == [p.requires_grad for p in ref.parameters()]
    assert again[6].momentum is None and again[1].momentum == 0.2
    assert torch.equal(again(x), ref(x))


def test_sync_target_works_with_revert_sync_batchnorm():
    model = convert(_cnn(), "sync")
    assert all(type(m) is bnlab.nn.SyncBatchNorm for m in model.modules() if is_batchnorm(m))
    back = bnlab.nn.revert_sync_batchnorm(model)
    assert [type(m) for m in back.modules() if is_batchnorm(m)] == [
        bnlab.nn.BatchNorm2d,
        bnlab.nn.BatchNorm2d,
        bnlab.nn.BatchNorm1d,
    ]


def test_ghost_needs_a_virtual_batch_size_and_trains_per_virtual_batch():
    with pytest.raises(ValueError, match="virtual_batch_size"):
        convert(nn.BatchNorm2d(3), "ghost")
    ghost = convert(nn.BatchNorm2d(3), "ghost", virtual_batch_size=2)
    x = torch.randn(4, 3, 5, 5)
    ref = nn.BatchNorm2d(3)
    expected = torch.cat([ref(x[:2]), ref(x[2:])])  # each virtual batch normalized on its own
    torch.testing.assert_close(ghost(x), expected, rtol=1e-5, atol=1e-5)


def test_frozen_target_copies_the_eval_map_and_refuses_untracked_layers():
    bn = _trained(nn.Sequential(nn.BatchNorm2d(3)), torch.randn(4, 3, 5, 5))[0].eval()
    frozen = convert(bn, "frozen")
    assert isinstance(frozen, bnlab.nn.FrozenBatchNorm2d) and list(frozen.parameters()) == []
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(frozen(x), bn(x), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="track_running_stats=False"):
        convert(nn.BatchNorm2d(3, track_running_stats=False), "frozen")
