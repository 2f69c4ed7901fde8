"""Keras / Flax bridge: checked against numpy re-implementations of Keras' and Flax's BN.

The references follow the frameworks' documented update rules (channels last):
``moving = decay * moving + (1 - decay) * batch`` with the *biased* batch variance, and inference
``(x - moving_mean) / sqrt(moving_var + eps) * gamma + beta``.
"""

import numpy as np
import pytest
import torch

import bnlab
from bnlab.surgery import conventions
from bnlab.surgery.interop import from_flax, from_keras, keras_weight_list, to_flax, to_keras

N, C, H, W = 8, 3, 4, 4
M = N * H * W  # values per channel in one batch


def _batches(steps, seed=0):
    gen = np.random.default_rng(seed)
    return [gen.normal(2.0, 3.0, size=(N, C, H, W)) for _ in range(steps)]


def _reference_train(batches, decay, mean0, var0):
    """Keras/Flax moving averages, in numpy (NCHW data, statistics over N, H, W)."""
    mean, var = mean0.copy(), var0.copy()
    for x in batches:
        mean = decay * mean + (1 - decay) * x.mean(axis=(0, 2, 3))
        var = decay * var + (1 - decay) * x.var(axis=(0, 2, 3))  # numpy's var is biased
    return mean, var


def _reference_infer(x, gamma, beta, mean, var, eps):
    x = np.moveaxis(x, 1, -1)  # NHWC, as Keras and Flax see it
    y = (x - mean) / np.sqrt(var + eps) * gamma + beta
    return np.moveaxis(y, -1, 1)


