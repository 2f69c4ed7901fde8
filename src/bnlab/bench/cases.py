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
from . import cases_bn, cases_compiled, cases_fused, cases_models, cases_overhead, cases_seeds  # noqa: F401
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
# Extra dtypes of the full run, on NCHW 2d shapes, each through layers of its own dtype and through
# float32 layers (mixed precision: the row's dtype reads "bf16/f32").
EXTRA_DTYPES = (torch.bfloat16,)


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
                    cases += [Case(name, dims, shape, layout, d, torch.float32) for d in dtypes if d != torch.float32]
    return cases
