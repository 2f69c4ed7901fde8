"""bnlab.adapt: each method against an independent computation, what it restores, and its errors.

References are written here in plain torch ops (statistics by torch.mean/var on concatenated data,
torch's functional batch_norm in training mode, a hand-written entropy gradient and Adam step).
Float64 throughout, so the tolerances (1e-10 unless stated) are rounding, not approximation.
"""

import ast
import copy
import math
import pathlib

import pytest
import torch
import torch.nn.functional as TF
from torch import nn

import bnlab
from bnlab import nn as bnn
from bnlab.adaptation import Adaptation, TestBatchNorm, Tent, mix_statistics, softmax_entropy

TOL = 1e-10


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _net(bn=nn.BatchNorm2d, act=nn.ReLU, classes=3):
    """conv-BN-ReLU-conv-BN-ReLU-pool-linear on (N, 2, 6, 6) images, BN statistics moved off (0, 1)."""
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(2, 4, 3),
        bn(4),
        act(),
        nn.Conv2d(4, 5, 3),
        bn(5),
        act(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, classes),
    )
    with torch.no_grad():
        for layer in (m[1], m[4]):
            if getattr(layer, "weight", None) is not None:
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.uniform_(-0.5, 0.5)
            layer.running_mean.uniform_(-1, 1)
            layer.running_var.uniform_(0.5, 2)
    return m.eval()


def _data(n=22, seed=1, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 6, 6, generator=g) * 2 + 1 + shift


# ---- AdaBN ("stats") ---------------------------------------------------------------------------


def test_adabn_statistics_equal_those_of_the_concatenated_target_data():
    model = _net()
    x = _data(22)
    batches = [x[:7], x[7:10], x[10:]]  # uneven sizes
    result = bnlab.adapt(model, batches, method="stats")
    z = model[0](x).detach()  # the first BN's input over all target samples: (22, 4, 4, 4)
    assert torch.allclose(model[1].running_mean, z.mean((0, 2, 3)), atol=TOL, rtol=0)
    assert torch.allclose(model[1].running_var, z.var((0, 2, 3), unbiased=False), atol=TOL, rtol=0)
    assert result.samples == 22 and result.batches == 3 and result.layers == ["1", "4"]


def test_adabn_deeper_layer_sees_the_batch_normalized_features_of_one_batch():
    model = _net()
    x = _data(16)
    bnlab.adapt(model, [x], method="stats")
    z1 = model[0](x).detach()
    h = TF.relu(TF.batch_norm(z1, None, None, model[1].weight, model[1].bias, training=True, eps=model[1].eps))
    z2 = model[3](h).detach()
    assert torch.allclose(model[4].running_mean, z2.mean((0, 2, 3)), atol=TOL, rtol=0)
    assert torch.allclose(model[4].running_var, z2.var((0, 2, 3), unbiased=False), atol=TOL, rtol=0)


