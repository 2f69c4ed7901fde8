"""The from-scratch BatchNorm2d against torch.nn.BatchNorm2d, measured: the largest relative
differences (``max |ours - torch| / max |torch|``) in outputs, gradients and running statistics over
three training steps and one evaluation, in float32, the precision people train in
(tests/test_scratch.py holds them to 1e-10 in float64)."""

from __future__ import annotations

import torch

from .. import scratch


def run(channels: int = 16, shape: tuple[int, int, int] = (32, 8, 8), steps: int = 3) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    ours, ref = scratch.BatchNorm2d(channels), torch.nn.BatchNorm2d(channels)
    with torch.no_grad():
        ours.weight.copy_(torch.rand(channels, generator=gen) + 0.5)
        ours.bias.copy_(torch.randn(channels, generator=gen))
    ref.load_state_dict(ours.state_dict())
    worst = {
        "output": 0.0,
        "input_gradient": 0.0,
        "weight_gradient": 0.0,
        "running_mean": 0.0,
        "running_var": 0.0,
        "eval_output": 0.0,
    }

    def note(key, a, b):
        a, b = a.detach(), b.detach()
        worst[key] = max(worst[key], float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)))

    for _ in range(steps):
        x = torch.randn(shape[0], channels, *shape[1:], generator=gen) * 2 + 1  # (N, C, H, W)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), ref(xb)
        g = torch.randn(ya.shape, generator=gen)
        ya.backward(g)
        yb.backward(g)
        note("output", ya, yb)
        note("input_gradient", xa.grad, xb.grad)
        note("weight_gradient", ours.weight.grad, ref.weight.grad)
        note("running_mean", ours.running_mean, ref.running_mean)
        note("running_var", ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    x = torch.randn(4, channels, *shape[1:], generator=gen)
    with torch.no_grad():
        note("eval_output", ours(x), ref(x))
    worst["largest"] = max(worst.values())
    return worst
