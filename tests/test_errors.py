"""Bad input gets an error that says what was expected and what arrived."""

import pytest
import torch

import bnlab


@pytest.mark.parametrize(
    "cls,bad_shape,message",
    [
        (bnlab.nn.BatchNorm2d, (2, 3, 4), "expected 4D input (got 3D input)"),
        (bnlab.nn.BatchNorm1d, (2, 3, 4, 4), "expected 2D or 3D input (got 4D input)"),
        (bnlab.nn.BatchNorm3d, (2, 3, 4, 4), "expected 5D input (got 4D input)"),
    ],
)
def test_wrong_number_of_dimensions(cls, bad_shape, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cls(3)(torch.randn(bad_shape))


def test_wrong_channel_count_names_both_numbers():
    with pytest.raises(ValueError, match=r"expected input with 64 channels in dim 1 \(got 32 channels"):
        bnlab.nn.BatchNorm2d(64)(torch.randn(2, 32, 4, 4))
    with pytest.raises(ValueError, match=r"expected input with 5 channels in dim 1 \(got 3 channels"):
        bnlab.functional.batch_norm(torch.randn(4, 3), torch.zeros(5), torch.ones(5), training=True)


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1), (1, 3, 1, 1, 1)])
def test_one_value_per_channel_in_training_uses_torch_wording(shape):
    cls = {2: bnlab.nn.BatchNorm1d, 3: bnlab.nn.BatchNorm1d, 4: bnlab.nn.BatchNorm2d, 5: bnlab.nn.BatchNorm3d}[
        len(shape)
    ]
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training, got input size"):
        cls(3)(torch.randn(shape))
    cls(3).eval()(torch.randn(shape))  # fine in eval


def test_batch_of_one_with_spatial_size_is_fine_in_training():
    y = bnlab.nn.BatchNorm2d(3)(torch.randn(1, 3, 2, 2))
    assert y.shape == (1, 3, 2, 2)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.uint8])
def test_non_floating_input_is_a_type_error(dtype):
    with pytest.raises(TypeError, match=f"expected a floating-point input \\(got {dtype}\\)"):
        bnlab.nn.BatchNorm1d(3)(torch.zeros(4, 3, dtype=dtype))


def test_nan_eps_is_refused_where_torch_would_normalize_to_nan():
    with pytest.raises(ValueError, match="batch_norm eps must be positive during training, but got nan"):
        bnlab.nn.BatchNorm2d(3, eps=float("nan"))(torch.randn(4, 3, 2, 2))


@pytest.mark.parametrize("eps", [0.0, -1e-5])
def test_non_positive_eps_is_refused_at_the_training_forward_as_torch_does(eps):
    x = torch.randn(4, 3, 2, 2)
    bn = bnlab.nn.BatchNorm2d(3, eps=eps)  # constructing is fine, as in torch
    ref = torch.nn.BatchNorm2d(3, eps=eps)
    with pytest.raises(ValueError, match="batch_norm eps must be positive during training") as ours:
        bn(x)
    with pytest.raises(ValueError) as theirs:
        ref(x)
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError, match="batch_norm eps must be positive during training"):
        bnlab.functional.batch_norm(torch.randn(4, 3), None, None, training=True, eps=eps)


def test_eps_zero_is_allowed_in_eval_and_negative_is_not_as_in_torch():
    x = torch.randn(4, 3)
    assert torch.isfinite(bnlab.nn.BatchNorm1d(3, eps=0.0).eval()(x)).all()
    with pytest.raises(ValueError, match="batch_norm eps must be non-negative, but got -0.1"):
        bnlab.nn.BatchNorm1d(3, eps=-0.1).eval()(x)


@pytest.mark.parametrize("momentum", [-0.1, 1.5, 0.99 + 1, float("nan")])
def test_momentum_outside_unit_interval_is_refused_where_training_uses_it(momentum):
    # Stricter than torch (which extrapolates the running average): refused when a training forward
    # would use it; construction and eval are fine, as in torch.
    bn = bnlab.nn.BatchNorm2d(3, momentum=momentum)
    bn.eval()(torch.randn(2, 3, 2, 2))
    with pytest.raises(ValueError, match=r"expected momentum in \[0, 1\] or None"):
        bn.train()(torch.randn(2, 3, 2, 2))


def test_momentum_none_and_bounds_are_allowed():
    for momentum in (None, 0.0, 1.0):
        bnlab.nn.BatchNorm2d(3, momentum=momentum)(torch.randn(2, 3, 2, 2))


def test_numpy_scalars_are_accepted_as_torch_accepts_them():
    import numpy as np

    x = torch.randn(4, 8, 3, 3)
    bn = bnlab.nn.BatchNorm2d(np.int64(8), eps=np.float32(1e-5), momentum=np.float64(0.2))
    ref = torch.nn.BatchNorm2d(np.int64(8), eps=np.float32(1e-5), momentum=np.float64(0.2))
    torch.testing.assert_close(bn(x), ref(x))
    torch.testing.assert_close(bn.running_var, ref.running_var)


@pytest.mark.parametrize("num_features", [-3, 2.5, True])
def test_bad_num_features_is_refused(num_features):
    with pytest.raises(ValueError, match="expected num_features to be a non-negative int"):
        bnlab.nn.BatchNorm2d(num_features)


def test_eval_without_running_stats_in_functional_is_refused():
    with pytest.raises(ValueError, match="running_mean and running_var must be defined in evaluation mode"):
        bnlab.functional.batch_norm(torch.randn(4, 3), None, None, training=False)


def test_errors_are_not_assertions():
    """User mistakes raise ValueError/TypeError even under python -O (no assert on user input)."""
    for call in (
        lambda: bnlab.nn.BatchNorm2d(3)(torch.randn(2, 3)),
        lambda: bnlab.nn.BatchNorm2d(3)(torch.zeros(2, 3, 2, 2, dtype=torch.long)),
    ):
        with pytest.raises((ValueError, TypeError)):
            call()


def test_functional_momentum_none_is_a_type_error_that_says_so():
    with pytest.raises(TypeError, match=r"expected momentum as a float or a 0-dim tensor \(got None\)"):
        bnlab.functional.batch_norm(torch.randn(4, 3), torch.zeros(3), torch.ones(3), training=True, momentum=None)
