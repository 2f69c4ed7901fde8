"""How the numba kernels read and write the elements of x, y, dy and dx: in their own dtype, or bfloat16.

The kernels compute in float32 or float64, the dtype of the per-channel vectors. The large tensors are
stored in that dtype too, or in bfloat16, which reaches the kernels as the raw 16 bits (a uint16 array)
and is computed in float32:

* :func:`load` -- an element as the compute dtype: a float is itself; bfloat16 bits are the top half of a
  float32, so the widening is exact (the bits shifted up by 16);
* :func:`store` -- a computed value as the element of the array it goes into: a float array takes it
  as it is; a bfloat16 one takes it rounded to nearest even, NaN as 0x7FC0 -- c10::BFloat16's own
  rounding, so a kernel's bfloat16 output is what torch's ``.to(torch.bfloat16)`` makes of the float32
  value;
* :func:`zero`, :func:`as_compute`, :func:`zeros` -- a scalar 0, a cast and a (n,) array of zeros in the
  compute dtype of an element array (float32 for bfloat16).

For float32 and float64 arrays each helper is the identity (or the dtype's own constructor), so those
kernels compile to the code they had before bfloat16 existed. All are numba-only (``@overload``).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype

__all__ = ["as_compute", "load", "store", "zero", "zeros"]

BF16 = types.uint16  # the element type of a bfloat16 tensor's data, as the kernels see it


@intrinsic
def _bf16_to_f32(typingctx, bits):
    """The float32 whose top 16 bits are ``bits`` (exact)."""
    if bits != BF16:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        wide = builder.shl(builder.zext(args[0], i32), ir.Constant(i32, 16))
        return builder.bitcast(wide, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _f32_to_bf16(typingctx, value):
    """``value`` rounded to bfloat16 (nearest, ties to even; NaN -> 0x7FC0), as its 16 bits."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.bitcast(args[0], i32)
        lsb = builder.and_(builder.lshr(bits, ir.Constant(i32, 16)), ir.Constant(i32, 1))
        rounded = builder.lshr(builder.add(bits, builder.add(lsb, ir.Constant(i32, 0x7FFF))), ir.Constant(i32, 16))
        nan = builder.fcmp_unordered("uno", args[0], args[0])
        return builder.trunc(builder.select(nan, ir.Constant(i32, 0x7FC0), rounded), ir.IntType(16))

    return BF16(value), codegen


def load(v):
    """An element of x or dy in the compute dtype (numba-only)."""
    raise NotImplementedError("called from numba code only")


def store(a, v):
    """The computed ``v`` as an element of the array ``a`` (numba-only)."""
    raise NotImplementedError("called from numba code only")


def zero(a):
    """0 in the compute dtype of the element array ``a`` (numba-only)."""
    raise NotImplementedError("called from numba code only")


def as_compute(a, v):
    """``v`` cast to the compute dtype of the element array ``a`` (numba-only)."""
    raise NotImplementedError("called from numba code only")


def zeros(n, a):
    """A (n,) array of zeros in the compute dtype of the element array ``a`` (numba-only)."""
    raise NotImplementedError("called from numba code only")


def _compute(dtype):
    """The numpy scalar type the kernels compute in for elements of numba type ``dtype``."""
    return np.float32 if dtype == BF16 else as_dtype(dtype).type


@overload(load)
def _load(v):
    if v == BF16:
        return lambda v: _bf16_to_f32(v)
    if isinstance(v, types.Float):
        return lambda v: v
    return None


@overload(store)
def _store(a, v):
    if a.dtype == BF16:
        return lambda a, v: _f32_to_bf16(np.float32(v))
    return lambda a, v: v


@overload(zero)
def _zero(a):
    t = _compute(a.dtype)
    return lambda a: t(0)


@overload(as_compute)
def _as_compute(a, v):
    t = _compute(a.dtype)
    return lambda a, v: t(v)


@overload(zeros)
def _zeros(n, a):
    t = _compute(a.dtype)
    return lambda n, a: np.zeros(n, t)
