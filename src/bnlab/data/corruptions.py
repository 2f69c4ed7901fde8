"""Corruptions of input tensors, one plain function each: ``f(x, value, generator) -> x``.

In the spirit of CIFAR-10-C (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations", ICLR 2019, https://arxiv.org/abs/1903.12261): a corruption
is applied to every test input at a graded strength ``value``; the table of data sets, corruption
names and the value of each severity is :mod:`bnlab.data.shifted`. Randomness comes only from the
``generator`` passed in, so a corrupted set is a function of its seed. Inputs are (N, L) signals
or (N, C, H, W) images; "per example" means over all of an example's values.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["gain", "offset", "contrast", "gaussian_noise", "blur"]


def gain(x: Tensor, value: float, generator: torch.Generator | None = None) -> Tensor:
    """``x * value``: a sensor's amplification."""
    return x * value


def offset(x: Tensor, value: float, generator: torch.Generator | None = None) -> Tensor:
    """``x + value``: a sensor's baseline shift."""
    return x + value


def contrast(x: Tensor, value: float, generator: torch.Generator | None = None) -> Tensor:
    """``m + value * (x - m)`` with ``m`` each example's mean (CIFAR-10-C's contrast)."""
    m = x.flatten(1).mean(1).view(-1, *([1] * (x.dim() - 1)))  # (N, 1, ...)
    return m + value * (x - m)


def gaussian_noise(x: Tensor, value: float, generator: torch.Generator | None = None) -> Tensor:
    """``x + value * N(0, 1)``, independently per value, drawn from ``generator``."""
    return x + value * torch.randn(x.shape, generator=generator, dtype=x.dtype)


def blur(x: Tensor, value: float, generator: torch.Generator | None = None) -> Tensor:
    """Gaussian blur of images (N, C, H, W) with standard deviation ``value`` pixels.

    A separable kernel of radius ``ceil(3 * value)``, normalized to sum 1; the border is
    replicated (as an image's edge pixels continue), so a constant image stays constant.
    """
    if x.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W) to blur (got {x.dim()}D input)")
    radius = max(1, math.ceil(3 * value))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / value) ** 2)
    k = k / k.sum()
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)  # (N*C, 1, H, W): every channel blurred alike
    y = torch.nn.functional.pad(y, (radius, radius, radius, radius), mode="replicate")
    y = torch.nn.functional.conv2d(y, k.view(1, 1, 1, -1))  # along W
    y = torch.nn.functional.conv2d(y, k.view(1, 1, -1, 1))  # along H
    return y.reshape(n, c, h, w)
