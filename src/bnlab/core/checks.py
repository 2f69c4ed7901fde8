"""Argument checks of batch norm, run once per call by whoever receives the user's arguments.

A layer checks its input and hyperparameters here and then calls :mod:`bnlab.core.ops`; the
per-channel tensors (weight, bias, running statistics) are checked with :func:`check_vectors` by
the dispatch (:mod:`bnlab.core.dispatch`), which looks at each of them anyway to choose a backend,
so nothing reaches a kernel unchecked. :func:`bnlab.functional.batch_norm` runs
:func:`check_batch_norm_call` on the user's arguments as given (torch takes a weight of any shape
with C elements, which the engine then sees as a (C,) view). The errors say what was
expected and what arrived; user mistakes are ValueError / TypeError, never assertions.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

__all__ = [
    "SizeMismatch",
    "DtypeMismatch",
    "check_input",
    "check_batch_size",
    "check_eps",
    "check_eps_value",
    "check_momentum",
    "check_momentum_value",
    "check_hyperparameters",
    "check_vectors",
    "check_batch_norm_call",
]

_HALF = (torch.float16, torch.bfloat16)


class SizeMismatch(ValueError, RuntimeError):
    """A per-channel tensor whose size does not match the input's channels. A ValueError (a user's
    mistake), and a RuntimeError as torch raises it for the same call."""


class DtypeMismatch(TypeError, RuntimeError):
    """A per-channel tensor of a dtype or device the input does not take (TypeError, and
    RuntimeError as torch raises it)."""


def check_input(x: Tensor, num_features: int | None) -> None:
    """Reject what batch norm cannot normalize, saying what was expected and what arrived."""
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor input (got {type(x).__name__})")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point input (got {x.dtype})")
    if x.dim() < 2:
        raise ValueError(f"expected an input of at least 2 dimensions (N, C, ...) (got {x.dim()}D input)")
    if num_features is not None and x.shape[1] != num_features:
        raise SizeMismatch(
            f"expected input with {num_features} channels in dim 1 (got {x.shape[1]} channels, "
            f"input shape {tuple(x.shape)})"
        )


def check_batch_size(x: Tensor) -> None:
    """Batch statistics need more than one value per channel (PyTorch's condition and wording)."""
    size = x.shape
    prod = size[0]
    for s in size[2:]:
        prod *= s
    if prod == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {size}")


def check_eps(eps, training: bool) -> None:
    """torch's rule and words: eps > 0 in training, >= 0 in eval; any real number (numpy's too)."""
    if type(eps) is float and eps > 0.0:  # the common case, without the ABC check below
        return
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"expected eps to be a real number (got {type(eps).__name__})")
    check_eps_value(float(eps), training)


def check_eps_value(eps: float, training: bool) -> None:
    """The rule of :func:`check_eps` on a float (TorchScript-compatible, for the scripted layers)."""
    if training and not eps > 0.0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if not eps >= 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")


def check_momentum(momentum) -> None:
    """momentum, when a training forward uses it: a real number in [0, 1], a 0-dim tensor, or None.

    Stricter than torch, which takes any number: outside [0, 1] the running average extrapolates
    and diverges instead of averaging.
    """
    if momentum is None or (type(momentum) is float and 0.0 <= momentum <= 1.0) or isinstance(momentum, Tensor):
        return
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise ValueError(f"expected momentum in [0, 1] or None (got {momentum!r})")
    check_momentum_value(float(momentum))


def check_momentum_value(momentum: float) -> None:
    """The rule of :func:`check_momentum` on a float (TorchScript-compatible)."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"expected momentum in [0, 1] or None (got {momentum})")


def check_hyperparameters(eps, momentum, training: bool = True) -> None:
    """:func:`check_eps` and :func:`check_momentum` (the latter in training only, where it is used)."""
    check_eps(eps, training)
    if training:
        check_momentum(momentum)


def _vector_issue(name: str, t: Tensor, x: Tensor, channels: int) -> Exception | None:
    if not isinstance(t, Tensor):
        return TypeError(f"expected {name} to be a torch.Tensor or None (got {type(t).__name__})")
    if t.numel() != channels:
        return SizeMismatch(
            f"expected {name} with {channels} elements, one per channel of the input of shape "
            f"{tuple(x.shape)} (got {t.numel()} elements, shape {tuple(t.shape)})"
        )
    if name.startswith("running") and t.dim() != 1:  # torch takes any shape of C elements for weight/bias only
        return SizeMismatch(f"expected {name} of shape ({channels},) (got shape {tuple(t.shape)})")
    if t.dtype != x.dtype and not (x.dtype in _HALF and t.dtype == torch.float32):
        return DtypeMismatch(
            f"expected {name} of dtype {x.dtype}"
            + (" or torch.float32" if x.dtype in _HALF else "")
            + f" like the input (got {t.dtype})"
        )
    if not (t.is_cpu and x.is_cpu) and t.device != x.device:
        return DtypeMismatch(f"expected {name} on the input's device {x.device} (got {t.device})")
    return None


def check_vectors(x: Tensor, weight, bias, running_mean, running_var) -> None:
    """The per-channel tensors: one element per channel, the input's dtype (float32 also for half
    inputs, as torch's mixed-precision rule), the input's device -- torch's acceptance. The kernels
    read them by address, so the dispatch runs this before any backend sees a tensor."""
    channels, dtype = x.shape[1], x.dtype
    cpu = x.is_cpu
    for t in (weight, bias, running_mean, running_var):
        # The common case first, cheaply: a (C,) tensor of the input's dtype on the CPU.
        if t is None or (
            cpu and isinstance(t, Tensor) and t.dtype is dtype and t.is_cpu and t.dim() == 1 and t.shape[0] == channels
        ):
            continue
        for name, u in (
            ("weight", weight),
            ("bias", bias),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ):
            if u is t:
                issue = _vector_issue(name, t, x, channels)
                if issue is not None:
                    raise issue
                break


def check_batch_norm_call(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float | Tensor,
    eps: float,
) -> None:
    """Every check of a ``batch_norm`` call (:func:`bnlab.functional.batch_norm`'s arguments)."""
    stats = running_mean if running_mean is not None else weight
    check_input(input, stats.numel() if isinstance(stats, Tensor) else None)
    check_vectors(input, weight, bias, running_mean, running_var)
    if (running_mean is None) != (running_var is None):  # torch's rule and words
        raise ValueError("running_mean and running_var must either both be None or neither be None")
    if momentum is None:  # a layer's momentum=None (cumulative average) reaches here as a tensor
        raise TypeError("expected momentum as a float or a 0-dim tensor (got None)")
    check_hyperparameters(eps, momentum, training)
    if training:
        check_batch_size(input)
    elif running_mean is None or running_var is None:
        raise ValueError("running_mean and running_var must be defined in evaluation mode (got None)")
