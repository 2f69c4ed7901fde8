"""``bnlab bench``: bnlab's batch norm against torch.nn's, timed in one process, on this machine.

For every case (operation x shape x layout x dtype, see :mod:`bnlab.bench.cases`) both libraries
are timed interleaved, after a warm-up, and the medians are reported with their ratio
(bnlab / torch: below 1 is faster), the effective bandwidth of bnlab under the byte model
(training forward 3 passes over the tensor, forward+backward 8, eval 2) and that bandwidth as a
fraction of the machine's copy bandwidth, measured in the same run on a 256 MiB array (read +
write counted). The allocator is pinned first (:mod:`bnlab.bench.environment`), and the run
records its environment, the first-call latency of the fast kernels and the goals of
:mod:`bnlab.bench.goals`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from . import cases as C
from . import contention, environment, goals, timing

DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.bfloat16: "bfloat16", torch.float16: "float16"}
_SHORT = {torch.bfloat16: "bf16", torch.float16: "f16", torch.float32: "f32", torch.float64: "f64"}


def dtype_name(case: C.Case) -> str:
    """A row's dtype: the input's ("bfloat16"), or input/layers where they differ ("bf16/f32")."""
    if case.param_dtype is None or case.param_dtype == case.dtype:
        return DTYPE_NAMES.get(case.dtype, str(case.dtype))
    return f"{_SHORT[case.dtype]}/{_SHORT[case.param_dtype]}"


def _positive(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {text!r})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {value})")
    return value


def _check_before_work(args) -> None:
    """A ValueError for an argument the benchmark would trip over only after running: --ops names,
    and a --json FILE that cannot be written."""
    if args.ops:
        unknown = [op for op in args.ops.split(",") if op not in C.OPS]
        if unknown:
            raise ValueError(f"expected --ops among {','.join(C.OPS)} (got {','.join(unknown)})")
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        if os.path.isdir(args.json):
            raise ValueError(f"expected --json to name a file (got the folder {args.json!r})")
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise ValueError(f"expected --json in an existing, writable folder (got {args.json!r})")
        if os.path.exists(args.json) and not os.access(args.json, os.W_OK):
            raise ValueError(f"expected --json to be writable (got {args.json!r})")


def add_arguments(parser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2d and BatchNorm1d (256, 512) float32 cases, fewer repeats (under a minute)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the rows and the environment to FILE")
    parser.add_argument(
        "--repeats",
        type=_positive,
        default=None,
        help="timed samples per library and case (default 7 with --quick, else 15)",
    )
    parser.add_argument(
        "--threads",
        type=_positive,
        default=None,
        help="torch (and so bnlab) threads (default: torch's current setting)",
    )
    parser.add_argument("--ops", default=None, help=f"comma-separated operations (default all: {','.join(C.OPS)})")
    parser.add_argument(
        "--shapes",
        type=C.parse_shapes,
        default=None,
        help="comma-separated shapes instead of the built-in list, e.g. 256x512,8x128x56x56",
    )
    parser.add_argument("--no-pin", action="store_true", help="leave the allocator as it is")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: the Triton backend against torch's native and compiled batch norm on the GPU "
        "(bnlab.bench.cuda; skipped without one)",
    )
    parser.add_argument(
        "--budget", type=float, default=None, metavar="SECONDS", help="--device cuda: start no case after this"
    )
    parser.add_argument(
        "--contention",
        type=_thread_list,
        default=None,
        metavar="THREADS",
        help="thread counts for the two-processes-sharing-the-cores rows, e.g. 1,2 "
        "(default 1; none with --quick; 0 for none)",
    )


def _thread_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated thread counts like 1,2 (got {text!r})") from None
    if values == [0]:
        return []
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected thread counts >= 1, or 0 for none (got {text!r})")
    return values


def first_call_seconds() -> float:
    """Seconds of the first fast-path calls in this process: the JIT compile, or loading it from the
    disk cache (fwd, fwd+bwd and eval of BatchNorm2d, NCHW and channels_last)."""
    start = time.perf_counter()
    for layout in ("nchw", "channels_last"):
        case = C.Case("train_fwd_bwd", 2, (2, 3, 4, 4), layout, torch.float32)
        for build in (C.OPS["train_fwd_bwd"].build, C.OPS["eval"].build):
            build(case)[1]()
    return time.perf_counter() - start


def _loadavg() -> list[float] | None:
    """The 1/5/15-minute load averages: other work on the machine shows up here."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run_case(case: C.Case, copy_gbps: float, repeats: int, min_sample_s: float = 0.002) -> dict:
    """Time one case; the row carries the fields the JSON promises."""
    op = C.OPS[case.op]
    torch_fn, bnlab_fn, path, *extra = op.build(case)
    clock = time.process_time if op.cpu_time else time.perf_counter
    samples = timing.sample_interleaved(
        {"torch": torch_fn, "bnlab": bnlab_fn}, repeats, min_sample_s=min_sample_s, clock=clock
    )
    med = {name: statistics.median(s) for name, s in samples.items()}
    best = {name: min(s) for name, s in samples.items()}
    nbytes = op.passes * torch.Size(case.shape).numel() * torch.empty((), dtype=case.dtype).element_size()
    gbps = nbytes / med["bnlab"] / 1e9 if op.passes else None  # whole-model rows have no byte model
    return {
        "op": case.op,
        "dims": case.dims,
        "shape": list(case.shape),
        "layout": case.layout,
        "dtype": dtype_name(case),
        "torch_us": med["torch"] * 1e6,
        "bnlab_us": med["bnlab"] * 1e6,
        "ratio": med["bnlab"] / med["torch"],
        "gbps": gbps,
        "bandwidth_fraction": None if gbps is None else gbps / copy_gbps,
        "passes": op.passes,
        "path": path,
        # The fastest sample of each: on a busy machine the noise only ever slows a sample down,
        # so the ratio of minima is the steadier estimate there (the headline stays the median).
        "torch_min_us": best["torch"] * 1e6,
        "bnlab_min_us": best["bnlab"] * 1e6,
        "ratio_min": best["bnlab"] / best["torch"],
        "clock": "cpu" if op.cpu_time else "wall",
        **(extra[0] if extra else {}),
    }


