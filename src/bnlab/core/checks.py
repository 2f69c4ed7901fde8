"""Argument checks of batch norm, run once per call by whoever receives the user's arguments.

A layer checks its input here and then calls :mod:`bnlab.core.ops`, which checks nothing again;
:func:`bnlab.functional.batch_norm` runs :func:`check_batch_norm_call`. The errors say what was
expected and what arrived; user mistakes are ValueError / TypeError, never assertions.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["check_input", "check_batch_size", "check_hyperparameters", "check_batch_norm_call"]


def check_input(x: Tensor, num_features: int | None) -> None:
    """Reject what batch norm cannot normalize, saying what was expected and what arrived."""
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor input (got {type(x).__name__})")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point input (got {x.dtype})")
    if x.dim() < 2:
        raise ValueError(f"expected an input of at least 2 dimensions (N, C, ...) (got {x.dim()}D input)")
    if num_features is not None and x.shape[1] != num_features:
        raise ValueError(
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


def check_hyperparameters(eps: float, momentum: float | Tensor | None) -> None:
    """eps must be positive; momentum a weight in [0, 1] (None: cumulative average)."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"expected eps > 0 (got {eps!r})")
    if momentum is None or isinstance(momentum, Tensor):
        return
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"expected momentum in [0, 1] or None (got {momentum!r})")


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
    check_input(input, None if stats is None else stats.numel())
    if momentum is None:  # a layer's momentum=None (cumulative average) reaches here as a tensor
        raise TypeError("expected momentum as a float or a 0-dim tensor (got None)")
    check_hyperparameters(eps, momentum)
    if training:
        check_batch_size(input)
    elif running_mean is None or running_var is None:
        raise ValueError("running_mean and running_var must be defined in evaluation mode (got None)")
