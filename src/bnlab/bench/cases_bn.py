"""Bench rows of the plain batch-norm layers (``train_fwd``, ``train_fwd_bwd``, ``eval``), and the
helpers the other case modules share: the input, the pair of layers and the path bnlab takes.
"""

from __future__ import annotations

import torch

from .. import nn as bnn
from ..core import dispatch
from .registry import Built, Case, register


def make_input(case: Case, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(case.shape, generator=gen).to(case.dtype)
    if case.layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    return x


def make_layers(case: Case) -> tuple[torch.nn.Module, torch.nn.Module]:
    """torch.nn's and bnlab's BatchNorm{dims}d with the same random affine parameters, in the case's
    layer dtype."""
    channels, dtype = case.shape[1], case.param_dtype or case.dtype
    ref = getattr(torch.nn, f"BatchNorm{case.dims}d")(channels, dtype=dtype)
    ours = getattr(bnn, f"BatchNorm{case.dims}d")(channels, dtype=dtype)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        ref.weight.copy_(torch.rand(channels, generator=gen) + 0.5)
        ref.bias.copy_(torch.randn(channels, generator=gen))
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _path(x: torch.Tensor, *vectors) -> str:
    why = dispatch.why_reference(x, *vectors)
    return "fast" if why is None else f"reference: {why}"


@register("train_fwd", passes=3)
def _train_fwd(case: Case) -> Built:
    ref, ours = make_layers(case)
    x = make_input(case).requires_grad_()
    return (lambda: ref(x)), (lambda: ours(x)), _path(x, ours.weight, ours.bias)


@register("train_fwd_bwd", passes=8)
def _train_fwd_bwd(case: Case) -> Built:
    ref, ours = make_layers(case)
    x = make_input(case).requires_grad_()
    dy = make_input(case, seed=2)

    def step(m):
        return lambda: torch.autograd.grad(m(x), (x, m.weight, m.bias), dy)

    return step(ref), step(ours), _path(x, ours.weight, ours.bias)


@register("eval", passes=2)
def _eval(case: Case) -> Built:
    ref, ours = make_layers(case)
    ref.eval()
    ours.eval()
    x = make_input(case)

    def run(m):
        def call():
            with torch.no_grad():
                return m(x)

        return call

    return run(ref), run(ours), _path(x, ours.running_mean, ours.running_var, ours.weight, ours.bias)