def format_row(r: dict) -> str:
    shape = "x".join(map(str, r["shape"]))
    return (
        f"{r['op']:<14} {r['dims']}d {shape:<14} {r['layout']:<13} {r['dtype']:<8} "
        f"{r['torch_us']:>9.0f} {r['bnlab_us']:>9.0f} {r['ratio']:>6.2f} {_num(r['gbps'], 6, 1)} "
        f"{_num(r['bandwidth_fraction'], 5, 2)} {r['ratio_min']:>9.2f}  {r['path']}"
        + (f"  saved {r['saved_ratio']:.2f}x" if "saved_ratio" in r else "")
    )


def _num(value, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


HEADER = (
    f"{'op':<14} {'dims':<2} {'shape':<14} {'layout':<13} {'dtype':<8} {'torch_us':>9} "
    f"{'bnlab_us':>9} {'ratio':>6} {'GB/s':>6} {'frac':>5} {'min-ratio':>9}  path"
)


def run(
    quick: bool,
    repeats: int | None = None,
    threads: int | None = None,
    ops: list[str] | None = None,
    pin: bool = True,
    shapes=None,
    copy_bytes: int = 256 << 20,
    progress=None,
    contention_threads: list[int] | None = None,
) -> dict:
    """The whole benchmark; returns ``{"environment", "copy_gbps", "first_call_s", "rows", "goals"}``.

    ``progress``: a text stream for the progress line (None: no progress line).
    ``contention_threads``: thread counts of the :mod:`.contention` rows (default [1], none if quick).
    """
    started = time.perf_counter()
    load_before = _loadavg()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"expected threads >= 1 (got {threads})")
        torch.set_num_threads(threads)
    repeats = repeats if repeats is not None else (7 if quick else 15)
    allocator = environment.pin_allocator() if pin else "not pinned (--no-pin)"
    first_call = first_call_seconds()
    copy_gbps = timing.copy_bandwidth(copy_bytes)
    plan = C.plan(quick, ops, shapes)
    rows = []
    for i, case in enumerate(plan):
        if progress is not None:
            shape = "x".join(map(str, case.shape))
            timing.progress_line(
                progress,
                f"[{i + 1}/{len(plan)}] {case.op} {case.dims}d {shape} {case.layout} "
                f"{dtype_name(case)} ({time.perf_counter() - started:.0f} s)",
            )
        rows.append(run_case(case, copy_gbps, repeats))
    for n in contention_threads if contention_threads is not None else ([] if quick else [1]):
        if progress is not None:
            timing.progress_line(
                progress, f"[contention] two processes x {n} thread(s) ({time.perf_counter() - started:.0f} s)"
            )
        rows.append(contention.measure(n))
    if progress is not None and timing.is_terminal(progress):
        progress.write("\r\033[K")
    return {
        "environment": environment.environment(allocator)
        | {"repeats": repeats, "quick": quick, "loadavg_before": load_before, "loadavg_after": _loadavg()},
        "copy_gbps": copy_gbps,
        "first_call_s": first_call,
        "rows": rows,
        "goals": goals.evaluate(rows),
        "wall_s": time.perf_counter() - started,
    }


def main(args) -> int:
    try:
        _check_before_work(args)
    except ValueError as e:
        print(f"bnlab bench: {e}", file=sys.stderr)
        return 2
    if getattr(args, "device", "cpu") == "cuda":
        from . import cuda

        return cuda.main(args.quick, args.repeats, args.json, progress=sys.stderr, budget_s=args.budget)
    ops = args.ops.split(",") if args.ops else None
    result = run(
        args.quick,
        args.repeats,
        args.threads,
        ops,
        pin=not args.no_pin,
        shapes=args.shapes,
        progress=sys.stderr,
        contention_threads=args.contention,
    )
    env = result["environment"]
    print(
        f"bnlab bench: torch {env['torch']}, numba {env['numba']}, {env['torch_threads']} threads, "
        f"{env['cpu']}; copy bandwidth {result['copy_gbps']:.1f} GB/s; first fast call "
        f"{result['first_call_s']:.2f} s; medians of {env['repeats']} interleaved samples; "
        f"load average {env['loadavg_before']} before, {env['loadavg_after']} after"
    )
    print(HEADER)
    for r in result["rows"]:
        print(contention.format_row(r) if r["op"] == "contention" else format_row(r))
    print("goals (on medians; in brackets the same on the fastest samples):")
    for g in result["goals"]:
        state = "not measured" if g["met"] is None else ("met" if g["met"] else "MISSED")
        value = "-" if g["value"] is None else f"{g['value']:.2f}"
        best = f"({g['value_min']:.2f})" if g.get("value_min") is not None else ""
        print(f"  {state:<12} {value:>6} {best:>7}  {g['goal']}")
    print(f"wall time {result['wall_s']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")
    return 0
