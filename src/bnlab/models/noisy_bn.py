r"""Batch norm followed by injected "covariate shift" noise (Santurkar et al., 2018, §2.1).

"How Does Batch Normalization Help Optimization?" (https://arxiv.org/abs/1805.11604) adds, after
each BN layer and only in training, a per-step random affine distortion of its output:

.. math::
    a \leftarrow s \odot a + m, \qquad
    \mu_t \sim U(-0.5, 0.5),\ \sigma_t \sim U(1, 1.25) \text{ per layer and step}, \\
    m \sim U(\mu_t - 0.1, \mu_t + 0.1),\ s \sim N(\sigma_t, 0.1) \text{ per element}.

So the distribution each following layer sees changes from step to step although BN is there.
The noise is drawn from torch's default generator on the input's device, so a seeded run
(:func:`torch.manual_seed`) is reproducible. In eval the layer is plain BN. The normalization is
bnlab's :class:`~bnlab.nn.BatchNorm1d`/``2d`` (these subclass them, so BN checkpoints load).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..nn import BatchNorm1d, BatchNorm2d

# The ranges of the noise, as published.
MU_RANGE = (-0.5, 0.5)
SIGMA_RANGE = (1.0, 1.25)
M_HALF_WIDTH = 0.1
S_STD = 0.1


def covariate_shift_noise(a: Tensor) -> Tensor:
    """``s * a + m`` with one (mu_t, sigma_t) for the whole tensor and m, s drawn per element."""
    mu = torch.empty((), device=a.device).uniform_(*MU_RANGE)
    sigma = torch.empty((), device=a.device).uniform_(*SIGMA_RANGE)
    m = (torch.rand(a.shape, device=a.device) * 2 - 1) * M_HALF_WIDTH + mu
    s = torch.randn(a.shape, device=a.device) * S_STD + sigma
    return a * s.to(a.dtype) + m.to(a.dtype)


class _Noisy:
    def forward(self, input: Tensor) -> Tensor:
        y = super().forward(input)  # type: ignore[misc]  # a mixin: the BN class after it in the MRO
        return covariate_shift_noise(y) if self.training else y  # type: ignore[attr-defined]  # (the BN class's)


class NoisyBatchNorm1d(_Noisy, BatchNorm1d):
    """:class:`bnlab.nn.BatchNorm1d` with Santurkar's noise on its output in training."""


class NoisyBatchNorm2d(_Noisy, BatchNorm2d):
    """:class:`bnlab.nn.BatchNorm2d` with Santurkar's noise on its output in training."""
