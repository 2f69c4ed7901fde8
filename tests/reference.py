"""Helpers the tests share: tolerances and comparisons against torch.nn as the reference.

The rule, stated once: bnlab's result must be within ``tolerance(ref)`` of torch's, OR -- where the
computation is ill-conditioned (e.g. the input gradient with two values per channel, which is
nearly zero and so pure rounding noise in both libraries) -- at least as close to the exact
float64 answer as torch's is: ``|ours - exact| <= 2 * |torch - exact| + tolerance``.
"""

from __future__ import annotations

import torch

# Tolerance, in units of the dtype's machine epsilon, scaled by the largest magnitude of the
# reference tensor (at least 1). Half types: a few ulps, since both libraries accumulate in float32
# and round once; float32/float64: reduction-order differences only.
ULPS = {torch.float64: 1e5, torch.float32: 64, torch.bfloat16: 4, torch.float16: 4}


def tolerance(ref: torch.Tensor) -> float:
    scale = max(1.0, float(ref.detach().abs().max())) if ref.numel() else 1.0
    return ULPS[ref.dtype] * torch.finfo(ref.dtype).eps * scale


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


def assert_matches(ours, ref, what: str, exact: torch.Tensor | None = None) -> None:
    """ours == ref within tolerance(ref), or no less accurate than ref against ``exact``."""
    if ref is None or ours is None:
        assert ours is None and ref is None, f"{what}: ours is {ours!r}, torch's is {ref!r}"
        return
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} vs torch's {tuple(ref.shape)}"
    assert ours.dtype == ref.dtype, f"{what}: dtype {ours.dtype} vs torch's {ref.dtype}"
    if ref.numel() == 0:
        return
    diff, tol = _max_diff(ours, ref), tolerance(ref)
    if diff <= tol:
        return
    assert exact is not None, f"{what}: max abs difference {diff:.3g} > tolerance {tol:.3g} ({ref.dtype})"
    ours_err, ref_err = _max_diff(ours, exact), _max_diff(ref, exact)
    assert ours_err <= 2 * ref_err + tol, (
        f"{what}: differs from torch by {diff:.3g} (> {tol:.3g}) and is less accurate: error vs the "
        f"float64 answer {ours_err:.3g}, torch's {ref_err:.3g} ({ref.dtype})"
    )
