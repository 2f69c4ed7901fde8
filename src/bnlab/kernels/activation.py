"""The activations a BN kernel can fuse after its affine map, in torch (the reference).

``identity``, ``relu``, ``leaky_relu`` (with ``slope``, torch's ``negative_slope``) and ``silu``
(``z * sigmoid(z)``). The derivative is written out so a backward can recompute it from the
pre-activation ``z`` alone: relu'(0) = 0 and leaky_relu'(0) = slope (the left derivative, as
torch's autograd uses); silu'(z) = s * (1 + z * (1 - s)) with s = sigmoid(z).
"""

from __future__ import annotations

import torch
import torch.nn.functional as tnf
from torch import Tensor

ACTIVATIONS = ("identity", "relu", "leaky_relu", "silu")


def check_activation(act: str, slope: float) -> None:
    """Reject an unknown activation name or a non-number slope."""
    if act not in ACTIVATIONS:
        raise ValueError(f"expected act in {ACTIVATIONS} (got {act!r})")
    if isinstance(slope, bool) or not isinstance(slope, (int, float)):
        raise TypeError(f"expected a float slope (got {type(slope).__name__})")


def activate(z: Tensor, act: str, slope: float = 0.01) -> Tensor:
    """act(z) with torch's own activation functions."""
    if act == "relu":
        return tnf.relu(z)
    if act == "leaky_relu":
        return tnf.leaky_relu(z, slope)
    if act == "silu":
        return tnf.silu(z)
    return z


def activation_grad(dy: Tensor, z: Tensor, act: str, slope: float = 0.01) -> Tensor:
    """dy * act'(z), differentiable (it is plain torch ops)."""
    if act == "relu":
        return torch.where(z > 0, dy, torch.zeros_like(dy))
    if act == "leaky_relu":
        return torch.where(z > 0, dy, dy * slope)
    if act == "silu":
        s = torch.sigmoid(z)
        return dy * (s * (1 + z * (1 - s)))
    return dy
