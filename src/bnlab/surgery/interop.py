r"""BN state to and from Keras and Flax, as plain numpy arrays and dicts (no TensorFlow, no JAX).

Names and conventions (:mod:`.conventions` converts the two that differ):

============== ============================== ================================= ===========================
               PyTorch / bnlab                Keras ``BatchNormalization``      Flax ``nn.BatchNorm``
============== ============================== ================================= ===========================
scale          ``weight``                     ``gamma``                         ``params/scale``
shift          ``bias``                       ``beta``                          ``params/bias``
mean           ``running_mean``               ``moving_mean``                   ``batch_stats/mean``
variance       ``running_var`` (unbiased avg) ``moving_variance`` (biased avg)  ``batch_stats/var`` (biased)
momentum       weight of new batch, 0.1       decay of old value, 0.99          decay of old value, 0.99
epsilon        1e-5                           1e-3                              1e-5
============== ============================== ================================= ===========================

All three normalize as ``(x - mean) / sqrt(var + eps) * scale + shift`` in inference, so a layer
with converted state gives the same outputs (Keras and Flax put channels last: transpose the
*inputs*, the per-channel state is the same).

``batch_count`` chooses between two goals that differ by the factor ``m/(m-1)``:

* ``batch_count=None`` (default): the variance is copied unchanged, so the converted layer gives
  **the same inference outputs** as the original;
* ``batch_count=m`` (values per channel in one training batch, N times the spatial size): the
  variance is converted to the other convention, so it equals **the moving average the other
  framework would have kept** on the same batches, and training can continue there exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..nn import batchnorm as bnlab_bn
from .conventions import (
    FLAX_DEFAULTS,
    KERAS_DEFAULTS,
    biased_to_unbiased,
    decay_to_momentum,
    momentum_to_decay,
    unbiased_to_biased,
)
from .sources import is_batchnorm

__all__ = ["to_keras", "from_keras", "keras_weight_list", "to_flax", "from_flax"]

_CLASSES = {1: bnlab_bn.BatchNorm1d, 2: bnlab_bn.BatchNorm2d, 3: bnlab_bn.BatchNorm3d}


def _array(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy().copy()


def _check_exportable(bn: nn.Module) -> None:
    if not is_batchnorm(bn):
        raise TypeError(f"expected a batch-norm layer (got {type(bn).__name__})")
    if not bn.track_running_stats or bn.running_mean is None:
        raise ValueError("expected a layer with running statistics to export (got track_running_stats=False)")
    if bn.momentum is None:
        raise ValueError(
            "momentum=None (cumulative average) has no Keras/Flax equivalent: set bn.momentum to the value "
            "to use from now on before exporting"
        )


def _export(bn: Any, batch_count: int | None) -> dict[str, Any]:
    _check_exportable(bn)  # a BN layer (any source, duck-typed) with running statistics and a momentum
    return {
        "weight": None if bn.weight is None else _array(bn.weight),
        "bias": None if bn.bias is None else _array(bn.bias),
        "mean": _array(bn.running_mean),
        "var": _array(unbiased_to_biased(bn.running_var.detach(), batch_count)),
        "decay": momentum_to_decay(bn.momentum),
        "eps": bn.eps,
    }


def _build(
    weight, bias, mean, var, decay: float, eps: float, dims: int, batch_count: int | None, dtype: torch.dtype
) -> nn.Module:
    if dims not in _CLASSES:
        raise ValueError(f"expected dims in (1, 2, 3) (got {dims!r})")
    mean = np.asarray(mean)
    if mean.ndim != 1:
        raise ValueError(f"expected a 1-D moving mean of shape (C,) (got shape {mean.shape})")
    c = mean.shape[0]
    affine = weight is not None or bias is not None
    bn = _CLASSES[dims](
        c,
        eps=float(eps),
        momentum=decay_to_momentum(float(decay)),
        affine=affine,
        bias=bias is not None or not affine,
        dtype=dtype,
    )
    with torch.no_grad():
        for name, value, default in (("weight", weight, 1.0), ("bias", bias, 0.0)):
            if affine and getattr(bn, name) is not None:
                arr = np.full(c, default) if value is None else np.asarray(value)
                if arr.shape != (c,):
                    raise ValueError(f"expected {name} of shape ({c},) (got {arr.shape})")
                getattr(bn, name).copy_(torch.as_tensor(arr, dtype=dtype))
        var = np.asarray(var)
        if var.shape != (c,):
            raise ValueError(f"expected a variance of shape ({c},) (got {var.shape})")
        assert bn.running_mean is not None and bn.running_var is not None  # built with track_running_stats
        bn.running_mean.copy_(torch.as_tensor(mean, dtype=dtype))
        bn.running_var.copy_(biased_to_unbiased(torch.as_tensor(var, dtype=torch.float64), batch_count).to(dtype))
    return bn.eval()


# --- Keras ------------------------------------------------------------------------------------


def to_keras(bn: nn.Module, *, batch_count: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A BN layer's state as Keras ``BatchNormalization`` weights and config.

    Returns:
        ``(weights, config)``: weights ``{"gamma", "beta", "moving_mean", "moving_variance"}`` (gamma /
        beta absent without scale / center), config ``{"momentum": 1 - momentum, "epsilon", "scale",
        "center"}``. ``keras_weight_list(weights)`` orders them for ``layer.set_weights``.
    """
    s = _export(bn, batch_count)
    weights = {"gamma": s["weight"], "beta": s["bias"], "moving_mean": s["mean"], "moving_variance": s["var"]}
    weights = {k: v for k, v in weights.items() if v is not None}
    config = {"momentum": s["decay"], "epsilon": s["eps"], "scale": "gamma" in weights, "center": "beta" in weights}
    return weights, config


