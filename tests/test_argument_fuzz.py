"""bnlab.functional.batch_norm against torch.nn.functional.batch_norm on fuzzed arguments.

Each case draws an input layout (contiguous, channels_last(_3d), N/C-permuted, transposed spatial
dims, a strided slice or an offset view into a larger storage) and per-channel tensors of random
size (C, C - 1, C + 1), shape ((C,) or (C, 1)), dtype, and storage (slices of larger tensors, as
in the out-of-bounds read this guards against). torch is the oracle: where it raises, bnlab raises;
where it computes, bnlab computes the same output (float32 1e-5, float64 1e-10), with the same
strides, and updates the running statistics to the same values.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

import bnlab
from bnlab.core import dispatch


def _input(rng: random.Random, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    n, c = rng.randint(1, 5), rng.randint(1, 6)
    spatial = [rng.randint(1, 5) for _ in range(rng.randint(0, 3))]
    shape = (n, c, *spatial)
    kind = rng.choice(["contiguous", "channels_last", "nc_permuted", "transposed", "strided", "offset"])
    base = lambda s: torch.randn(s, generator=gen, dtype=dtype) * 2 + 0.5  # noqa: E731
    if kind == "channels_last" and len(shape) in (4, 5):
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        return base(shape).contiguous(memory_format=fmt)
    if kind == "nc_permuted":
        return base((c, n, *spatial)).transpose(0, 1)
    if kind == "transposed" and spatial:
        return base((n, *spatial, c)).movedim(-1, 1)  # channels innermost, e.g. (N, L, C).transpose(1, 2)
    if kind == "strided":
        return base((n, 2 * c, *spatial))[:, ::2]
    if kind == "offset":
        return base((n + 1, c, *spatial))[1:]
    return base(shape)


def _vector(rng: random.Random, gen: torch.Generator, c: int, dtype: torch.dtype, positive: bool):
    size = c if rng.random() < 0.94 else max(0, c + rng.choice([-1, 1]))
    if rng.random() < 0.04:
        dtype = torch.float64 if dtype == torch.float32 else torch.float32
    big = torch.rand(3 * size + 4, generator=gen, dtype=dtype) + (0.5 if positive else -0.5)
    kind = rng.choices(["plain", "slice", "step", "column"], weights=[4, 2.5, 2.5, 0.5])[0]
    if kind == "slice":  # a window into a larger storage: reading past its end reads the neighbour
        start = rng.randint(0, size + 3)
        return big[start : start + size]
    if kind == "step":
        return big[::2][:size]
    if kind == "column":
        return big[:size].clone().view(size, 1)
    return big[:size].clone()


def _case(seed: int):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    dtype = rng.choice([torch.float32, torch.float64])
    x = _input(rng, gen, dtype)
    c = x.shape[1]
    rm, rv = _vector(rng, gen, c, dtype, False), _vector(rng, gen, c, dtype, True)
    if rng.random() < 0.25:
        rm, rv = (None, None) if rng.random() < 0.9 else (None, rv)  # torch wants both or neither
    w, b = (_vector(rng, gen, c, dtype, p) if rng.random() < 0.8 else None for p in (True, False))
    training = rng.random() < 0.6
    momentum = rng.choice([0.1, 0.5, 1.0])
    return x, rm, rv, w, b, training, momentum


def _run(fn, x, rm, rv, w, b, training, momentum):
    rm = None if rm is None else rm.clone() if rm.is_contiguous() else rm  # keep slices as views
    rv = None if rv is None else rv.clone() if rv.is_contiguous() else rv
    try:
        y = fn(x, rm, rv, w, b, training=training, momentum=momentum, eps=1e-5)
    except (RuntimeError, ValueError, TypeError) as err:
        return err, None, None
    return y, rm, rv


def _strides(t: torch.Tensor) -> tuple:
    """The strides that mean something: those of dims longer than 1 (a size-1 dim's stride is never used)."""
    return tuple(st for st, n in zip(t.stride(), t.shape) if n > 1)


def _check(seed: int) -> str:
    x, rm, rv, w, b, training, momentum = _case(seed)
    ref = _run(F.batch_norm, x, *[None if t is None else t.clone() for t in (rm, rv)], w, b, training, momentum)
    ours = _run(
        bnlab.functional.batch_norm, x, *[None if t is None else t.clone() for t in (rm, rv)], w, b, training, momentum
    )
    outcome = "computed"
    if isinstance(ref[0], RuntimeError) and "INTERNAL ASSERT FAILED" in str(ref[0]):
        # torch's own bug (a (C, 1) bias without a weight in training trips an internal assert), not an
        # answer about the arguments: the oracle is torch on the same values as (C,) vectors.
        w, b = (None if t is None else t.reshape(-1) for t in (w, b))
        ref = _run(F.batch_norm, x, *[None if t is None else t.clone() for t in (rm, rv)], w, b, training, momentum)
        outcome = "torch bug"
    if isinstance(ref[0], Exception):
        assert isinstance(ours[0], Exception), f"seed {seed}: torch raised {ref[0]!r}, bnlab computed"
        return "raised"
    assert not isinstance(ours[0], Exception), f"seed {seed}: torch computed, bnlab raised {ours[0]!r}"
    tol = dict(rtol=1e-5, atol=1e-5) if x.dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours[0], ref[0], equal_nan=True, **tol, msg=f"seed {seed}: output")
    assert _strides(ours[0]) == _strides(ref[0]), f"seed {seed}: strides {ours[0].stride()} vs {ref[0].stride()}"
    for a, r in zip(ours[1:], ref[1:]):
        if r is not None:
            torch.testing.assert_close(a, r, equal_nan=True, **tol, msg=f"seed {seed}: running statistics")
    return outcome


