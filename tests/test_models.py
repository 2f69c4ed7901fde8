"""The model registry: shapes, placements, the norm registry, noisy BN and weight freezing."""

import functools

import pytest
import torch
from torch import nn

import bnlab
from bnlab import models
from bnlab.models import freeze, noisy_bn

SHAPES = {"cnn": (40,), "mlp": (40,), "cnn2d": (1, 8, 8), "resnet": (3, 8, 8)}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and do not fight over cores shared with others."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("norm", ["none", "bn", "torch_bn", "gn", "ln", "noisy_bn"])
@pytest.mark.parametrize("placement", ["before", "after"])
def test_every_model_norm_and_placement_trains_a_step(name, norm, placement):
    torch.manual_seed(0)
    model = models.build(name, norm=norm, placement=placement, input_shape=SHAPES[name], num_classes=7)
    x = torch.randn(6, *SHAPES[name])
    out = model(x)
    assert out.shape == (6, 7)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


class ReferenceCNN(nn.Module):
    """Greydanus's ConvBase as published (mnist1d repository, models.py), written out here."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(1, 25, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(25, 25, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(25, 25, 3, stride=2, padding=1)
        self.linear = nn.Linear(125, 10)

    def forward(self, x):
        x = x.view(-1, 1, x.shape[-1])
        h = self.conv3(self.conv2(self.conv1(x).relu()).relu()).relu()
        return self.linear(h.view(h.shape[0], -1))


def test_mnist1d_cnn_without_norm_is_the_reference_cnn():
    torch.manual_seed(0)
    ours = models.build("cnn")
    ref = ReferenceCNN()
    ref.load_state_dict(
        {
            "conv1.weight": ours.blocks[0].op.weight,
            "conv1.bias": ours.blocks[0].op.bias,
            "conv2.weight": ours.blocks[1].op.weight,
            "conv2.bias": ours.blocks[1].op.bias,
            "conv3.weight": ours.blocks[2].op.weight,
            "conv3.bias": ours.blocks[2].op.bias,
            "linear.weight": ours.head.weight,
            "linear.bias": ours.head.bias,
        }
    )
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    x = torch.randn(16, 40)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


@pytest.mark.parametrize("placement", ["before", "after"])
def test_placement_orders_norm_and_activation(placement):
    model = models.build("mlp", norm="bn", placement=placement, act="relu")
    seen = {}
    block = model.blocks[0]

    def record(name):
        def hook(module, inputs, output):
            seen[name] = (inputs[0], output)  # returns None: the output is left alone

        return hook

    block.norm.register_forward_hook(record("norm"))
    block.act.register_forward_hook(record("act"))
    model(torch.randn(32, 40))
    if placement == "before":
        assert torch.equal(seen["act"][0], seen["norm"][1])  # act(norm(.))
    else:
        assert torch.equal(seen["norm"][0], seen["act"][1])  # norm(act(.))
        assert bool((seen["norm"][0] >= 0).all())


def test_norm_names_map_to_the_layer_for_the_feature_dim():
    cnn, img = models.build("cnn", norm="bn"), models.build("cnn2d", norm="bn", input_shape=(1, 8, 8))
    assert type(cnn.blocks[0].norm) is bnlab.nn.BatchNorm1d
    assert type(img.blocks[0].norm) is bnlab.nn.BatchNorm2d
    assert type(models.build("cnn", norm="torch_bn").blocks[0].norm) is nn.BatchNorm1d
    gn = models.build("cnn", norm="gn").blocks[0].norm
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 5  # largest divisor of 25 <= 8
    assert models.build("cnn", norm="gn", norm_kw={"groups": 25}).blocks[0].norm.num_groups == 25
    ln = models.build("cnn", norm="ln").blocks[0].norm
    assert isinstance(ln, nn.GroupNorm) and ln.num_groups == 1
    assert isinstance(models.build("cnn", norm="none").blocks[0].norm, nn.Identity)


def test_norm_given_as_class_or_partial_and_registered_factories():
    m = models.build("mlp", norm=functools.partial(bnlab.nn.BatchNorm1d, momentum=0.3))
    assert m.blocks[1].norm.momentum == 0.3
    models.register_norm("test_bn_eps", {1: bnlab.nn.BatchNorm1d, 2: bnlab.nn.BatchNorm2d})
    m = models.build("cnn", norm="test_bn_eps", norm_kw={"eps": 0.01})
    assert m.blocks[2].norm.eps == 0.01
    models.register_norm("test_double", lambda c, dim, **kw: nn.GroupNorm(1, c) if dim == 1 else nn.Identity())
    assert isinstance(models.build("mlp", norm="test_double").blocks[0].norm, nn.GroupNorm)
    assert isinstance(models.build("cnn2d", norm="test_double", input_shape=(1, 8, 8)).blocks[0].norm, nn.Identity)


def test_registry_errors_say_what_was_expected():
    with pytest.raises(ValueError, match=r"expected a norm in \(.*'bn'.*\) or a class \(got 'batchnorm'\)"):
        models.build("cnn", norm="batchnorm")
    with pytest.raises(ValueError, match=r"expected placement in \('before', 'after'\) \(got 'middle'\)"):
        models.build("cnn", placement="middle")
    with pytest.raises(ValueError, match=r"expected a model in .* \(got 'vgg'\)"):
        models.build("vgg")
    with pytest.raises(ValueError, match=r"expected an activation in .* \(got 'swishy'\)"):
        models.build("cnn", act="swishy")
    with pytest.raises(ValueError, match=r"1D CNN expects signals of shape \(L,\) or \(1, L\) \(got \(3, 32, 32\)\)"):
        models.build("cnn", input_shape=(3, 32, 32))
    with pytest.raises(TypeError):  # a typo in a norm option is not silently dropped
        models.build("cnn", norm="bn", norm_kw={"momentun": 0.1})


def test_named_layers_are_reachable_for_hooks():
    mlp = models.build("mlp", norm="bn")
    names = dict(mlp.named_modules())
    assert isinstance(names["blocks.2.act"], nn.Sigmoid)  # Ioffe's last hidden sigmoid
    assert isinstance(names["blocks.2.norm"], bnlab.nn.BatchNorm1d)
    res = models.build("resnet", norm="bn", input_shape=(3, 8, 8), blocks_per_stage=2)
    assert len(res.blocks) == 6 and isinstance(res.blocks[2].shortcut[1], bnlab.nn.BatchNorm2d)


# --- noisy BN ---------------------------------------------------------------------------------


def _noisy_output(beta, n=4096, c=64, seed=0):
    """Noisy BN output when gamma = 0, beta = beta: BN gives exactly beta, so y = s * beta + m."""
    layer = noisy_bn.NoisyBatchNorm1d(c)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.fill_(beta)
    torch.manual_seed(seed)
    return layer(torch.randn(n, c)).detach(), layer


def test_noisy_bn_shift_is_uniform_around_a_per_step_mean():
    y, _ = _noisy_output(0.0)  # y = m ~ U(mu_t - 0.1, mu_t + 0.1), mu_t ~ U(-0.5, 0.5)
    mu = float(y.mean())
    assert -0.5 <= mu <= 0.5
    assert float(y.max() - y.min()) <= 0.2 + 1e-6 and float(y.max() - y.min()) > 0.19
    assert float(y.std()) == pytest.approx(0.2 / 12**0.5, rel=0.02)  # std of U(-0.1, 0.1)


def test_noisy_bn_scale_is_normal_around_a_per_step_sigma():
    y, _ = _noisy_output(10.0)  # y = 10 s + m, s ~ N(sigma_t, 0.1), sigma_t ~ U(1, 1.25)
    sigma = float(y.mean()) / 10  # m's mean (|mu_t| <= 0.5) moves this by at most 0.05
    assert 1.0 - 0.05 <= sigma <= 1.25 + 0.05
    want_std = (100 * 0.01 + 0.2**2 / 12) ** 0.5
    assert float(y.std()) == pytest.approx(want_std, rel=0.02)


def test_noisy_bn_draws_new_noise_each_step_and_none_in_eval():
    layer = noisy_bn.NoisyBatchNorm1d(8)
    x = torch.randn(64, 8)
    torch.manual_seed(1)
    a = layer(x)
    b = layer(x)
    assert not torch.allclose(a, b)
    plain = bnlab.nn.BatchNorm1d(8)
    plain.load_state_dict(layer.state_dict())
    layer.eval(), plain.eval()
    torch.testing.assert_close(layer(x), plain(x), rtol=0, atol=0)


# --- freezing ---------------------------------------------------------------------------------


def _step(model, steps=3, lr=0.1):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, y = torch.randn(32, 40, generator=gen), torch.randint(0, 10, (32,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_train_only_norm_affine_changes_only_gamma_and_beta():
    torch.manual_seed(0)
    model = models.build("cnn", norm="bn")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    count = freeze.train_only_norm_affine(model)
    assert count == 3 * 2 * 25
    _step(model)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {f"blocks.{i}.norm.{w}" for i in range(3) for w in ("weight", "bias")}
    with pytest.raises(ValueError, match="expected a model with affine norm layers"):
        freeze.train_only_norm_affine(models.build("cnn", norm="none"))


def test_train_random_subset_changes_at_most_k_chosen_weights():
    torch.manual_seed(0)
    model = models.build("cnn", norm="bn")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    k = 150
    assert freeze.train_random_subset(model, k, torch.Generator().manual_seed(3)) == k
    _step(model)
    changed = sum(int((p != before[n]).sum()) for n, p in model.named_parameters())
    assert 0.8 * k <= changed <= k  # a chosen weight with an exactly zero gradient may stay put
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if ".norm." in n)
    with pytest.raises(ValueError, match=r"expected k in 1\.\.5210"):
        freeze.train_random_subset(model, 10**6, torch.Generator())