def keras_weight_list(weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Keras' ``get_weights()`` order: gamma, beta, moving_mean, moving_variance (absent ones skipped)."""
    return [weights[k] for k in ("gamma", "beta", "moving_mean", "moving_variance") if k in weights]


def from_keras(
    weights: Mapping[str, Any] | Sequence[Any],
    config: Mapping[str, Any] | None = None,
    *,
    dims: int = 2,
    batch_count: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """A bnlab ``BatchNorm{dims}d`` (eval mode) from Keras ``BatchNormalization`` weights.

    Args:
        weights: a dict with Keras' names or the ``get_weights()`` list (its layout given by
            config's ``scale`` / ``center``, default True).
        config: Keras' layer config; ``momentum`` (a decay) and ``epsilon`` default to Keras'
            0.99 and 1e-3.
        dims: 1, 2 or 3: which bnlab layer to build. Default: 2
        batch_count: values per channel of one training batch, for the variance correction.
        dtype: dtype of the layer. Default: float32
    """
    config = dict(config or {})
    if not isinstance(weights, Mapping):
        names = [n for n, on in (("gamma", config.get("scale", True)), ("beta", config.get("center", True))) if on]
        names += ["moving_mean", "moving_variance"]
        weights = list(weights)
        if len(weights) != len(names):
            raise ValueError(f"expected {len(names)} arrays ({', '.join(names)}) (got {len(weights)})")
        weights = dict(zip(names, weights))
    missing = {"moving_mean", "moving_variance"} - set(weights)
    if missing:
        raise ValueError(f"expected Keras weights with {sorted(missing)} (got keys {sorted(weights)})")
    return _build(
        weights.get("gamma"),
        weights.get("beta"),
        weights["moving_mean"],
        weights["moving_variance"],
        config.get("momentum", KERAS_DEFAULTS["momentum"]),
        config.get("epsilon", KERAS_DEFAULTS["epsilon"]),
        dims,
        batch_count,
        dtype,
    )


# --- Flax -------------------------------------------------------------------------------------


def to_flax(
    bn: nn.Module, *, batch_count: int | None = None
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """A BN layer's state as Flax ``nn.BatchNorm`` variables and constructor arguments.

    Returns:
        ``(variables, config)``: ``{"params": {"scale", "bias"}, "batch_stats": {"mean", "var"}}``
        and ``{"momentum": 1 - momentum, "epsilon", "use_scale", "use_bias"}``.
    """
    s = _export(bn, batch_count)
    params = {k: v for k, v in (("scale", s["weight"]), ("bias", s["bias"])) if v is not None}
    variables = {"params": params, "batch_stats": {"mean": s["mean"], "var": s["var"]}}
    config = {"momentum": s["decay"], "epsilon": s["eps"], "use_scale": "scale" in params, "use_bias": "bias" in params}
    return variables, config


def from_flax(
    variables: Mapping[str, Mapping[str, Any]],
    config: Mapping[str, Any] | None = None,
    *,
    dims: int = 2,
    batch_count: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """A bnlab ``BatchNorm{dims}d`` (eval mode) from Flax ``nn.BatchNorm`` variables.

    Args:
        variables: ``{"params": {"scale", "bias"}, "batch_stats": {"mean", "var"}}`` (params may
            be empty or absent without scale / bias).
        config: Flax's constructor arguments; ``momentum`` (a decay) and ``epsilon`` default to
            Flax's 0.99 and 1e-5.
        dims, batch_count, dtype: as in :func:`from_keras`.
    """
    stats = variables.get("batch_stats")
    if not isinstance(stats, Mapping) or not {"mean", "var"} <= set(stats):
        raise ValueError(f"expected variables['batch_stats'] with 'mean' and 'var' (got {stats!r:.80})")
    params = variables.get("params") or {}
    config = dict(config or {})
    return _build(
        params.get("scale"),
        params.get("bias"),
        stats["mean"],
        stats["var"],
        config.get("momentum", FLAX_DEFAULTS["momentum"]),
        config.get("epsilon", FLAX_DEFAULTS["epsilon"]),
        dims,
        batch_count,
        dtype,
    )
