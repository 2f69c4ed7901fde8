"""Rows for ``bnlab bench``: fused BatchNormAct2d vs torch's BatchNorm2d followed by the activation.

For each activation and NCHW float32 shape: training forward+backward time of both, interleaved in
one process with warm-up, median of repeats; and the bytes autograd keeps for backward (parameters
and buffers left out, one count per storage). Row fields follow ``bnlab bench``'s JSON rows: op,
dims, shape, layout, dtype, torch_us, bnlab_us, ratio, gbps, bandwidth_fraction, plus
saved_bytes_torch, saved_bytes_bnlab and saved_ratio. ``gbps`` uses the forward+backward byte model
of 8 passes over the tensor; ``bandwidth_fraction`` needs the machine's copy bandwidth (pass it).

Run alone: ``python -m bnlab.benchmarks.norm_act [--quick] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from ..nn import BatchNormAct2d

SHAPES = [(64, 64, 32, 32), (128, 256, 8, 8), (32, 16, 64, 64), (8, 128, 56, 56)]
QUICK_SHAPES = SHAPES[:2]
ACTS = {"relu": nn.ReLU, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}
PASSES_FWD_BWD = 8  # byte model: forward+backward touches the tensor 8 times


def saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves in one training forward, once per storage, without the
    module's own parameters and buffers."""
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


def _fwd_bwd(module: nn.Module, x: torch.Tensor, g: torch.Tensor) -> float:
    x.grad = None
    start = time.perf_counter()
    module(x).backward(g)
    return time.perf_counter() - start


def time_pair(ours: nn.Module, ref: nn.Module, x: torch.Tensor, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """Median seconds of forward+backward of ``ours`` and ``ref``, alternating so noise hits both."""
    x = x.detach().requires_grad_()
    g = torch.randn_like(x)
    for _ in range(warmup):
        _fwd_bwd(ours, x, g), _fwd_bwd(ref, x, g)
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(repeats):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for k in order:
            times[k].append(_fwd_bwd((ours, ref)[k], x, g))
    return statistics.median(times[0]), statistics.median(times[1])


def rows(quick: bool = False, repeats: int | None = None, copy_gbps: float | None = None,
         acts: tuple[str, ...] = ("relu", "silu")) -> list[dict]:
    repeats = repeats or (5 if quick else 15)
    out = []
    for act in acts:
        for shape in QUICK_SHAPES if quick else SHAPES:
            c = shape[1]
            ours = BatchNormAct2d(c, act)
            ref = nn.Sequential(nn.BatchNorm2d(c), ACTS[act]())
            x = torch.randn(shape)
            t_ours, t_ref = time_pair(ours, ref, x, repeats)
            gbps = PASSES_FWD_BWD * x.numel() * x.element_size() / t_ours / 1e9
            s_ours, s_ref = saved_bytes(ours, x), saved_bytes(ref, x)
            out.append({
                "op": f"bn_{act}_fwd_bwd", "dims": 2, "shape": list(shape), "layout": "nchw", "dtype": "float32",
                "torch_us": t_ref * 1e6, "bnlab_us": t_ours * 1e6, "ratio": t_ours / t_ref, "gbps": gbps,
                "bandwidth_fraction": None if copy_gbps is None else gbps / copy_gbps,
                "saved_bytes_torch": s_ref, "saved_bytes_bnlab": s_ours, "saved_ratio": s_ours / s_ref,
            })
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two shapes, 5 repeats")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        result = rows(args.quick)
    finally:
        torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, {args.threads} threads, float32 NCHW, training forward+backward, median")
    print(f"{'op':<20} {'shape':<18} {'torch us':>10} {'bnlab us':>10} {'ratio':>6} {'saved':>6}")
    for r in result:
        print(f"{r['op']:<20} {str(tuple(r['shape'])):<18} {r['torch_us']:10.0f} {r['bnlab_us']:10.0f} "
              f"{r['ratio']:6.2f} {r['saved_ratio']:6.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": args.threads, "rows": result}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
