"""What `bnlab bench` times: operations (rows' ``op``) over shapes, layouts and dtypes.

An operation is a builder registered in :data:`OPS` with its byte model (how many passes over the
input tensor an ideal implementation makes). A builder gets a :class:`Case` and returns the torch
callable, the bnlab callable and the path bnlab takes ("fast" or "reference: <why>"). Adding a row
type (fused BN + activation, folded vs unfolded eval, trainer overhead) is one builder and one
``register`` call; :func:`plan` then runs it over the shapes below.
"""

from __future__ import annotations

import torch

# The case modules register their rows on import, in this order (the plain layers' rows first).
from . import cases_bn, cases_compiled, cases_fused, cases_models, cases_overhead  # noqa: F401
from .cases_bn import make_input, make_layers
from .registry import OPS, Built, Case, Op, register

__all__ = [
    "EXTRA_DTYPES",
    "OPS",
    "QUICK_SHAPES",
    "SHAPES",
    "Built",
    "Case",
    "Op",
    "layouts",
    "make_input",
    "make_layers",
    "parse_shapes",
    "plan",
    "register",
]

# Shapes per layer dimensionality (the list, plus a 1d (N, C, L) and a 3d case).
SHAPES: dict[int, list[tuple[int, ...]]] = {
    1: [(256, 512), (64, 128, 256)],
    2: [(64, 64, 32, 32), (128, 256, 8, 8), (32, 16, 64, 64), (8, 128, 56, 56)],
    3: [(4, 32, 16, 32, 32)],
}
QUICK_SHAPES: dict[int, list[tuple[int, ...]]] = {1: [(256, 512)], 2: SHAPES[2]}
# Extra dtypes of the full run, on NCHW 2d shapes (bnlab runs its reference path for these).
EXTRA_DTYPES = (torch.bfloat16,)


@dataclasses.dataclass(frozen=True)
class Case:
    op: str
    dims: int  # 1, 2, 3: BatchNorm1d/2d/3d
    shape: tuple[int, ...]
    layout: str  # "nchw" (contiguous) or "channels_last"
    dtype: torch.dtype


# (torch_fn, bnlab_fn, path) or (torch_fn, bnlab_fn, path, extra row fields)
Built = tuple


@dataclasses.dataclass(frozen=True)
class Op:
    name: str
    passes: int  # byte model: passes over the input tensor's bytes
    build: Callable[[Case], Built]
    dims: tuple[int, ...] = (1, 2, 3)
    layouts: tuple[str, ...] | None = None  # None: every layout of the shape
    float32_only: bool = False
    shapes: tuple[tuple[int, ...], ...] | None = None  # fixed shapes instead of the run's list
    quick: bool = True  # part of --quick runs
    cpu_time: bool = False  # timed in this process's CPU time instead of wall time


OPS: dict[str, Op] = {}


def register(name: str, passes: int, dims: tuple[int, ...] = (1, 2, 3), **options):
    """Decorator: register ``build(case) -> (torch_fn, bnlab_fn, path[, extra])`` as operation
    ``name``; ``options`` are :class:`Op`'s layouts, float32_only, shapes, quick and cpu_time."""

    def wrap(build: Callable[[Case], Built]) -> Callable[[Case], Built]:
        if name in OPS:
            raise ValueError(f"expected a new operation name (got {name!r}, already registered)")
        OPS[name] = Op(name, passes, build, dims, **options)
        return build

    return wrap


def parse_shapes(text: str) -> dict[int, list[tuple[int, ...]]]:
    """``"256x512,8x128x56x56"`` -> {1: [(256, 512)], 2: [(8, 128, 56, 56)]}; the layer follows from
    the rank: 2 or 3 dims BatchNorm1d, 4 BatchNorm2d, 5 BatchNorm3d."""
    shapes: dict[int, list[tuple[int, ...]]] = {}
    for item in text.split(","):
        try:
            shape = tuple(int(s) for s in item.strip().lower().split("x"))
        except ValueError:
            raise ValueError(f"expected shapes like 8x128x56x56 (got {item!r})") from None
        if len(shape) not in (2, 3, 4, 5) or min(shape) < 1:
            raise ValueError(f"expected a positive shape of 2 to 5 dims (got {item!r})")
        dims = {2: 1, 3: 1, 4: 2, 5: 3}[len(shape)]
        shapes.setdefault(dims, []).append(shape)
    return shapes


def layouts(dims: int, shape: tuple[int, ...]) -> tuple[str, ...]:
    """Memory layouts timed for a shape: channels_last exists for 4D and 5D tensors."""
    return ("nchw", "channels_last") if len(shape) in (4, 5) else ("nchw",)


def plan(
    quick: bool, ops: list[str] | None = None, shapes: dict[int, list[tuple[int, ...]]] | None = None
) -> list[Case]:
    """The cases of a run: every registered op over its dims' shapes, layouts and dtypes."""
    shapes = shapes if shapes is not None else (QUICK_SHAPES if quick else SHAPES)
    names = [n for n in OPS if not quick or OPS[n].quick] if ops is None else ops
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise ValueError(f"expected operations from {list(OPS)} (got {unknown})")
    cases = []
    for name in names:
        op = OPS[name]
        op_shapes = {d: list(op.shapes) for d in op.dims} if op.shapes else shapes  # fixed: always theirs
        for dims, dim_shapes in op_shapes.items():
            if dims not in op.dims:
                continue
            for shape in dim_shapes:
                for layout in layouts(dims, shape):
                    if op.layouts is not None and layout not in op.layouts:
                        continue
                    dtypes = [torch.float32]
                    if not quick and not op.float32_only and dims == 2 and layout == "nchw":
                        dtypes += EXTRA_DTYPES
                    cases += [Case(name, dims, shape, layout, dtype) for dtype in dtypes]
    return cases


# --- batch norm layers --------------------------------------------------------------------------


def make_input(case: Case, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(case.shape, generator=gen).to(case.dtype)
    if case.layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    return x


def make_layers(case: Case) -> tuple[torch.nn.Module, torch.nn.Module]:
    """torch.nn's and bnlab's BatchNorm{dims}d with the same random affine parameters."""
    channels = case.shape[1]
    ref = getattr(torch.nn, f"BatchNorm{case.dims}d")(channels, dtype=case.dtype)
    ours = getattr(bnn, f"BatchNorm{case.dims}d")(channels, dtype=case.dtype)
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


# Row types beyond the plain layers register themselves on import.
from . import cases_compiled, cases_fused, cases_models, cases_overhead, cases_seeds  # noqa: E402,F401
