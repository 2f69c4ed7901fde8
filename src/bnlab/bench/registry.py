"""The registry of `bnlab bench`'s operations: a :class:`Case` to time, and :data:`OPS`, filled by
:func:`register` as each case module (``cases_*.py``) is imported; :mod:`bnlab.bench.cases` plans
the run over them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch


@dataclasses.dataclass(frozen=True)
class Case:
    op: str
    dims: int  # 1, 2, 3: BatchNorm1d/2d/3d
    shape: tuple[int, ...]
    layout: str  # "nchw" (contiguous) or "channels_last"
    dtype: torch.dtype
    # The layers' dtype where it is not the input's: a float32 layer fed bfloat16 (torch's mixed precision,
    # a float32 model under CPU autocast). None: the input's.
    param_dtype: torch.dtype | None = None


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
