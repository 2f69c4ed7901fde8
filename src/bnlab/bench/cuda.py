"""``bnlab bench --device cuda``: bnlab's Triton backend against torch's batch norm on a GPU.

Each case times three callables interleaved (the order flips every repeat): bnlab (the Triton
backend the dispatch chooses for CUDA tensors), torch's native batch norm (cuDNN or PyTorch's own
kernels, as torch chooses) and ``torch.compile`` of torch's batch norm (``dynamic=True``, so one
compile serves every shape of a dtype and layout). A sample is one call between two CUDA events,
after a 256 MiB write that flushes the L2 cache; the row reports medians.

Rows: the batch-norm shapes of ResNet-50 (batch 64, 224x224 input) in NCHW and channels_last,
float32 / float16 / bfloat16, training forward+backward and eval; the hard shapes (few channels with
a huge N*L, BatchNorm1d with more than 100k rows, inputs under 256K elements); fused BN+ReLU and
BN+SiLU against torch's BN followed by the activation, with the activation-sized bytes autograd
saves for each (the (C,) statistics, which both keep, left out).

Byte models (bytes moved per element for a training forward+backward): *two-pass* 8 element sizes
(forward: read x for the statistics, read x and write y; backward: read dy and x for the sums,
read dy and x and write dx), *ideal* 5 (x once forward, y written, dy and x once backward, dx
written); eval 2 (read x, write y). Each row gives the bandwidth reached under the two-pass model
as a fraction of the card's nominal peak (a table of known cards; otherwise of the measured copy
bandwidth, which the header states) and the error against a float64 reference next to torch's.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
import torch.nn.functional as tnf

from .timing import is_terminal, progress_line

# Nominal peak memory bandwidth, GB/s, by a substring of torch.cuda.get_device_name().
PEAK_GBPS = {
    "H200": 4800.0,
    "H100 PCIe": 2000.0,
    "H100 NVL": 3900.0,
    "H100": 3350.0,  # SXM
    "A100-SXM4-80GB": 2039.0,
    "A100 80GB PCIe": 1935.0,
    "A100": 1555.0,
    "L40S": 864.0,
    "L4": 300.0,
    "A10G": 600.0,
    "V100": 900.0,
    "T4": 320.0,
}
RESNET50 = [  # (C, H) of every batch-norm layer shape in torchvision's ResNet-50 at 224x224
    (64, 112),
    (64, 56),
    (256, 56),
    (128, 56),
    (128, 28),
    (512, 28),
    (256, 28),
    (256, 14),
    (1024, 14),
    (512, 14),
    (512, 7),
    (2048, 7),
]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
HARD = [  # (label, shape)
    ("few channels, huge N*L", (20, 6, 65536)),
    ("BatchNorm1d, 131072 rows", (131072, 64)),
    ("BatchNorm1d, 262144 rows", (262144, 16)),
    ("small input", (32, 64, 8, 8)),
    ("small input", (64, 256)),
]


def available() -> bool:
    return torch.cuda.is_available()


def peak_gbps() -> tuple[float, str]:
    """The card's nominal peak bandwidth and where it came from (the table, else a measured copy)."""
    name = torch.cuda.get_device_name()
    for key, value in PEAK_GBPS.items():
        if key in name:
            return value, f"nominal peak of {key}"
    return copy_gbps(), "measured device copy (card not in the table)"


def copy_gbps(nbytes: int = 1 << 30) -> float:
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = math.inf
    for _ in range(5):
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return 2 * nbytes / best / 1e9


class Timer:
    """CUDA-event timings with the L2 cache flushed before every sample."""

    def __init__(self, flush_bytes: int = 256 << 20) -> None:
        self.flush = torch.empty(flush_bytes, dtype=torch.uint8, device="cuda")
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def sample(self, fn) -> float:
        self.flush.zero_()
        self.start.record()
        fn()
        self.end.record()
        torch.cuda.synchronize()
        return self.start.elapsed_time(self.end) / 1e3

    def interleaved(self, fns: dict, repeats: int, warmup: int = 3) -> dict[str, float]:
        """Median seconds per call of each callable, sampled alternately."""
        names = list(fns)
        for _ in range(warmup):
            for name in names:
                fns[name]()
        torch.cuda.synchronize()
        samples: dict[str, list[float]] = {name: [] for name in names}
        for rep in range(repeats):
            for name in names if rep % 2 == 0 else names[::-1]:
                samples[name].append(self.sample(fns[name]))
        return {name: statistics.median(s) for name, s in samples.items()}


def _input(shape, dtype, layout, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(shape, generator=gen, device="cuda", dtype=torch.float32).mul_(2).add_(0.5).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _layers(C: int, dims: int, dtype):
    import bnlab

    ours_cls = {2: bnlab.nn.BatchNorm1d, 3: bnlab.nn.BatchNorm1d, 4: bnlab.nn.BatchNorm2d}[dims]
    ref_cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}[dims]
    return ours_cls(C, device="cuda", dtype=dtype), ref_cls(C, device="cuda", dtype=dtype)


