r"""The two conventions in which batch-norm libraries differ, converted in one place.

**Momentum.** PyTorch (and bnlab) update ``running = (1 - momentum) * running + momentum * batch``:
momentum is the weight of the *new* batch (default 0.1). Keras and Flax write
``moving = momentum * moving + (1 - momentum) * batch``: their momentum is the *decay* of the old
value (default 0.99). The same average is ``decay = 1 - momentum``.

**Variance.** PyTorch's running_var averages the *unbiased* batch variance ``M2 / (m - 1)``; Keras
(``tf.nn.moments``) and Flax average the *biased* one ``M2 / m``, where ``m`` is the number of
values per channel in one batch (N times the spatial size). With the same ``m`` every step the two
averages differ by the constant factor ``m / (m - 1)`` (exactly, apart from the initial value 1,
whose weight decays as ``(1 - momentum)^steps``). Without ``m`` no correction is possible;
:func:`unbiased_to_biased` and :func:`biased_to_unbiased` then return the variance unchanged.

Default epsilons: PyTorch 1e-5, Flax 1e-5, Keras 1e-3.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
from torch import Tensor

__all__ = [
    "KERAS_DEFAULTS",
    "FLAX_DEFAULTS",
    "momentum_to_decay",
    "decay_to_momentum",
    "unbiased_to_biased",
    "biased_to_unbiased",
    "looks_like_decay",
]

KERAS_DEFAULTS = {"momentum": 0.99, "epsilon": 1e-3}  # momentum is a decay
FLAX_DEFAULTS = {"momentum": 0.99, "epsilon": 1e-5}  # momentum is a decay

# PyTorch momenta in this range are almost always a Keras/Flax decay typed into PyTorch.
DECAY_LIKE_RANGE = (0.9, 0.999)

V = TypeVar("V", float, Tensor, np.ndarray)  # anything that multiplies by a float


def _check_weight(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"expected {name} in [0, 1] (got {value!r})")
    return float(value)


def momentum_to_decay(momentum: float) -> float:
    """PyTorch momentum (weight of the new batch) -> Keras/Flax momentum (decay of the old value)."""
    return 1.0 - _check_weight(momentum, "a PyTorch momentum")


def decay_to_momentum(decay: float) -> float:
    """Keras/Flax momentum (decay of the old value) -> PyTorch momentum (weight of the new batch)."""
    return 1.0 - _check_weight(decay, "a Keras/Flax momentum (decay)")


def _check_count(count: int | None) -> None:
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 2):
        raise ValueError(f"expected the per-channel batch count m to be an int >= 2 or None (got {count!r})")


def unbiased_to_biased(var: V, count: int | None) -> V:
    """PyTorch's running_var (average of ``M2/(m-1)``) -> Keras/Flax's (average of ``M2/m``).

    ``count`` is m, the values per channel in one training batch; ``None`` leaves ``var`` unchanged.
    Works on anything that multiplies by a float (tensors, numpy arrays, floats).
    """
    _check_count(count)
    return var if count is None else var * ((count - 1) / count)


def biased_to_unbiased(var: V, count: int | None) -> V:
    """Keras/Flax's moving variance (average of ``M2/m``) -> PyTorch's running_var (``M2/(m-1)``)."""
    _check_count(count)
    return var if count is None else var * (count / (count - 1))


def looks_like_decay(momentum: float | None) -> bool:
    """True for a PyTorch momentum in [0.9, 0.999]: most likely a Keras/Flax decay given as momentum."""
    return momentum is not None and DECAY_LIKE_RANGE[0] <= momentum <= DECAY_LIKE_RANGE[1]
