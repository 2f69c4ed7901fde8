"""The activations fused BN+activation supports: value, derivative and (where it exists) inverse.

Used by the fused layer (:mod:`bnlab.nn.norm_act`) and the reference backend
(:mod:`bnlab.core.backends.reference`), whose results the fused kernels match.

Each is written as a function of the pre-activation ``z`` (BN's output), so a backward can recompute
the derivative from ``z`` instead of keeping the activation's own saved tensor:

=============  =====================  ================================  ==================
name           act(z)                 act'(z)                           inverse
=============  =====================  ================================  ==================
identity       z                      1                                 y
relu           max(z, 0)              1 if z > 0 else 0                 (not invertible)
leaky_relu     z if z > 0 else s*z    1 if z > 0 else s                 y if y >= 0 else y/s
silu           z * sigmoid(z)         s(z) * (1 + z * (1 - s(z)))       (not invertible)
=============  =====================  ================================  ==================

The derivatives at z = 0 are those of torch's own backward (0 for relu, s for leaky_relu), so the
gradients equal those of BN followed by ``torch.nn.functional``'s activation exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as TF

ACTIVATIONS = ("identity", "relu", "leaky_relu", "silu")
INVERTIBLE = ("identity", "leaky_relu")


def check_activation(act: str, negative_slope: float) -> None:
    if act not in ACTIVATIONS:
        raise ValueError(f"expected act to be one of {', '.join(ACTIVATIONS)} (got {act!r})")
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
        raise TypeError(f"expected a number for negative_slope (got {negative_slope!r})")


def activate(z: Tensor, act: str, negative_slope: float, inplace: bool = False) -> Tensor:
    """act(z); ``inplace`` overwrites ``z`` (for a fresh tensor nobody else holds)."""
    if act == "relu":
        return TF.relu(z, inplace=inplace)
    if act == "leaky_relu":
        return TF.leaky_relu(z, negative_slope, inplace=inplace)
    if act == "silu":
        return TF.silu(z, inplace=inplace)
    return z


def activation_grad(dy: Tensor, z: Tensor, act: str, negative_slope: float) -> Tensor:
    """dL/dz = dL/dy * act'(z), with ``z`` the pre-activation."""
    if act == "relu":
        # torch's threshold_backward: 0 where z <= 0, else dy (a NaN z passes dy on, as in torch)
        return torch.where(z <= 0, torch.zeros((), dtype=dy.dtype, device=dy.device), dy)
    if act == "leaky_relu":
        return torch.where(z > 0, dy, dy * negative_slope)
    if act == "silu":
        s = torch.sigmoid(z)
        return dy * s * (1 + z * (1 - s))
    return dy


def invert(y: Tensor, act: str, negative_slope: float) -> Tensor:
    """The pre-activation z from the output y, for the invertible activations (slope > 0)."""
    if act == "leaky_relu":
        return torch.where(y >= 0, y, y / negative_slope)
    if act == "identity":
        return y
    raise ValueError(f"expected an invertible activation ({', '.join(INVERTIBLE)}) (got {act!r})")