def test_adabn_changes_only_the_running_statistics_and_restores_the_rest():
    model = nn.Sequential(_net(), nn.Dropout(0.5))
    model.train()
    model[0][1].eval()  # a mixed-mode model: one BN layer in eval mode
    model[0][1].momentum = None
    hook_calls = []
    model[0][4].register_forward_hook(lambda *a: hook_calls.append(1))
    model[0][0].weight.requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    modes = [m.training for m in model.modules()]
    result = bnlab.adapt(model, [_data(10), _data(12, seed=2)], method="stats")
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"0.1.running_mean", "0.1.running_var", "0.4.running_mean", "0.4.running_var"}
    assert set(result.changed) == changed
    assert [m.training for m in model.modules()] == modes
    assert model[0][1].momentum is None and model[0][4].momentum == 0.1
    assert len(hook_calls) == 2 and len(model[0][4]._forward_hooks) == 1
    assert not model[0][0].weight.requires_grad and model[0][3].weight.requires_grad
    result.restore(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_adabn_uses_at_most_num_samples_and_a_custom_forward():
    model = _net()
    x = _data(20)
    batches = [{"image": x[:8]}, {"image": x[8:]}]
    result = bnlab.adapt(model, batches, method="stats", num_samples=12, forward=lambda m, b: m(b["image"]))
    z = model[0](x[:12]).detach()
    assert result.samples == 12
    assert torch.allclose(model[1].running_mean, z.mean((0, 2, 3)), atol=TOL, rtol=0)


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("layer", ["torch", "bnlab"])
def test_1d_and_3d_layers(dims, layer):
    conv = {1: nn.Conv1d, 3: nn.Conv3d}[dims]
    bn = {
        ("torch", 1): nn.BatchNorm1d,
        ("torch", 3): nn.BatchNorm3d,
        ("bnlab", 1): bnn.BatchNorm1d,
        ("bnlab", 3): bnn.BatchNorm3d,
    }[(layer, dims)]
    torch.manual_seed(0)
    model = nn.Sequential(conv(2, 3, 2), bn(3)).eval()
    x = torch.randn(6, 2, *([4] * dims)) * 3 - 1
    bnlab.adapt(model, [x[:2], x[2:]], method="stats")
    z = model[0](x).detach()
    over = (0,) + tuple(range(2, z.dim()))
    assert torch.allclose(model[1].running_mean, z.mean(over), atol=TOL, rtol=0)
    assert torch.allclose(model[1].running_var, z.var(over, unbiased=False), atol=TOL, rtol=0)
    with TestBatchNorm(model):
        y = model(x)
    ref = TF.batch_norm(z, None, None, model[1].weight, model[1].bias, training=True, eps=model[1].eps)
    assert torch.allclose(y, ref, atol=TOL, rtol=0)


# ---- test-time batch statistics ---------------------------------------------------------------------


def _train_mode_reference(model, x):
    """The model's forward with every BN normalizing by the batch, in torch's functional BN (no buffers)."""
    h = x
    for layer in model:
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) or isinstance(layer, bnn.BatchNorm2d):
            h = TF.batch_norm(h, None, None, layer.weight, layer.bias, training=True, eps=layer.eps)
        else:
            h = layer(h)
    return h


@pytest.mark.parametrize("train_mode", [False, True])
def test_test_batch_normalizes_with_the_batch_and_leaves_the_statistics_alone(train_mode):
    model = _net().train(train_mode)
    x = _data(9).requires_grad_(True)
    before = {k: (v, v.clone()) for k, v in model.state_dict(keep_vars=True).items()}
    with bnlab.adapt(model, method="test_batch"):
        y = model(x)
    (gx,) = torch.autograd.grad(y.square().sum(), x)
    ref = _train_mode_reference(model, x)
    (gref,) = torch.autograd.grad(ref.square().sum(), x)
    assert torch.allclose(y, ref, atol=TOL, rtol=0) and torch.allclose(gx, gref, atol=TOL, rtol=0)
    for k, v in model.state_dict(keep_vars=True).items():
        assert v is before[k][0] and torch.equal(v, before[k][1]), k  # the same tensors, unchanged
    assert model.training == train_mode and all(m.training == train_mode for m in model.modules())
    assert model[1].track_running_stats and model[4].track_running_stats


def test_prior_mixes_source_and_batch_statistics_as_schneider_et_al():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4))
    torch.manual_seed(3)
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
        model[1].weight.uniform_(0.5, 1.5)
    model.eval()
    x = _data(5)
    z = model[0](x).detach()
    n, prior, bn = 5, 12.0, model[1]
    w = prior / (prior + n)
    mean = w * bn.running_mean + (1 - w) * z.mean((0, 2, 3))
    var = w * bn.running_var + (1 - w) * z.var((0, 2, 3), unbiased=False)
    ref = (z - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + bn.eps) * bn.weight.view(
        1, -1, 1, 1
    ) + bn.bias.view(1, -1, 1, 1)
    with bnlab.adapt(model, method="test_batch", prior=prior):
        y = model(x)
    assert torch.allclose(y, ref, atol=TOL, rtol=0)
    assert not model.training


