"""Bench rows for the fused BN + activation layer: ``bn_relu_fwd_bwd``, ``bn_silu_fwd_bwd``.

torch's BatchNorm2d followed by the activation against :class:`bnlab.nn.BatchNormAct2d`, training
forward+backward on NCHW float32. Each row also carries the bytes autograd keeps for backward
(``saved_bytes_torch``, ``saved_bytes_bnlab``, ``saved_ratio``; one count per storage, the
modules' own parameters and buffers left out): the fused layer keeps x only, the pair keeps BN's
input and the activation's input or output.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import nn as bnn
from .cases_bn import _path, make_input
from .registry import Case, register

_ACTS = {"relu": nn.ReLU, "silu": nn.SiLU}


def saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves in one training forward of ``module`` on ``x``."""
    own = {t.untyped_storage().data_ptr() for t in list(module.parameters()) + list(module.buffers())}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in own:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x.detach().requires_grad_())
    return sum(seen.values())


def _fused(act: str):
    def build(case: Case):
        c = case.shape[1]
        ref = nn.Sequential(nn.BatchNorm2d(c), _ACTS[act]())
        ours = bnn.BatchNormAct2d(c, act=act)
        ours.load_state_dict(ref[0].state_dict())
        x = make_input(case).requires_grad_()
        dy = make_input(case, seed=2)

        def step(m, params):
            return lambda: torch.autograd.grad(m(x), (x, *params), dy)

        s_ref, s_ours = saved_bytes(ref, x), saved_bytes(ours, x)
        extra = {"saved_bytes_torch": s_ref, "saved_bytes_bnlab": s_ours, "saved_ratio": s_ours / s_ref}
        return (
            step(ref, (ref[0].weight, ref[0].bias)),
            step(ours, (ours.weight, ours.bias)),
            _path(x, ours.weight, ours.bias),
            extra,
        )

    return build


for _act in _ACTS:
    register(f"bn_{_act}_fwd_bwd", passes=8, dims=(2,), layouts=("nchw",), float32_only=True)(_fused(_act))