_COMPILED: dict = {}


def _compiled_bn():
    """torch.compile of torch's training batch norm (one function; dynamic shapes)."""
    if "bn" not in _COMPILED:

        def bn(x, w, b, rm, rv):
            return tnf.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5)

        _COMPILED["bn"] = torch.compile(bn, dynamic=True)
    return _COMPILED["bn"]


def _train_step(module_or_fn, x, dy):
    xr = x.detach().requires_grad_()

    def step():
        xr.grad = None
        module_or_fn(xr).backward(dy)

    return step


def _error_vs_float64(ours, ref, x, dy) -> tuple[float, float]:
    """Max abs error of the training output and input gradient against float64 (ours, torch's)."""
    x64 = x.detach().double().requires_grad_()
    y64 = tnf.batch_norm(x64, None, None, ref.weight.detach().double(), ref.bias.detach().double(), True)
    (g64,) = torch.autograd.grad(y64, x64, dy.double())
    errs = []
    for m in (ours, ref):
        xi = x.detach().clone().requires_grad_()
        y = m(xi)
        y.backward(dy)
        errs.append(max(float((y.double() - y64).abs().max()), float((xi.grad.double() - g64).abs().max())))
    return errs[0], errs[1]


def bn_case(
    shape, dtype_name: str, layout: str, timer: Timer, peak: float, repeats: int, label: str = ""
) -> list[dict]:
    """Training forward+backward and eval rows of one shape."""
    dtype = DTYPES[dtype_name]
    C = shape[1]
    ours, ref = _layers(C, len(shape), dtype)
    with torch.no_grad():
        w = torch.rand(C, device="cuda") + 0.5
        b = torch.randn(C, device="cuda")
        for m in (ours, ref):
            m.weight.copy_(w)
            m.bias.copy_(b)
    x = _input(shape, dtype, layout)
    dy = _input(shape, dtype, layout, seed=1)
    compiled = _compiled_bn()
    params = [ref.weight, ref.bias, ref.running_mean.clone(), ref.running_var.clone()]
    fns = {
        "bnlab": _train_step(ours, x, dy),
        "torch": _train_step(ref, x, dy),
        "compiled": _train_step(lambda t: compiled(t, *params), x, dy),
    }
    t = timer.interleaved(fns, repeats)
    numel, size = x.numel(), x.element_size()
    err_ours, err_torch = _error_vs_float64(ours, ref, x, dy)
    rows = [_row("train_fwd_bwd", shape, dtype_name, layout, t, 8 * numel * size, peak, label, err_ours, err_torch)]
    ours.eval()
    ref.eval()
    with torch.no_grad():
        t = timer.interleaved({"bnlab": lambda: ours(x), "torch": lambda: ref(x)}, repeats)
    rows.append(_row("eval", shape, dtype_name, layout, t, 2 * numel * size, peak, label))
    return rows


def fused_case(shape, act: str, dtype_name: str, layout: str, timer: Timer, peak: float, repeats: int) -> dict:
    """BatchNormAct2d against torch's BN followed by the activation: time and saved bytes."""
    import bnlab

    dtype = DTYPES[dtype_name]
    C = shape[1]
    ours = bnlab.nn.BatchNormAct2d(C, act=act, device="cuda", dtype=dtype)
    ref = torch.nn.BatchNorm2d(C, device="cuda", dtype=dtype)
    torch_act = {"relu": tnf.relu, "silu": tnf.silu}[act]
    x = _input(shape, dtype, layout)
    dy = _input(shape, dtype, layout, seed=1)
    fns = {"bnlab": _train_step(ours, x, dy), "torch": _train_step(lambda t: torch_act(ref(t)), x, dy)}
    t = timer.interleaved(fns, repeats)
    ours_bytes = saved_bytes(lambda: ours(x.detach().requires_grad_()), x.numel())
    torch_bytes = saved_bytes(lambda: torch_act(ref(x.detach().requires_grad_())), x.numel())
    row = _row(f"bn_{act}_fwd_bwd", shape, dtype_name, layout, t, 8 * x.numel() * x.element_size(), peak, "fused")
    row.update(saved_bytes=ours_bytes, torch_saved_bytes=torch_bytes, saved_ratio=ours_bytes / torch_bytes)
    return row