def test_prior_zero_is_the_batch_alone_and_infinite_prior_the_source_alone():
    model = _net()
    x = _data(6)
    with TestBatchNorm(model):
        alone = model(x)
    with TestBatchNorm(model, prior=0):
        zero = model(x)
    with TestBatchNorm(model, prior=math.inf):
        source = model(x)
    assert torch.allclose(zero, alone, atol=1e-9, rtol=0)
    assert torch.allclose(source, model(x), atol=TOL, rtol=0)


def test_mix_statistics_weights():
    m, v = mix_statistics(torch.zeros(2), torch.ones(2), torch.full((2,), 4.0), torch.full((2,), 3.0), n=3, prior=1)
    assert torch.allclose(m, torch.full((2,), 3.0)) and torch.allclose(v, torch.full((2,), 2.5))


@pytest.mark.parametrize("kind", ["torch", "bnlab", "torch_sync", "bnlab_sync", "ghost", "batchnorm_act"])
def test_every_bn_kind_gives_the_same_adaptation(kind):
    """torch and bnlab layers, SyncBatchNorm (one process) and layers after bnlab.convert agree with the
    reference computed on the torch model."""
    reference = _net()
    x, target = _data(8), _data(12, seed=5, shift=2.0)
    ref_model = copy.deepcopy(reference)
    bnlab.adapt(ref_model, [target], method="stats")
    with TestBatchNorm(reference):
        ref_tb = reference(x)
    if kind == "torch":
        model = copy.deepcopy(reference)
    elif kind == "torch_sync":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(reference))
    elif kind == "bnlab_sync":
        model = bnlab.convert(reference, to="sync")
    elif kind == "ghost":
        model = bnlab.convert(reference, to="ghost", virtual_batch_size=64)  # one ghost per batch here
    else:
        model = bnlab.convert(reference, to="bnlab" if kind == "bnlab" else kind)
    with TestBatchNorm(model):
        assert torch.allclose(model(x), ref_tb, atol=1e-9, rtol=0)
    bnlab.adapt(model, [target], method="stats")
    assert torch.allclose(model(x), ref_model(x), atol=1e-9, rtol=0)


def test_masked_bn_uses_the_valid_positions_of_the_batch():
    layer = bnn.MaskedBatchNorm1d(3).eval()
    with torch.no_grad():
        layer.running_mean.fill_(5.0)
    x = torch.randn(4, 3, 6)
    mask = torch.arange(6) < torch.tensor([6, 4, 2, 5])[:, None]
    with TestBatchNorm(layer):
        y = layer(x, mask)
    valid = x.permute(0, 2, 1)[mask]  # (K, 3)
    ref = (valid - valid.mean(0)) / torch.sqrt(valid.var(0, unbiased=False) + layer.eps)
    assert torch.allclose(y.permute(0, 2, 1)[mask], ref, atol=1e-9, rtol=0)


# ---- TENT --------------------------------------------------------------------------------------


def _entropy_step_by_hand(model, batches, lr):
    """TENT written out: forward with batch statistics (torch's functional BN), mean softmax entropy,
    gradient w.r.t. the BN γ/β only, and Adam's update (betas 0.9, 0.999, eps 1e-8), batch by batch."""
    gb = [model[1].weight, model[1].bias, model[4].weight, model[4].bias]
    values = [p.detach().clone() for p in gb]
    m1 = [torch.zeros_like(v) for v in values]
    m2 = [torch.zeros_like(v) for v in values]
    outputs = []
    for t, x in enumerate(batches, 1):
        params = [v.clone().requires_grad_(True) for v in values]
        h = TF.relu(TF.batch_norm(model[0](x).detach(), None, None, params[0], params[1], training=True))
        h = TF.relu(TF.batch_norm(model[3](h), None, None, params[2], params[3], training=True))
        logits = model[8](h.mean((2, 3)))
        p = logits.softmax(1)
        loss = -(p * p.log()).sum(1).mean()
        grads = torch.autograd.grad(loss, params)
        outputs.append(logits.detach())
        for i, g in enumerate(grads):
            m1[i] = 0.9 * m1[i] + 0.1 * g
            m2[i] = 0.999 * m2[i] + 0.001 * g * g
            mhat, vhat = m1[i] / (1 - 0.9**t), m2[i] / (1 - 0.999**t)
            values[i] = values[i] - lr * mhat / (vhat.sqrt() + 1e-8)
    return values, outputs