def test_fuzzed_arguments_match_torch_fast_subset():
    outcomes = [_check(seed) for seed in range(300)]
    assert outcomes.count("raised") > 30 and outcomes.count("computed") > 100  # both halves exercised


@pytest.mark.slow
def test_fuzzed_arguments_match_torch():
    outcomes = [_check(seed) for seed in range(300, 3300)]
    assert outcomes.count("raised") > 300 and outcomes.count("computed") > 1000


def test_a_weight_window_one_short_of_the_channels_is_refused_not_read_past():
    storage = torch.arange(20.0)
    weight = storage[:9]  # 9 of 10 channels; element 10 of the storage is another tensor's
    x = torch.randn(4, 10, 8)
    with pytest.raises(ValueError, match="expected weight with 10 elements"):
        bnlab.functional.batch_norm(x, torch.zeros(10), torch.ones(10), weight, None, training=True)
    with pytest.raises(RuntimeError):  # torch's error class too
        bnlab.functional.batch_norm(x, torch.zeros(10), torch.ones(10), weight, None, training=False)


def test_running_var_of_the_wrong_size_in_training_is_refused():
    x = torch.randn(4, 10)
    for size in (9, 11):
        with pytest.raises(ValueError, match=f"expected running_var with 10 elements.*got {size} elements"):
            bnlab.functional.batch_norm(x, torch.zeros(10), torch.ones(size), training=True)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", ["weight", "bias", "running_mean", "running_var"])
def test_a_layer_whose_tensor_was_replaced_by_a_wrong_size_is_refused_on_every_path(name, training, fast):
    # The layer's tensors are checked by the dispatch as it chooses the backend: on the fast path,
    # the reference and in both modes, before anything reads them.
    bn = bnlab.nn.BatchNorm1d(10).train(training)
    window = torch.arange(20.0)[:9]
    setattr(bn, name, torch.nn.Parameter(window) if name in ("weight", "bias") else window)
    before = dispatch.fast_enabled()
    dispatch.set_fast(fast)
    try:
        with pytest.raises(ValueError, match=f"expected {name} with 10 elements"):
            bn(torch.randn(4, 10))
    finally:
        dispatch.set_fast(before)


@pytest.mark.parametrize(
    "name,make",
    [
        ("transposed (N, L, C)", lambda: torch.randn(4, 7, 3).transpose(1, 2)),
        ("N/C permuted", lambda: torch.randn(3, 4, 5, 6).transpose(0, 1)),
        ("channels_last_3d", lambda: torch.randn(2, 3, 4, 5, 6).contiguous(memory_format=torch.channels_last_3d)),
        ("channels_last", lambda: torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)),
        ("transposed H/W", lambda: torch.randn(4, 3, 6, 5).transpose(2, 3)),
        ("(C, N) transposed", lambda: torch.randn(3, 8).t()),
    ],
)
@pytest.mark.parametrize("training", [True, False])
def test_output_strides_follow_torch_for_every_layout(name, make, training):
    x = make()
    layer = {2: bnlab.nn.BatchNorm1d, 3: bnlab.nn.BatchNorm1d, 4: bnlab.nn.BatchNorm2d, 5: bnlab.nn.BatchNorm3d}
    ours = layer[x.dim()](x.shape[1]).train(training)
    ref = getattr(torch.nn, layer[x.dim()].__name__)(x.shape[1]).train(training)
    y, y_ref = ours(x), ref(x)
    assert y.stride() == y_ref.stride(), name
    torch.testing.assert_close(y, y_ref)
    y.view(y.shape[0], -1) if y_ref.is_contiguous() else None  # what broke before: views of the output