def saved_bytes(fn, numel: int) -> int:
    """Bytes of the distinct activation-sized storages (``numel`` elements: x, y, a mask) autograd
    saves while ``fn`` runs; the (C,) statistics and the parameters are left out."""
    seen: dict[int, int] = {}

    def pack(t):
        if t.numel() == numel:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _row(op, shape, dtype, layout, t, nbytes, peak, label="", err_ours=None, err_torch=None) -> dict:
    gbps = nbytes / t["bnlab"] / 1e9
    return {
        "op": op,
        "shape": list(shape),
        "dtype": dtype,
        "layout": layout,
        "label": label,
        "bnlab_us": t["bnlab"] * 1e6,
        "torch_us": t["torch"] * 1e6,
        "compiled_us": t["compiled"] * 1e6 if "compiled" in t else None,
        "ratio": t["bnlab"] / t["torch"],
        "ratio_compiled": t["bnlab"] / t["compiled"] if "compiled" in t else None,
        "gbps": gbps,
        "peak_fraction": gbps / peak,
        "err_bnlab": err_ours,
        "err_torch": err_torch,
    }


def plan(quick: bool) -> list[tuple]:
    """(kind, args) of every case, in the order that covers every goal soonest (a run cut short by
    its time budget keeps the most): a third of the ResNet-50 shapes in every dtype and layout, the
    hard shapes, fused BN+act, then (unless quick) the other ResNet-50 shapes."""
    n = 32 if quick else 64
    first, rest = RESNET50[1::3], [s for s in RESNET50 if s not in RESNET50[1::3]]

    def resnet(shapes):
        return [
            ("bn", (n, c, h, h), dtype, layout, "resnet50")
            for dtype in DTYPES
            for layout in ("nchw", "channels_last")
            for c, h in shapes
        ]

    cases = resnet(first)
    cases += [("bn", shape, dtype, "nchw", label) for label, shape in HARD for dtype in ("float32", "bfloat16")]
    cases += [
        ("fused", (n, 256, 56, 56), act, dtype, "channels_last")
        for act in ("relu", "silu")
        for dtype in ("float32", "bfloat16")
    ]
    return cases if quick else cases + resnet(rest)


def run(quick: bool = False, repeats: int = 15, progress=None, on_row=None, budget_s: float | None = None) -> dict:
    """Every case of :func:`plan`; ``on_row`` is called with each row as it is measured (so a run cut
    short still shows what it measured); after ``budget_s`` seconds no new case starts."""
    from ..core import dispatch

    started = time.perf_counter()
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    probe = torch.empty(2, 3, device="cuda")
    backend = dispatch.select(probe)
    peak, peak_source = peak_gbps()
    timer = Timer()
    rows = []
    done = 0
    cases = plan(quick)
    skipped = 0
    for i, case in enumerate(cases):
        if budget_s is not None and time.perf_counter() - started > budget_s:
            skipped = len(cases) - i
            break
        if progress is not None:
            progress_line(progress, f"[{i + 1}/{len(cases)}] {case} ({time.perf_counter() - started:.0f} s)")
        try:
            if case[0] == "bn":
                _, shape, dtype, layout, label = case
                rows += bn_case(shape, dtype, layout, timer, peak, repeats, label)
            else:
                _, shape, act, dtype, layout = case
                rows.append(fused_case(shape, act, dtype, layout, timer, peak, repeats))
        except Exception as e:  # noqa: BLE001 (one failing case must not lose the others' figures)
            rows.append({"op": "error", "case": repr(case), "error": f"{type(e).__name__}: {e}"})
        torch.cuda.empty_cache()
        if on_row is not None:
            for row in rows[done:]:
                on_row(row)
        done = len(rows)
    if progress is not None and is_terminal(progress):
        progress.write("\r\033[K")
    return {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": _triton_version(),
        "backend": repr(backend),
        "peak_gbps": peak,
        "peak_source": peak_source,
        "rows": rows,
        "goals": goals(rows),
        "cases_not_run": skipped,
        "wall_s": time.perf_counter() - started,
    }


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def _geomean(values) -> float | None:
    values = [v for v in values if v is not None]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def goals(rows: list[dict]) -> list[dict]:
    """The issue's goals, evaluated on this run's medians (None where no row measures one)."""
    ok = [r for r in rows if r["op"] != "error"]
    train = [r for r in ok if r["op"] == "train_fwd_bwd" and r["label"] == "resnet50"]
    half = [r["ratio"] for r in train if r["dtype"] != "float32"]
    f32_nchw = [r["ratio"] for r in train if r["dtype"] == "float32" and r["layout"] == "nchw"]
    big_bf16_cl = [
        r["peak_fraction"]
        for r in train
        if r["dtype"] == "bfloat16" and r["layout"] == "channels_last" and math.prod(r["shape"]) >= 8 << 20
    ]
    few = [r["ratio"] for r in ok if r["op"] == "train_fwd_bwd" and r["label"] == "few channels, huge N*L"]
    rows1d = [r["ratio"] for r in ok if r["op"] == "train_fwd_bwd" and r["label"].startswith("BatchNorm1d")]
    small = [r["ratio"] for r in ok if r["label"] == "small input"]
    fused = [r["ratio"] for r in ok if r["op"].startswith("bn_")]
    saved = [r["saved_ratio"] for r in ok if "saved_ratio" in r]
    evals = [r["ratio"] for r in ok if r["op"] == "eval"]
    errs = [(r["err_bnlab"], r["err_torch"]) for r in ok if r.get("err_bnlab") is not None]

    def goal(text, value, met):
        return {"goal": text, "value": value, "met": None if value is None else met(value)}

    return [
        goal("ResNet-50 fwd+bwd, half types, geomean <= 0.8x torch", _geomean(half), lambda v: v <= 0.8),
        goal("ResNet-50 fwd+bwd, half types, worst <= 1.05x", max(half, default=None), lambda v: v <= 1.05),
        goal("ResNet-50 fwd+bwd, float32 NCHW, geomean <= 0.9x", _geomean(f32_nchw), lambda v: v <= 0.9),
        goal("bf16 channels_last >= 8M elements: >= 75% of peak", min(big_bf16_cl, default=None), lambda v: v >= 0.75),
        goal("(20, 6, 65536) >= 5x faster (ratio <= 0.2)", max(few, default=None), lambda v: v <= 0.2),
        goal("BatchNorm1d > 100k rows <= 1.0x", max(rows1d, default=None), lambda v: v <= 1.0),
        goal("small inputs <= 1.05x", max(small, default=None), lambda v: v <= 1.05),
        goal("fused BN+act fwd+bwd <= 0.65x", max(fused, default=None), lambda v: v <= 0.65),
        goal("fused BN+act saved memory <= 0.5x", max(saved, default=None), lambda v: v <= 0.5),
        goal("eval <= 1.0x everywhere", max(evals, default=None), lambda v: v <= 1.0),
        goal(
            "error vs float64 no larger than torch's (worst ratio, 2x allowed)",
            max((a / max(b, 1e-30) for a, b in errs), default=None),
            lambda v: v <= 2.0,
        ),
    ]


