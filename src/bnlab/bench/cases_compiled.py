"""Bench row against what a user would pick instead of bnlab: ``compiled_fwd_bwd``.

torch's BatchNorm2d through ``torch.compile`` (default mode, inductor; compiled once per row, the
compile itself not timed) against bnlab's BatchNorm2d in eager mode, training forward+backward,
float32. Not part of ``--quick``: each row compiles for a few seconds.
"""

from __future__ import annotations

import torch

from .cases_bn import _path, make_input, make_layers
from .registry import Built, Case, register


@register("compiled_fwd_bwd", passes=8, dims=(2,), float32_only=True, quick=False)
def _compiled_fwd_bwd(case: Case) -> Built:
    torch._dynamo.reset()  # a fresh compile per row, clear of the recompilation limit
    ref, ours = make_layers(case)
    compiled = torch.compile(ref)
    x = make_input(case).requires_grad_()
    dy = make_input(case, seed=2)

    def torch_step():
        return torch.autograd.grad(compiled(x), (x, ref.weight, ref.bias), dy)

    def bnlab_step():
        return torch.autograd.grad(ours(x), (x, ours.weight, ours.bias), dy)

    return torch_step, bnlab_step, _path(x, ours.weight, ours.bias), {"torch_compiled": True}
