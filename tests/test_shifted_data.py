"""Shifted test sets (mnist1d-c, digits-c): deterministic by seed, graded by severity, the same examples.

The generator-knob sets of MNIST-1D call the mnist1d package's make_dataset (about 2 s each, cached
afterwards); the default run checks one knob, ``-m slow`` all of them.
"""

import math

import pytest
import torch

from bnlab import data
from bnlab.data import corruptions as C
from bnlab.data import mnist1d_knobs, shifted


def _distance(a, b):
    return float((a - b).square().mean().sqrt())


@pytest.mark.parametrize("base", ["mnist1d", "digits"])
def test_sensor_corruptions_are_graded_by_severity_and_deterministic_by_seed(base):
    clean = data.load(base)
    for name, spec in shifted.CORRUPTIONS[base].items():
        if spec.knob is not None:
            continue
        sets = shifted.corrupted_test(base, name, seed=3)
        again = shifted.corrupted_test(base, name, seed=3)
        d = [_distance(sets[s], clean.x_test) for s in shifted.SEVERITIES]
        assert all(a < b for a, b in zip(d, d[1:])), (base, name, d)  # strictly graded
        assert all(torch.equal(sets[s], again[s]) for s in shifted.SEVERITIES)
        assert all(sets[s].shape == clean.x_test.shape and sets[s].dtype == clean.x_test.dtype for s in sets)


def test_noise_depends_on_the_seed_only():
    a = shifted.corrupted_test("digits", "noise", (2,), seed=0)[2]
    b = shifted.corrupted_test("digits", "noise", (2,), seed=1)[2]
    assert not torch.equal(a, b)
    assert torch.equal(a, shifted.corrupted_test("digits", "noise", (2,), seed=0)[2])


def test_the_generator_knob_at_its_default_reproduces_the_clean_test_set():
    """Same seed, same draws: make_dataset with shear_scale at its default (0.75) gives the clean set,
    so a larger shear gives the same examples sheared more."""
    clean = data.load("mnist1d")
    same = mnist1d_knobs.generated_test_sets([("shear_scale", 0.75)])[("shear_scale", 0.75)]
    assert torch.equal(same[0], clean.x_test) and torch.equal(same[1], clean.y_test)


def test_a_generator_knob_is_graded_and_keeps_the_examples():
    clean = data.load("mnist1d")
    sets = shifted.corrupted_test("mnist1d", "shear", (1, 5))
    d1, d5 = _distance(sets[1], clean.x_test), _distance(sets[5], clean.x_test)
    assert 0 < d1 < d5
    # the same digits: each shifted signal is closer to its own clean signal than to the others'
    x1, x0 = sets[1], clean.x_test
    nearest = torch.cdist(x1, x0).argmin(1)
    assert float((nearest == torch.arange(x0.shape[0])).double().mean()) > 0.9


@pytest.mark.slow
def test_every_generator_knob_is_graded():
    clean = data.load("mnist1d")
    for name, spec in shifted.CORRUPTIONS["mnist1d"].items():
        if spec.knob is None:
            continue
        sets = shifted.corrupted_test("mnist1d", name)
        d = [_distance(sets[s], clean.x_test) for s in shifted.SEVERITIES]
        assert all(a < b for a, b in zip(d, d[1:])), (name, d)


def test_load_by_name_gives_clean_train_and_shifted_test():
    ds = data.load("mnist1d-c/gain/3")
    clean = data.load("mnist1d")
    assert ds.name == "mnist1d-c/gain/3"
    assert torch.equal(ds.x_train, clean.x_train) and torch.equal(ds.y_test, clean.y_test)
    assert torch.allclose(ds.x_test, clean.x_test * 2.0)
    assert shifted.name("digits", "blur", 2) == "digits-c/blur/2"


def test_bad_names_say_what_was_expected():
    with pytest.raises(ValueError, match="expected a corruption of mnist1d in"):
        data.load("mnist1d-c/fog/1")
    with pytest.raises(ValueError, match=r"expected severity in \(1, 2, 3, 4, 5\) \(got 0\)"):
        data.load("digits-c/blur/0")
    with pytest.raises(ValueError, match="expected a name like 'mnist1d-c/CORRUPTION/SEVERITY'"):
        data.load("mnist1d-c/blur/high")
    with pytest.raises(ValueError, match="expected a corrupted data set of"):
        data.load("cifar10-c/noise/1")
    with pytest.raises(ValueError, match="expected a knob in"):
        mnist1d_knobs.generate("max_translation", 10)


def test_corruption_functions():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 8, 8)
    assert torch.allclose(C.blur(torch.full((2, 3, 8, 8), 0.7), 1.0), torch.full((2, 3, 8, 8), 0.7))
    assert torch.allclose(C.blur(x, 1.0).sum((2, 3)), x.sum((2, 3)), rtol=0.2)  # mass stays, roughly
    assert _distance(C.blur(x, 1.5), x) > _distance(C.blur(x, 0.5), x)
    c = C.contrast(x, 0.3)
    assert torch.allclose(c.flatten(1).mean(1), x.flatten(1).mean(1), atol=1e-6)
    assert torch.allclose(c.flatten(1).std(1), 0.3 * x.flatten(1).std(1), atol=1e-6)
    n = C.gaussian_noise(torch.zeros(20000), 0.5, g)
    assert math.isclose(float(n.std()), 0.5, rel_tol=0.03)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, C, H, W\)"):
        C.blur(torch.zeros(3, 40), 1.0)