HEADER = (
    f"{'op':<16} {'shape':<18} {'dtype':<9} {'layout':<13} {'bnlab_us':>9} {'torch_us':>9} {'compil_us':>9} "
    f"{'ratio':>6} {'vs-comp':>7} {'GB/s':>7} {'peak':>5} {'err/torch':>9}  label"
)


def format_row(r: dict) -> str:
    if r["op"] == "error":
        return f"error in {r['case']}: {r['error']}"
    shape = "x".join(map(str, r["shape"]))
    comp = "-" if r["compiled_us"] is None else f"{r['compiled_us']:.0f}"
    vs = "-" if r["ratio_compiled"] is None else f"{r['ratio_compiled']:.2f}"
    err = "-" if r.get("err_bnlab") is None else f"{r['err_bnlab'] / max(r['err_torch'], 1e-30):.2f}"
    extra = f"  saved {r['saved_ratio']:.2f}x of torch's" if "saved_ratio" in r else ""
    return (
        f"{r['op']:<16} {shape:<18} {r['dtype']:<9} {r['layout']:<13} {r['bnlab_us']:>9.0f} {r['torch_us']:>9.0f} "
        f"{comp:>9} {r['ratio']:>6.2f} {vs:>7} {r['gbps']:>7.0f} {r['peak_fraction']:>5.2f} {err:>9}  "
        f"{r['label']}{extra}"
    )


def main(quick: bool, repeats: int | None, json_path: str | None, progress=None, budget_s: float | None = None) -> int:
    if not available():
        print("bnlab bench --device cuda: skipped, no CUDA device (torch.cuda.is_available() is False)")
        return 0
    print(
        f"bnlab bench --device cuda: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton "
        f"{_triton_version()}; CUDA events, L2 flushed before each sample, medians; ratio = bnlab / torch "
        "native, vs-comp = bnlab / torch.compile; GB/s and peak under the two-pass byte model (8 element "
        "sizes fwd+bwd, 2 eval); err/torch = bnlab's max error vs float64 over torch's"
    )
    print(HEADER, flush=True)
    result = run(quick, repeats or (7 if quick else 15), progress, lambda r: print(format_row(r), flush=True), budget_s)
    print(f"bnlab backend {result['backend']}; peak {result['peak_gbps']:.0f} GB/s ({result['peak_source']})")
    if result["cases_not_run"]:
        print(f"time budget reached: {result['cases_not_run']} cases not run")
    print("goals (on medians):")
    for g in result["goals"]:
        state = "not measured" if g["met"] is None else ("met" if g["met"] else "MISSED")
        value = "-" if g["value"] is None else f"{g['value']:.2f}"
        print(f"  {state:<12} {value:>6}  {g['goal']}")
    print(f"wall time {result['wall_s']:.0f} s")
    if json_path:
        import json

        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)
    return 0