def _trained_bnlab(batches, momentum, eps):
    bn = bnlab.nn.BatchNorm2d(C, momentum=momentum, eps=eps, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 1.5, -2.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        bn.running_var.zero_()  # start both sides at 0 so the variance conversion is exact
        for x in batches:
            bn(torch.from_numpy(x))
    return bn


TOL = dict(rtol=1e-10, atol=1e-12)


def _export(bn, fmt, batch_count=None):
    """(gamma, beta, mean, var, config) from to_keras / to_flax."""
    if fmt == "keras":
        w, cfg = to_keras(bn, batch_count=batch_count)
        return w["gamma"], w["beta"], w["moving_mean"], w["moving_variance"], cfg
    v, cfg = to_flax(bn, batch_count=batch_count)
    return v["params"]["scale"], v["params"]["bias"], v["batch_stats"]["mean"], v["batch_stats"]["var"], cfg


@pytest.mark.parametrize("fmt", ["keras", "flax"])
def test_export_with_batch_count_equals_the_framework_trained_on_the_same_batches(fmt):
    batches = _batches(20)
    bn = _trained_bnlab(batches, momentum=0.1, eps=1e-3)
    ref_mean, ref_var = _reference_train(batches, decay=0.9, mean0=np.zeros(C), var0=np.zeros(C))
    gamma, beta, mean, var, cfg = _export(bn, fmt, batch_count=M)
    np.testing.assert_allclose(mean, ref_mean, **TOL)
    np.testing.assert_allclose(var, ref_var, **TOL)
    np.testing.assert_allclose(gamma, bn.weight.detach().numpy(), **TOL)
    np.testing.assert_allclose(beta, bn.bias.detach().numpy(), **TOL)
    assert cfg["momentum"] == pytest.approx(0.9) and cfg["epsilon"] == 1e-3


@pytest.mark.parametrize("fmt", ["keras", "flax"])
def test_export_without_batch_count_gives_the_same_inference_outputs(fmt):
    bn = _trained_bnlab(_batches(5), momentum=0.1, eps=1e-3).eval()
    gamma, beta, mean, var, cfg = _export(bn, fmt)
    x = _batches(1, seed=5)[0]
    with torch.no_grad():
        ours = bn(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, _reference_infer(x, gamma, beta, mean, var, cfg["epsilon"]), **TOL)


def test_keras_config_and_weight_list_follow_keras():
    w, cfg = to_keras(_trained_bnlab(_batches(2), momentum=0.1, eps=1e-3))
    assert cfg == {"momentum": pytest.approx(0.9), "epsilon": 1e-3, "scale": True, "center": True}
    assert [
        a is b
        for a, b in zip(keras_weight_list(w), [w[k] for k in ("gamma", "beta", "moving_mean", "moving_variance")])
    ] == [True] * 4
    v, fcfg = to_flax(bnlab.nn.BatchNorm1d(2, affine=False))
    assert v["params"] == {} and fcfg["use_scale"] is False and fcfg["epsilon"] == 1e-5


def _import(fmt, gamma, beta, mean, var, batch_count=None):
    if fmt == "keras":
        return from_keras([gamma, beta, mean, var], batch_count=batch_count, dtype=torch.float64), 1e-3
    variables = {"params": {"scale": gamma, "bias": beta}, "batch_stats": {"mean": mean, "var": var}}
    return from_flax(variables, {"momentum": 0.99}, batch_count=batch_count, dtype=torch.float64), 1e-5


@pytest.mark.parametrize("fmt", ["keras", "flax"])
def test_import_gives_the_framework_inference_outputs(fmt):
    gen = np.random.default_rng(1)
    gamma, beta = gen.normal(size=C), gen.normal(size=C)
    mean, var = _reference_train(_batches(10), decay=0.99, mean0=np.zeros(C), var0=np.ones(C))
    bn, eps = _import(fmt, gamma, beta, mean, var)  # Keras' defaults: decay 0.99, eps 1e-3
    assert isinstance(bn, bnlab.nn.BatchNorm2d) and not bn.training
    assert bn.momentum == pytest.approx(0.01) and bn.eps == eps
    x = _batches(1, seed=7)[0]
    with torch.no_grad():
        ours = bn(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, _reference_infer(x, gamma, beta, mean, var, eps), **TOL)


@pytest.mark.parametrize("fmt", ["keras", "flax"])
def test_import_with_batch_count_continues_the_framework_moving_averages(fmt):
    mean, var = _reference_train(_batches(10), decay=0.99, mean0=np.zeros(C), var0=np.zeros(C))
    bn, _ = _import(fmt, np.ones(C), np.zeros(C), mean, var, batch_count=M)
    more = _batches(3, seed=9)
    ref_mean, ref_var = _reference_train(more, 0.99, mean, var)
    bn.train()
    with torch.no_grad():
        for b in more:
            bn(torch.from_numpy(b))
    np.testing.assert_allclose(bn.running_mean.numpy(), ref_mean, **TOL)
    np.testing.assert_allclose(conventions.unbiased_to_biased(bn.running_var.numpy(), M), ref_var, **TOL)


def test_keras_list_layout_follows_scale_and_center():
    bn = from_keras([np.ones(2), np.zeros(2), np.full(2, 4.0)], {"center": False})
    assert bn.bias is None and torch.equal(bn.running_var, torch.full((2,), 4.0))
    with pytest.raises(ValueError, match="expected 4 arrays"):
        from_keras([np.ones(2)])


def test_export_refuses_cumulative_momentum_and_untracked_layers():
    with pytest.raises(ValueError, match="momentum=None"):
        to_keras(torch.nn.BatchNorm1d(2, momentum=None))
    with pytest.raises(ValueError, match="track_running_stats=False"):
        to_flax(bnlab.nn.BatchNorm1d(2, track_running_stats=False))


def test_conventions_convert_momentum_and_variance_both_ways():
    assert conventions.momentum_to_decay(0.1) == pytest.approx(0.9)
    assert conventions.decay_to_momentum(0.99) == pytest.approx(0.01)
    assert conventions.biased_to_unbiased(conventions.unbiased_to_biased(5.0, 10), 10) == pytest.approx(5.0)
    assert conventions.unbiased_to_biased(9.0, 10) == pytest.approx(8.1)
    assert conventions.unbiased_to_biased(9.0, None) == 9.0
    with pytest.raises(ValueError, match="expected a PyTorch momentum"):
        conventions.momentum_to_decay(1.5)
    assert conventions.looks_like_decay(0.99) and not conventions.looks_like_decay(0.1)