def test_tent_update_equals_a_hand_written_entropy_step_on_gamma_and_beta_only():
    model = _net()
    batches = [_data(10, seed=7, shift=1.0), _data(10, seed=8, shift=1.0)]
    want, want_outputs = _entropy_step_by_hand(model, batches, lr=0.01)
    before = copy.deepcopy(model.state_dict())
    result = bnlab.adapt(model, batches, method="tent", lr=0.01, keep_outputs=True)
    got = [model[1].weight, model[1].bias, model[4].weight, model[4].bias]
    assert all(torch.allclose(g, w, atol=1e-9, rtol=0) for g, w in zip(got, want))
    assert all(torch.allclose(o, w, atol=1e-9, rtol=0) for o, w in zip(result.outputs, want_outputs))
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == {"1.weight", "1.bias", "4.weight", "4.bias"}  # no other parameter, no statistics
    assert set(result.changed) == moved and all(torch.equal(result.changed[k], before[k]) for k in moved)
    assert len(result.entropies) == 2 and result.samples == 20


def test_tent_restores_modes_flags_and_grads_and_leaves_other_grads_alone():
    model = nn.Sequential(_net(), nn.Dropout(0.5)).train()
    model[0][1].weight.requires_grad_(False)  # a frozen γ: TENT updates it anyway, then restores the flag
    model[0][0].weight.grad = torch.ones_like(model[0][0].weight)
    model[0][4].bias.grad = torch.full_like(model[0][4].bias, 3.0)
    modes = [m.training for m in model.modules()]
    bnlab.adapt(model, [_data(8)], method="tent")
    assert [m.training for m in model.modules()] == modes
    assert not model[0][1].weight.requires_grad and model[0][1].bias.requires_grad
    assert torch.equal(model[0][0].weight.grad, torch.ones_like(model[0][0].weight))
    assert torch.equal(model[0][4].bias.grad, torch.full_like(model[0][4].bias, 3.0))


