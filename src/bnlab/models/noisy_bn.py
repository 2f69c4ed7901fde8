r"""Batch norm followed by injected "covariate shift" noise (Santurkar et al., 2018, §2.1).

"How Does Batch Normalization Help Optimization?" (https://arxiv.org/abs/1805.11604) adds, after
each BN layer and only in training, a per-step random affine distortion of its output:

.. math::
    a \leftarrow s \odot a + m, \qquad
    \mu_t \sim U(-0.5, 0.5),\ \sigma_t \sim U(1, 1.25) \text{ per layer and step}, \\
    m \sim U(\mu_t - 0.1, \mu_t + 0.1),\ s \sim N(\sigma_t, 0.1) \text{ per element}.

So the distribution each following layer sees changes from step to step although BN is there.
The noise is drawn from the layer's ``generator`` if it has one, else from torch's default generator
on the input's device, so a seeded run (:func:`torch.manual_seed`) is reproducible.
:func:`own_generator` gives a model's noisy layers one generator of their own that continues the
default generator's stream from where it stands: the same draws the model would take from it, which
lets several models draw side by side (seeds trained in a group, :mod:`bnlab.train.grouped`). In eval
the layer is plain BN. The normalization is
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


def draw_noise(
    shape: torch.Size | tuple[int, ...], device: torch.device, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``(s, m)`` of ``shape`` (float32) for one step: one (mu_t, sigma_t), then m and s per element, drawn
    from ``generator`` (default: torch's default generator on ``device``)."""
    mu = torch.empty((), device=device).uniform_(*MU_RANGE, generator=generator)
    sigma = torch.empty((), device=device).uniform_(*SIGMA_RANGE, generator=generator)
    m = (torch.rand(shape, device=device, generator=generator) * 2 - 1) * M_HALF_WIDTH + mu
    s = torch.randn(shape, device=device, generator=generator) * S_STD + sigma
    return s, m


def covariate_shift_noise(a: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``s * a + m`` with (s, m) from :func:`draw_noise` for ``a``'s shape."""
    s, m = draw_noise(a.shape, a.device, generator)
    return a * s.to(a.dtype) + m.to(a.dtype)


class _Noisy:
    generator: torch.Generator | None = None  # where the noise comes from (None: torch's default generator)

    def forward(self, input: Tensor) -> Tensor:
        y = super().forward(input)  # type: ignore[misc]  # a mixin: the BN class after it in the MRO
        return covariate_shift_noise(y, self.generator) if self.training else y  # type: ignore[attr-defined]  # (the BN class's)


def own_generator(model: torch.nn.Module) -> torch.nn.Module:
    """Give ``model``'s noisy BN layers one generator of their own, on the model's device and in the state
    torch's default generator for that device is in now, and return ``model``: they then draw, in the
    same order, the noise they would have drawn from the default generator from here on (if nothing else
    draws from it in between). The default generator is left as it is."""
    layers = [m for m in model.modules() if isinstance(m, _Noisy)]
    if layers:
        device = next(model.parameters(), torch.empty(0)).device
        generator = torch.Generator(device=device)
        generator.set_state(torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state())
        for m in layers:
            m.generator = generator
    return model


class NoisyBatchNorm1d(_Noisy, BatchNorm1d):
    """:class:`bnlab.nn.BatchNorm1d` with Santurkar's noise on its output in training."""


class NoisyBatchNorm2d(_Noisy, BatchNorm2d):
    """:class:`bnlab.nn.BatchNorm2d` with Santurkar's noise on its output in training."""
