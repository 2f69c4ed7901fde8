"""``bnlab check``: compare bnlab's layers with torch.nn on this machine, case by case.

A quick self-test for users: every layer, flag combination and dtype below runs a few training
steps and an eval step in both libraries and reports the largest differences in outputs,
gradients and running statistics. The test suite (tests/test_parity.py) covers a larger space.
"""

from __future__ import annotations

import argparse
import itertools

import torch

from . import nn as bnn

# Largest difference accepted per dtype, relative to the scale of the compared tensor.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}
SHAPES: dict[int, list[tuple[int, ...]]] = {
    1: [(8, 6), (4, 6, 7)],
    2: [(4, 6, 5, 5), (1, 6, 3, 3)],
    3: [(2, 6, 3, 4, 5)],
}
LAYERS = {
    1: (bnn.BatchNorm1d, torch.nn.BatchNorm1d),
    2: (bnn.BatchNorm2d, torch.nn.BatchNorm2d),
    3: (bnn.BatchNorm3d, torch.nn.BatchNorm3d),
}


def _rel_diff(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    if a is None and b is None:
        return 0.0
    if a is None or b is None:
        return float("inf")
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1.0)) if b.numel() else 0.0


def compare(
    dims: int,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    momentum,
    affine: bool,
    track: bool,
    steps: int = 3,
    seed: int = 0,
) -> float:
    """Largest relative difference between bnlab and torch over `steps` training steps + eval."""
    ours_cls, ref_cls = LAYERS[dims]
    kw = dict(momentum=momentum, affine=affine, track_running_stats=track, dtype=dtype)
    ours, ref = ours_cls(shape[1], **kw), ref_cls(shape[1], **kw)
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for step in range(steps + 1):
        ours.train(step < steps)
        ref.train(step < steps)
        x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 3).to(dtype)
        xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
        yo, yr = ours(xo), ref(xr)
        g = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
        yo.backward(g)
        yr.backward(g)
        pairs = [
            (yo, yr),
            (xo.grad, xr.grad),
            (ours.running_mean, ref.running_mean),
            (ours.running_var, ref.running_var),
        ]
        if affine:
            pairs += [(ours.weight.grad, ref.weight.grad), (ours.bias.grad, ref.bias.grad)]
        worst = max([worst] + [_rel_diff(a, b) for a, b in pairs])
        if track and int(ours.num_batches_tracked) != int(ref.num_batches_tracked):  # type: ignore[arg-type]  # track
            return float("inf")
    return worst


def _steps(text: str) -> int:
    """An argparse type: a number of training steps, >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer (got {text!r})") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer (got {value})")
    return value


def add_arguments(parser) -> None:
    parser.add_argument("--steps", type=_steps, default=3, help="training steps before the eval step (default 3)")


def main(args) -> int:
    print(
        f"bnlab vs torch.nn {torch.__version__}: max relative difference per case "
        f"(outputs, grads, running stats; {args.steps} training steps then eval)"
    )
    print(f"{'layer':<12} {'shape':<18} {'dtype':<9} {'momentum':<9} {'affine':<7} {'track':<6} {'diff':>9}  ok")
    failures = 0
    cases = itertools.product(SHAPES.items(), TOLERANCE, (0.1, None), (True, False), (True, False))
    for (dims, shapes), dtype, momentum, affine, track in cases:
        for shape in shapes:
            diff = compare(dims, shape, dtype, momentum, affine, track, args.steps)
            ok = diff <= TOLERANCE[dtype]
            failures += not ok
            print(
                f"BatchNorm{dims}d  {shape!s:<18} {str(dtype).split('.')[1]:<9} {momentum!s:<9} "
                f"{affine!s:<7} {track!s:<6} {diff:9.2e}  {'yes' if ok else 'NO'}"
            )
    print(f"{'all cases match' if not failures else f'{failures} case(s) differ beyond tolerance'}")
    return 1 if failures else 0