def test_tent_episodic_adapts_every_batch_from_the_source_and_ends_there():
    model = _net()
    b1, b2 = _data(8, seed=3, shift=1.0), _data(8, seed=4, shift=1.0)
    before = copy.deepcopy(model.state_dict())
    result = bnlab.adapt(model, [b1, b2], method="tent", episodic=True, lr=0.05, keep_outputs=True)
    fresh = Tent(copy.deepcopy(_net()), lr=0.05)
    assert torch.allclose(result.outputs[1], fresh(b2), atol=TOL, rtol=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and result.changed == {}


def test_tent_reset_and_sgd_option():
    model = _net()
    tent = Tent(model, optimizer="sgd", lr=0.1, steps=2)
    source = model[1].weight.detach().clone()
    tent(_data(8, shift=1.0))
    assert not torch.equal(model[1].weight, source) and len(tent.entropies) == 2
    assert isinstance(tent.optimizer, torch.optim.SGD)
    tent.reset()
    assert torch.equal(model[1].weight, source) and tent.changed() == {}


def test_tent_loss_option_sums_two_models_mean_entropies_as_each_alone():
    """``loss``: one forward of two models side by side, minimizing the sum of their mean entropies,
    moves each model's γ/β exactly as its own Tent would (the gradients do not mix)."""
    a, b = _net(), _net()
    with torch.no_grad():
        b[1].weight.mul_(1.5)
    xa, xb = _data(8, seed=5, shift=1.0), _data(8, seed=6, shift=1.0)
    pair = nn.ModuleList([copy.deepcopy(a), copy.deepcopy(b)])
    sources = [m[1].weight.detach().clone() for m in (a, b)]

    def both(models, batch):
        return torch.stack([models[0](batch[0]), models[1](batch[1])])  # (2, N, classes)

    tent = Tent(
        pair, lr=0.05, forward=both, loss=lambda out: softmax_entropy(out.flatten(0, 1)).view(2, -1).mean(1).sum()
    )
    out = tent((xa, xb))
    for i, (alone, x) in enumerate(((a, xa), (b, xb))):
        assert torch.allclose(out[i], Tent(alone, lr=0.05)(x), atol=TOL, rtol=0)
        assert torch.allclose(pair[i][1].weight, alone[1].weight, atol=TOL, rtol=0)
        assert not torch.equal(pair[i][1].weight, sources[i])  # it adapted
    with pytest.raises(TypeError, match="expected the forward to return logits"):
        Tent(_net(), loss=lambda out: out.sum(), forward=lambda m, x: m(x).sum())(xa)


def test_softmax_entropy():
    logits = torch.tensor([[0.0, 0.0], [100.0, 0.0]])
    assert torch.allclose(softmax_entropy(logits), torch.tensor([math.log(2), 0.0]), atol=1e-12)


# ---- a shift whose effect is known: gain and offset before the first conv + BN ---------------------


def _blobs(n, seed):
    """4 classes of 3-channel 8x8 images: a class-specific bump pattern plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    base = torch.zeros(4, 3, 8, 8)
    for c in range(4):
        base[c, c % 3, 2 * c : 2 * c + 3, :] = 1.5
        base[c, (c + 1) % 3, :, 2 * c : 2 * c + 3] = -1.0
    return base[y] + torch.randn(n, 3, 8, 8, generator=g), y


def test_adabn_undoes_a_per_channel_gain_and_offset_before_the_first_conv_and_bn():
    """x' = a_c x + b_c (a_c > 0) before a depthwise conv (no padding) + BN is a per-channel affine map
    of that BN's input, which re-estimated statistics remove exactly: AdaBN on the shifted data gives
    AdaBN-on-clean's outputs, and so the clean accuracy up to the test sample's noise."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, groups=3),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    x_tr, y_tr = _blobs(400, 0)
    x_te, y_te = _blobs(400, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for i in range(150):
        idx = torch.arange(i * 40, i * 40 + 40) % 400
        loss = TF.cross_entropy(model(x_tr[idx]), y_tr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    gain, offset = torch.tensor([3.0, 0.4, 5.0]).view(1, 3, 1, 1), torch.tensor([2.0, -3.0, 1.0]).view(1, 3, 1, 1)
    shifted = x_te * gain + offset

    def acc(m, x):
        with torch.no_grad():
            return float((m(x).argmax(1) == y_te).double().mean())

    clean_acc = acc(model, x_te)
    assert clean_acc > 0.9
    assert acc(model, shifted) < clean_acc - 0.3  # the shift hurts the source model
    on_clean, on_shifted = copy.deepcopy(model), copy.deepcopy(model)
    bnlab.adapt(on_clean, x_te.split(100), method="stats")
    bnlab.adapt(on_shifted, shifted.split(100), method="stats")
    with torch.no_grad():  # exact but for BN's eps, which the gain does not scale: ~eps/var relative
        assert torch.allclose(on_shifted(shifted), on_clean(x_te), atol=1e-3, rtol=1e-3)
        assert torch.equal(on_shifted(shifted).argmax(1), on_clean(x_te).argmax(1))
    assert abs(acc(on_shifted, shifted) - clean_acc) <= 0.03  # 400 test samples: ~1.5 points of noise


def test_mnist1d_cnn_gain_is_undone_exactly_by_adabn():
    """The lab's own 'gain' corruption on the MNIST-1D CNN (zero padding keeps x * g exact)."""
    from bnlab import models

    torch.manual_seed(0)
    model = models.build("cnn", norm="bn", input_shape=(40,), num_classes=10).double().eval()
    for m in model.modules():
        if hasattr(m, "eps"):
            m.eps = 1e-14  # BN's eps is what the gain does not scale: without it the invariance is exact
    x = torch.randn(64, 40)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    bnlab.adapt(a, [x], method="stats")
    bnlab.adapt(b, [3.0 * x], method="stats")
    with torch.no_grad():
        assert torch.allclose(a(x), b(3.0 * x), atol=1e-9, rtol=0)


# ---- bad input ---------------------------------------------------------------------------------


def test_errors_say_what_was_expected():
    plain = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="expected a model with batch-norm layers"):
        bnlab.adapt(plain, [torch.randn(4, 3)])
    frozen = bnlab.convert(_net(), to="frozen")
    for method in ("stats", "tent"):
        with pytest.raises(ValueError, match="nothing to adapt: every batch-norm layer .* is frozen"):
            bnlab.adapt(frozen, [_data(4)], method=method)
    with pytest.raises(ValueError, match="nothing to adapt: every batch-norm layer"):
        TestBatchNorm(frozen)
    no_stats = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError, match="no batch-norm layer .* keeps running statistics"):
        bnlab.adapt(no_stats, [_data(4)], method="stats")
    no_affine = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4, affine=False), nn.Flatten())
    with pytest.raises(ValueError, match="TENT updates BN's γ and β"):
        bnlab.adapt(no_affine, [_data(4)], method="tent")
    for method in ("stats", "tent"):
        with pytest.raises(ValueError, match="expected at least one batch of target data"):
            bnlab.adapt(_net(), [], method=method)
        with pytest.raises(ValueError, match="expected target batches"):
            bnlab.adapt(_net(), None, method=method)
    with pytest.raises(ValueError, match="expected at least one batch"):
        bnlab.adapt(_net(), iter([]), method="test_batch")
    with pytest.raises(ValueError, match="expected method in"):
        bnlab.adapt(_net(), [_data(4)], method="adabn")
    with pytest.raises(ValueError, match=r"expected only \['num_samples'\] with method='stats' \(got prior\)"):
        bnlab.adapt(_net(), [_data(4)], method="stats", prior=16)
    with pytest.raises(ValueError, match="expected prior to be None or a number >= 0"):
        bnlab.adapt(_net(), method="test_batch", prior=-1)
    renorm = nn.Sequential(nn.Conv2d(2, 4, 3), bnn.BatchRenorm2d(4))
    with pytest.raises(TypeError, match="Batch Renorm"):
        bnlab.adapt(renorm, method="test_batch")
    with pytest.raises(TypeError, match="expected an nn.Module"):
        bnlab.adapt("model", [_data(4)])
    with pytest.raises(ValueError, match="expected steps to be an int >= 1"):
        Tent(_net(), steps=0)
    with pytest.raises(ValueError, match="expected optimizer in"):
        Tent(_net(), optimizer="lbfgs")
    with pytest.raises(TypeError, match=r"expected the forward to return logits of shape \(N, classes\)"):
        bnlab.adapt(_net(), [_data(4)], method="tent", forward=lambda m, b: m(b).sum())


def test_adaptation_is_library_code():
    """bnlab.adaptation imports only torch, the standard library and bnlab's library modules."""
    allowed_relative = {"functional", "nn", "surgery", "kernels", "activations"}
    root = pathlib.Path(bnlab.__file__).parent / "adaptation"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
                assert all(n in {"torch", "numpy", "copy", "math", "dataclasses", "typing"} for n in names), path
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    stdlib = {"__future__", "typing", "dataclasses", "collections"}  # collections.abc: Callable & co.
                    assert node.module.split(".")[0] in {"torch", "numpy", *stdlib}, path
                elif node.level == 2:
                    names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                    assert all(n in allowed_relative for n in names), (path, names)
                else:
                    assert node.level == 1, path  # nothing above the package


def test_result_restore_and_test_batch_with_batches():
    model = _net()
    x = _data(10)
    result = bnlab.adapt(model, [x[:5], x[5:]], method="test_batch", keep_outputs=True)
    assert isinstance(result, Adaptation) and result.changed == {} and len(result.outputs) == 2
    with TestBatchNorm(model):
        assert torch.allclose(result.outputs[0], model(x[:5]), atol=TOL, rtol=0)
