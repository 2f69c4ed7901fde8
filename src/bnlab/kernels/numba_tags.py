"""Compile-time choices for the numba kernels, passed as the dtype of an empty "tag" array.

numba compiles one specialisation of a function per argument *type*. Passing a choice as the dtype
of an empty array therefore makes each choice its own compiled code, built on first use only:

* the fused activation (:data:`ACT_TAGS`): each is a straight-line loop LLVM can vectorize, and
  plain batch norm never compiles the others;
* serial or parallel (:data:`SERIAL`, :data:`PARALLEL`): a process that only meets small tensors
  never compiles the parallel drivers, the slowest part of the JIT.

A plain runtime flag would compile every branch into every kernel (about 4x the JIT time) or, as
a per-element branch, stop the vectorizer.
"""

from __future__ import annotations

import numba
import numpy as np
from numba.extending import overload

from .fast_exp import exp

# --- activations --------------------------------------------------------------------------------
# The activation reaches the kernels as the dtype of an empty "tag" array (ACT_TAGS): numba compiles
# one specialisation per argument type, so each activation is compiled -- on first use only -- as
# its own straight-line loop that LLVM vectorizes, and plain batch norm never compiles the others.

ACT_TAGS: dict[str, np.ndarray] = {
    "identity": np.empty(0, np.uint8),
    "relu": np.empty(0, np.uint16),
    "leaky_relu": np.empty(0, np.uint32),
    "silu": np.empty(0, np.uint64),
}
_TAG_ACT = {numba.from_dtype(tag.dtype): name for name, tag in ACT_TAGS.items()}


def activate(tag, z, slope):
    """act(z) for the activation named by ``tag`` (numba-only; see the overload below)."""
    raise NotImplementedError("called from numba code only")


def activate_grad(tag, dy, z, slope):
    """dy * act'(z); at z == 0 relu and leaky_relu take the left derivative, as torch does."""
    raise NotImplementedError("called from numba code only")


def _one(z_type):
    """1 in the dtype of the numba scalar type ``z_type`` (float32 or float64)."""
    return numba.np.numpy_support.as_dtype(z_type).type(1)


def _zero(z_type):
    """0 in the dtype of ``z_type`` (a literal 0 would promote float32 to float64)."""
    return numba.np.numpy_support.as_dtype(z_type).type(0)


@overload(activate)
def _act_impl(tag, z, slope):
    name = _TAG_ACT[tag.dtype]
    if name == "relu":
        zero = _zero(z)  # a select, not z * 0 (NaN at z = -inf): relu(-inf) = 0, relu(NaN) = NaN as torch
        return lambda tag, z, slope: zero if z <= 0 else z
    if name == "leaky_relu":
        return lambda tag, z, slope: z if z > 0 else z * slope
    if name == "silu":
        one = _one(z)  # a literal 1 would promote float32 to float64 (and stop the vectorizer)
        return lambda tag, z, slope: z / (one + exp(-z))
    return lambda tag, z, slope: z


@overload(activate_grad)
def _act_grad_impl(tag, dy, z, slope):
    name = _TAG_ACT[tag.dtype]
    if name == "relu":
        zero = _zero(z)  # torch's threshold_backward: 0 where z <= 0 (also for an infinite dy), else dy
        return lambda tag, dy, z, slope: zero if z <= 0 else dy
    if name == "leaky_relu":
        return lambda tag, dy, z, slope: dy if z > 0 else dy * slope
    if name == "silu":
        one = _one(z)

        def silu_grad(tag, dy, z, slope):
            s = one / (one + exp(-z))
            return dy * (s * (one + z * (one - s)))

        return silu_grad
    return lambda tag, dy, z, slope: dy


# --- serial or parallel, chosen by the type of a tag ----------------------------------------------
# Like the activation, the choice arrives as an empty tag array (PARALLEL or SERIAL): each entry
# point is compiled per mode on first use, so a process that only meets small tensors never pays
# for compiling the parallel drivers (the slowest part of the JIT).

PARALLEL = np.empty(0, np.bool_)
SERIAL = np.empty(0, np.int8)


def serial_or_parallel(parallel_driver, serial_driver):
    """A numba-callable ``run(mode, *args)`` that calls one driver or the other by ``mode``'s type."""

    def run(mode, *args):
        raise NotImplementedError("called from numba code only")

    @overload(run)
    def _pick(mode, *args):
        if mode.dtype == numba.types.bool_:
            return lambda mode, *args: parallel_driver(*args)
        return lambda mode, *args: serial_driver(*args)

    return run
