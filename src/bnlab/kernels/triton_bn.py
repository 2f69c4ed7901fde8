r"""bnlab's Triton kernels: batch norm's passes over an (N, C, S) or (R, C) tensor, float32 inside.

Called by the Triton backend (:mod:`bnlab.core.backends.triton_gpu`), which picks the grids with
:func:`blocks`; nothing here imports the rest of bnlab. Under ``TRITON_INTERPRET=1`` (read by triton
when this module is imported) the same source runs on CPU tensors in Triton's interpreter.

**Memory.** Two families, a ``ROWS`` flag on every kernel:

* *planes*: contiguous (N, C, S) with S > 1 -- a channel is N planes of S contiguous values;
* *rows*: (R, C) with the channels innermost -- (N, C), channels_last 2d/3d (R = N*H*W[*D]).

Either way a channel's m values are cut into *units* of ``BLOCK_M`` values (a unit is a piece of one
plane, or ``BLOCK_M`` rows), and a tile is one unit of ``BLOCK_C`` channels. The grid is (channel
blocks, chunks): chunk k takes the units ``[k*U, (k+1)*U)``, so the reduction over N*S is split
across programs, not one program per channel.

**Reductions are deterministic.** A reduction's first kernel writes each chunk's partials (count,
mean and M2 for the statistics, float64; the two sums for the backward, float32) to its own slot
``[k, c]`` of a buffer; a second kernel merges the slots in the order k = 0, 1, ... (Chan et al.'s
parallel formula for the moments). There are no atomics, so a shape gives the same bits on every
run.

**Precision.** A tile's moments are taken in float32 around the tile's own mean (the corrected
two-pass: the deviations' sum corrects the mean and M2), and the tiles and chunks are merged in
float64, so a large common offset costs no precision: the mean is the float64 mean rounded once,
and the training forward takes that rounding back through the bias (``HAS_LO``), so y is
normalized by the float64 mean. A chunk whose float32 moments come out inf or NaN (values whose
squares pass float32's range, from about 1e19; an inf or NaN in x) is taken again in float64, so
huge values give torch's infinite variance and inf/NaN inputs torch's inf/NaN statistics; the
running-average update follows torch on an infinite or NaN side. The float64 pass runs only for
such a chunk (ordinary data pays one test per chunk).

**Launches per direction:** training forward = partial moments + merge (with the running-average
update, the momentum read from a tensor when it is one: no host sync) + normalize; backward =
partial sums + merge (with dweight, dbias) + dx. Small inputs (the backend decides) take one launch
per direction instead: :func:`forward_single` and :func:`backward_single`, one program per channel
block, merging their tiles in the same order.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["ACT_CODES", "Blocks", "blocks"]

# The fused activation, as the kernels' ACT constant (bnlab.activations.ACTIVATIONS).
ACT_CODES = {"identity": 0, "relu": 1, "leaky_relu": 2, "silu": 3}


class Blocks:
    """The launch geometry of one call: tile ``BLOCK_M`` x ``BLOCK_C``, ``units`` (T), ``chunks``
    (K, the reduction's programs per channel block, each taking ``per_chunk`` units), the elementwise
    kernels' chunks and the merge kernels' channel block; ``single``: one program per channel block
    does a whole direction in one launch (:func:`forward_single`, :func:`backward_single`). Every
    kernel launches with triton's default of 4 warps."""

    __slots__ = (
        "block_c",
        "block_cf",
        "block_m",
        "chunks",
        "elem_chunks",
        "elem_per_chunk",
        "per_chunk",
        "single",
        "units",
    )

    def __init__(self, block_m, block_c, units, chunks, elem_chunks, block_cf, single=False):
        self.block_m, self.block_c, self.units, self.block_cf = block_m, block_c, units, block_cf
        self.single = single
        self.per_chunk = triton.cdiv(units, chunks)
        self.chunks = triton.cdiv(units, self.per_chunk)  # no empty chunk
        self.elem_per_chunk = triton.cdiv(units, elem_chunks)
        self.elem_chunks = triton.cdiv(units, self.elem_per_chunk)

    def __repr__(self) -> str:
        return (
            f"Blocks(block_m={self.block_m}, block_c={self.block_c}, units={self.units}, chunks={self.chunks}, "
            f"elem_chunks={self.elem_chunks}, block_cf={self.block_cf}, single={self.single})"
        )


def blocks(rows: bool, C: int, S: int, P: int, programs: int, single: bool = False) -> Blocks:
    """The one function that sizes every kernel of a call: a table keyed by the family and shape.

    ``rows``: the (R, C) family with ``P`` = R rows (S unused); else planes (N = ``P``, C, S).
    ``programs``: how many programs a reduction should spread over (the backend asks for a few per
    streaming multiprocessor on a GPU, a handful under the interpreter). Tiles hold at most 4096
    values; rows tiles take up to 64 channels (128-byte rows of float16), planes tiles one channel
    unless the planes are short (7x7), where several channels share a tile. Not autotuned: the
    sizes are fixed per shape so the merge order -- and so the bits -- never depend on timing.

    ``single`` (the backend asks for it on small inputs, where launches cost more than the work):
    one program per channel block of at most 32 channels, each a whole direction in one launch.
    """
    if single and rows:
        block_c = min(triton.next_power_of_2(C), 32)
        block_m = max(16, min(4096 // block_c, triton.next_power_of_2(P)))
        units = triton.cdiv(P, block_m)
        return Blocks(block_m, block_c, units, 1, 1, block_c, single=True)
    if rows:
        block_c = min(triton.next_power_of_2(C), 64)
        # enough row blocks for every program (a few rows per program at least)
        block_m = max(16, min(4096 // block_c, triton.next_power_of_2(triton.cdiv(P, programs))))
        units = triton.cdiv(P, block_m)
    else:
        s2 = triton.next_power_of_2(S)
        block_m = min(s2, 2048)
        block_c = max(1, min(triton.next_power_of_2(C), 4096 // (block_m * 2) if s2 < 256 else 1))
        units = P * triton.cdiv(S, block_m)
    if single:
        return Blocks(block_m, block_c, units, 1, 1, block_c, single=True)
    cblocks = triton.cdiv(C, block_c)
    chunks = max(1, min(units, triton.cdiv(programs, cblocks)))
    elem_chunks = max(1, min(units, triton.cdiv(programs * 8, cblocks)))
    block_cf = min(triton.next_power_of_2(C), 1024)
    return Blocks(block_m, block_c, units, chunks, elem_chunks, block_cf)


# --- helpers ----------------------------------------------------------------------------------


@triton.jit
def _tile(t, c, C, S, P, ROWS: tl.constexpr, BLOCK_M: tl.constexpr):
    """Offsets (BLOCK_M, BLOCK_C) and mask of unit ``t`` for the channels ``c`` (BLOCK_C,)."""
    if ROWS:
        r = t * BLOCK_M + tl.arange(0, BLOCK_M)
        offs = r[:, None].to(tl.int64) * C + c[None, :]
        mask = (r < P)[:, None] & (c < C)[None, :]
    else:
        sb = tl.cdiv(S, BLOCK_M)
        n = t // sb
        s = (t - n * sb) * BLOCK_M + tl.arange(0, BLOCK_M)
        offs = (n * C + c[None, :]).to(tl.int64) * S + s[:, None]
        mask = (s < S)[:, None] & (c < C)[None, :]
    return offs, mask


@triton.jit
def _finite(v):
    """Neither inf nor NaN: v - v is NaN exactly there."""
    return (v - v) == 0.0


@triton.jit
def _low_part(mean64):
    """``mean64 - float32(mean64)`` as float32 (0 where not finite): the mean's rounding, which the
    normalization takes back through the bias (:func:`_unround`)."""
    lo = mean64 - mean64.to(tl.float32).to(tl.float64)
    return tl.where(_finite(lo), lo, 0.0).to(tl.float32)


@triton.jit
def _unround(b, lo, scale):
    """The bias for ``(x - mean) * scale + b`` to normalize by ``mean + lo``, the float64 mean
    (b as it is where lo is 0: an infinite scale would make 0 * inf NaN)."""
    return tl.where(lo != 0.0, b - lo * scale, b)


@triton.jit
def _tile_moments(x, mask, WIDE: tl.constexpr):
    """(count, mean, M2) per channel of a tile, float64 out, by the corrected two-pass: the tile's
    mean, then the deviations from it, whose sum corrects the mean and M2 (Chan, Golub & LeVeque).
    The tile's own mean is the shift the moments are taken around, so a large common offset costs
    no precision. In float32 or, WIDE, in float64 (a chunk whose float32 moments overflowed or met
    inf/NaN)."""
    n = tl.sum(mask.to(tl.float32), 0)
    if WIDE:
        x = x.to(tl.float64)
    k = tl.maximum(n, 1.0).to(x.dtype)
    mean = tl.sum(tl.where(mask, x, 0.0), 0) / k
    e = tl.where(mask, x - mean[None, :], 0.0)
    mean64 = mean.to(tl.float64)
    m2 = tl.sum(e * e, 0).to(tl.float64)
    if not WIDE:  # float64 needs no correction (and an infinite mean's deviations are NaN)
        se = tl.sum(e, 0).to(tl.float64)
        mean64 += se / k.to(tl.float64)
        m2 -= se * se / k.to(tl.float64)
    return n.to(tl.float64), mean64, m2


@triton.jit
def _chan(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """Chan et al.'s merge of (count, mean, M2) ``a`` and ``b`` in float64. An empty side gives the
    other as it is; where the means differ by inf or NaN the mean is the weighted sum, as a plain sum
    gives it (inf + finite = inf, inf - inf = NaN), where the update would form inf - inf."""
    n = n_a + n_b
    delta = mean_b - mean_a
    frac = n_b / tl.maximum(n, 1.0)
    mean = tl.where(_finite(delta), mean_a + delta * frac, mean_a * (1.0 - frac) + mean_b * frac)
    m2 = m2_a + m2_b + delta * delta * n_a * frac
    mean = tl.where(n_a == 0, mean_b, tl.where(n_b == 0, mean_a, mean))
    m2 = tl.where(n_a == 0, m2_b, tl.where(n_b == 0, m2_a, m2))
    return n, mean, m2


@triton.jit
def _moments_pass(
    x_ptr, c, t0, t1, C, S, P, ROWS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr
):  # fmt: skip
    """(count, mean, M2) over the units [t0, t1), the tiles' moments merged in order in float64."""
    n_a = tl.zeros([BLOCK_C], tl.float64)
    mean_a = tl.zeros([BLOCK_C], tl.float64)
    m2_a = tl.zeros([BLOCK_C], tl.float64)
    for t in range(t0, t1):
        offs, mask = _tile(t, c, C, S, P, ROWS, BLOCK_M)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        n_b, mean_b, m2_b = _tile_moments(x, mask, WIDE)
        n_a, mean_a, m2_a = _chan(n_a, mean_a, m2_a, n_b, mean_b, m2_b)
    return n_a, mean_a, m2_a


@triton.jit
def _moments(x_ptr, c, t0, t1, C, S, P, ROWS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """:func:`_moments_pass` in float32, taken again in float64 where a channel's moments came out
    inf or NaN: float32 squares overflow from about 1e19, and a float64 pass gives torch's sums
    (float64-accumulated) for such values, inf/NaN means and NaN M2 included."""
    n, mean, m2 = _moments_pass(x_ptr, c, t0, t1, C, S, P, ROWS, BLOCK_M, BLOCK_C, False)
    if tl.min((_finite(mean) & _finite(m2)).to(tl.int32), 0) == 0:
        n, mean, m2 = _moments_pass(x_ptr, c, t0, t1, C, S, P, ROWS, BLOCK_M, BLOCK_C, True)
    return n, mean, m2


@triton.jit
def _activate(z, slope, ACT: tl.constexpr):
    if ACT == 1:
        z = tl.maximum(z, 0.0, propagate_nan=tl.PropagateNan.ALL)  # relu(NaN) = NaN, as torch
    elif ACT == 2:
        z = tl.where(z > 0, z, z * slope)
    elif ACT == 3:
        z = z / (1.0 + tl.exp(-z))
    return z


@triton.jit
def _activation_grad(dy, z, slope, ACT: tl.constexpr):
    """dy * act'(z), with torch's derivatives at 0 (0 for relu, slope for leaky_relu)."""
    if ACT == 1:
        dy = tl.where(z > 0, dy, 0.0)
    elif ACT == 2:
        dy = tl.where(z > 0, dy, dy * slope)
    elif ACT == 3:
        s = 1.0 / (1.0 + tl.exp(-z))
        dy = dy * s * (1.0 + z * (1.0 - s))
    return dy


@triton.jit
def _masked_grad(dy, positive, slope, ACT: tl.constexpr):
    """dy * act'(z) from the saved sign of z (relu, leaky_relu)."""
    if ACT == 2:  # noqa: SIM108 -- a block on a constexpr, specialized by Triton's compiler
        dy = tl.where(positive, dy, dy * slope)
    else:
        dy = tl.where(positive, dy, 0.0)
    return dy


@triton.jit
def _invstd(var, eps):
    return tl.div_rn(1.0, tl.sqrt_rn(var + eps))


@triton.jit
def _channel(ptr, c, cm, HAS: tl.constexpr, default):
    """A per-channel vector as float32, ``default`` where absent."""
    if HAS:  # noqa: SIM108 -- a block on a constexpr, specialized by Triton's compiler
        v = tl.load(ptr + c, mask=cm, other=default).to(tl.float32)
    else:
        v = tl.full(c.shape, default, tl.float32)
    return v


@triton.jit
def _lerp(a, b, w):
    """torch.lerp's formula (the running-average update as ``lerp_`` computes it); with an infinite
    or NaN side, torch BN's own ``w * b + (1 - w) * a`` (an infinite running_var stays inf where lerp
    would form inf - inf)."""
    lerp = tl.where(w < 0.5, a + w * (b - a), b - (b - a) * (1.0 - w))
    return tl.where(_finite(a) & _finite(b), lerp, w * b + (1.0 - w) * a)


@triton.jit
def _update_running(
    rm_ptr, rv_ptr, mom_ptr, momentum, mean, var, unbias, c, cm,
    HAS_RM: tl.constexpr, HAS_RV: tl.constexpr, MOM_TENSOR: tl.constexpr,
):  # fmt: skip
    if MOM_TENSOR:  # noqa: SIM108 -- a block on a constexpr, specialized by Triton's compiler
        w = tl.load(mom_ptr).to(tl.float32)
    else:
        w = momentum
    # stored through float32: the interpreter casts float64 to bfloat16 wrong
    if HAS_RM:
        rm = tl.load(rm_ptr + c, mask=cm, other=0.0).to(tl.float32)
        tl.store(rm_ptr + c, _lerp(rm, mean, w).to(tl.float32).to(rm_ptr.dtype.element_ty), mask=cm)
    if HAS_RV:
        rv = tl.load(rv_ptr + c, mask=cm, other=0.0).to(tl.float32)
        tl.store(rv_ptr + c, _lerp(rv, var * unbias, w).to(tl.float32).to(rv_ptr.dtype.element_ty), mask=cm)


# --- statistics -------------------------------------------------------------------------------


@triton.jit
def stats_partial(
    x_ptr, pn_ptr, pmean_ptr, pm2_ptr, C, S, P, T, U,
    ROWS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Chunk k's (count, mean, M2) per channel into slot [k, c] of the float64 partials."""
    pc = tl.program_id(0)
    k = tl.program_id(1)
    c = pc * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    n_a, mean_a, m2_a = _moments(x_ptr, c, k * U, tl.minimum(k * U + U, T), C, S, P, ROWS, BLOCK_M, BLOCK_C)
    slot = k * C + c
    tl.store(pn_ptr + slot, n_a, mask=cm)
    tl.store(pmean_ptr + slot, mean_a, mask=cm)
    tl.store(pm2_ptr + slot, m2_a, mask=cm)


@triton.jit
def stats_merge(
    pn_ptr, pmean_ptr, pm2_ptr, mean_ptr, var_ptr, lo_ptr, rm_ptr, rv_ptr, mom_ptr, momentum, unbias, m, C, K,
    HAS_LO: tl.constexpr, HAS_RM: tl.constexpr, HAS_RV: tl.constexpr, MOM_TENSOR: tl.constexpr,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    """The K chunks' moments merged in order k = 0, 1, ... in float64 -> mean, biased var (each
    rounded to float32 once; HAS_LO: the mean's rounding too); the running update from the float64
    values."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    n_a = tl.zeros([BLOCK_C], tl.float64)
    mean_a = tl.zeros([BLOCK_C], tl.float64)
    m2_a = tl.zeros([BLOCK_C], tl.float64)
    for k in range(K):
        slot = k * C + c
        n_b = tl.load(pn_ptr + slot, mask=cm, other=0.0)
        mean_b = tl.load(pmean_ptr + slot, mask=cm, other=0.0)
        m2_b = tl.load(pm2_ptr + slot, mask=cm, other=0.0)
        n_a, mean_a, m2_a = _chan(n_a, mean_a, m2_a, n_b, mean_b, m2_b)
    var = m2_a / m
    tl.store(mean_ptr + c, mean_a.to(tl.float32), mask=cm)
    tl.store(var_ptr + c, var.to(tl.float32), mask=cm)
    if HAS_LO:
        tl.store(lo_ptr + c, _low_part(mean_a), mask=cm)
    if HAS_RM or HAS_RV:
        _update_running(rm_ptr, rv_ptr, mom_ptr, momentum, mean_a, var, unbias, c, cm, HAS_RM, HAS_RV, MOM_TENSOR)


@triton.jit
def update_running(
    mean_ptr, var_ptr, rm_ptr, rv_ptr, mom_ptr, momentum, unbias, C,
    HAS_RM: tl.constexpr, HAS_RV: tl.constexpr, MOM_TENSOR: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """The running-average update alone, from given batch statistics."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    mean = tl.load(mean_ptr + c, mask=cm, other=0.0).to(tl.float32)
    var = tl.load(var_ptr + c, mask=cm, other=0.0).to(tl.float32)
    _update_running(rm_ptr, rv_ptr, mom_ptr, momentum, mean, var, unbias, c, cm, HAS_RM, HAS_RV, MOM_TENSOR)


# --- elementwise ------------------------------------------------------------------------------


@triton.jit
def normalize(
    x_ptr, y_ptr, r_ptr, mask_ptr, mean_ptr, var_ptr, lo_ptr, w_ptr, b_ptr, eps, slope, C, S, P, T, U,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_LO: tl.constexpr, HAS_RES: tl.constexpr,
    WRITE_MASK: tl.constexpr, EVAL: tl.constexpr,
    ACT: tl.constexpr, ROWS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """y = act((x - mean) * invstd * w + b [+ r]); EVAL: torch's eval formula x * scale + shift.
    HAS_LO: the mean's rounding (:func:`_low_part`) is taken back through b. WRITE_MASK stores z > 0
    as one byte per value (the fused relu's backward reads it)."""
    pc = tl.program_id(0)
    k = tl.program_id(1)
    c = pc * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    mean = tl.load(mean_ptr + c, mask=cm, other=0.0).to(tl.float32)
    invstd = _invstd(tl.load(var_ptr + c, mask=cm, other=1.0).to(tl.float32), eps)
    scale = invstd * _channel(w_ptr, c, cm, HAS_W, 1.0)
    b = _channel(b_ptr, c, cm, HAS_B, 0.0)
    shift = b - mean * scale
    if HAS_LO:
        b = _unround(b, tl.load(lo_ptr + c, mask=cm, other=0.0), scale)
    for t in range(k * U, tl.minimum(k * U + U, T)):
        offs, mask = _tile(t, c, C, S, P, ROWS, BLOCK_M)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if EVAL:  # noqa: SIM108 -- a block on a constexpr, specialized by Triton's compiler
            z = x * scale[None, :] + shift[None, :]
        else:
            z = (x - mean[None, :]) * scale[None, :] + b[None, :]
        if HAS_RES:
            z += tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if WRITE_MASK:
            tl.store(mask_ptr + offs, (z > 0).to(tl.uint8), mask=mask)
        y = _activate(z, slope, ACT)
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


# --- backward ---------------------------------------------------------------------------------


@triton.jit
def backward_partial(
    dy_ptr, x_ptr, r_ptr, mask_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, eps, slope, psg_ptr, psgx_ptr, C, S, P, T, U,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, GATE: tl.constexpr, ACT: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Chunk k's sum(g) and sum(g * (x - mean)) into slot [k, c], g = dy * act'(z) with z recomputed.

    GATE: 0 recomputes z = BN(x); 1 adds the saved residual ``r`` to it; 2 reads the sign of z (+ r)
    from a saved byte mask (relu, leaky_relu)."""
    pc = tl.program_id(0)
    k = tl.program_id(1)
    c = pc * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    mean = tl.load(mean_ptr + c, mask=cm, other=0.0).to(tl.float32)
    invstd = _invstd(tl.load(var_ptr + c, mask=cm, other=1.0).to(tl.float32), eps)
    scale = invstd * _channel(w_ptr, c, cm, HAS_W, 1.0)
    b = _channel(b_ptr, c, cm, HAS_B, 0.0)
    acc_g = tl.zeros([BLOCK_C], tl.float32)
    acc_gx = tl.zeros([BLOCK_C], tl.float32)
    for t in range(k * U, tl.minimum(k * U + U, T)):
        offs, mask = _tile(t, c, C, S, P, ROWS, BLOCK_M)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        xmu = tl.where(mask, x - mean[None, :], 0.0)
        if GATE == 2:
            g = _masked_grad(g, tl.load(mask_ptr + offs, mask=mask, other=0) != 0, slope, ACT)
        elif ACT != 0:
            z = xmu * scale[None, :] + b[None, :]
            if GATE == 1:
                z += tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            g = _activation_grad(g, z, slope, ACT)
        acc_g += tl.sum(g, 0)
        acc_gx += tl.sum(g * xmu, 0)
    slot = k * C + c
    tl.store(psg_ptr + slot, acc_g, mask=cm)
    tl.store(psgx_ptr + slot, acc_gx, mask=cm)


@triton.jit
def backward_merge(
    psg_ptr, psgx_ptr, sg_ptr, sgx_ptr, var_ptr, eps, dw_ptr, db_ptr, C, K,
    HAS_DW: tl.constexpr, HAS_DB: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """The K chunks' sums added in order k = 0, 1, ...; dweight = invstd * sum(g*(x-mean)), dbias = sum(g)."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    sg = tl.zeros([BLOCK_C], tl.float32)
    sgx = tl.zeros([BLOCK_C], tl.float32)
    for k in range(K):
        sg += tl.load(psg_ptr + k * C + c, mask=cm, other=0.0)
        sgx += tl.load(psgx_ptr + k * C + c, mask=cm, other=0.0)
    tl.store(sg_ptr + c, sg, mask=cm)
    tl.store(sgx_ptr + c, sgx, mask=cm)
    if HAS_DW:
        invstd = _invstd(tl.load(var_ptr + c, mask=cm, other=1.0).to(tl.float32), eps)
        tl.store(dw_ptr + c, (sgx * invstd).to(dw_ptr.dtype.element_ty), mask=cm)
    if HAS_DB:
        tl.store(db_ptr + c, sg.to(db_ptr.dtype.element_ty), mask=cm)


@triton.jit
def backward_elemt(
    dy_ptr, x_ptr, r_ptr, mask_ptr, dx_ptr, dr_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, eps, slope,
    mg_ptr, mgx_ptr, factor, C, S, P, T, U,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, GATE: tl.constexpr, HAS_DR: tl.constexpr, ACT: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """dx = w * invstd * (g - mean_g - (x - mean) * invstd^2 * mean_gxmu), the means being ``factor``
    times the vectors at ``mg_ptr``, ``mgx_ptr`` (sums and 1/m, or given means and 1); HAS_DR also
    writes g, the residual's gradient."""
    pc = tl.program_id(0)
    k = tl.program_id(1)
    c = pc * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    mean = tl.load(mean_ptr + c, mask=cm, other=0.0).to(tl.float32)
    invstd = _invstd(tl.load(var_ptr + c, mask=cm, other=1.0).to(tl.float32), eps)
    scale = invstd * _channel(w_ptr, c, cm, HAS_W, 1.0)
    b = _channel(b_ptr, c, cm, HAS_B, 0.0)
    mg = tl.load(mg_ptr + c, mask=cm, other=0.0).to(tl.float32) * factor
    proj = tl.load(mgx_ptr + c, mask=cm, other=0.0).to(tl.float32) * factor * invstd * invstd
    for t in range(k * U, tl.minimum(k * U + U, T)):
        offs, mask = _tile(t, c, C, S, P, ROWS, BLOCK_M)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        xmu = x - mean[None, :]
        if GATE == 2:
            g = _masked_grad(g, tl.load(mask_ptr + offs, mask=mask, other=0) != 0, slope, ACT)
        elif ACT != 0:
            z = xmu * scale[None, :] + b[None, :]
            if GATE == 1:
                z += tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            g = _activation_grad(g, z, slope, ACT)
        if HAS_DR:
            tl.store(dr_ptr + offs, g.to(dr_ptr.dtype.element_ty), mask=mask)
        dx = (g - mg[None, :] - xmu * proj[None, :]) * scale[None, :]
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# --- one launch per direction (small inputs) ----------------------------------------------------


@triton.jit
def forward_single(
    x_ptr, y_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, rm_ptr, rv_ptr, mom_ptr, momentum, unbias, m, eps, slope,
    C, S, P, T,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_RM: tl.constexpr, HAS_RV: tl.constexpr,
    MOM_TENSOR: tl.constexpr, ACT: tl.constexpr, ROWS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """The training forward of a channel block in one program: the moments over every unit (the
    same tile merges as :func:`stats_partial`, in order), the running update, then y (normalized by
    the float64 mean, as :func:`normalize` with HAS_LO)."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    _, mean64, m2 = _moments(x_ptr, c, 0, T, C, S, P, ROWS, BLOCK_M, BLOCK_C)
    var64 = m2 / m
    mean = mean64.to(tl.float32)
    var = var64.to(tl.float32)
    tl.store(mean_ptr + c, mean, mask=cm)
    tl.store(var_ptr + c, var, mask=cm)
    if HAS_RM or HAS_RV:
        _update_running(rm_ptr, rv_ptr, mom_ptr, momentum, mean64, var64, unbias, c, cm, HAS_RM, HAS_RV, MOM_TENSOR)
    scale = _invstd(var, eps) * _channel(w_ptr, c, cm, HAS_W, 1.0)
    b = _unround(_channel(b_ptr, c, cm, HAS_B, 0.0), _low_part(mean64), scale)
    for t in range(T):
        offs, mask = _tile(t, c, C, S, P, ROWS, BLOCK_M)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        y = _activate((x - mean[None, :]) * scale[None, :] + b[None, :], slope, ACT)
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def backward_single(
    dy_ptr, x_ptr, dx_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, eps, slope, dw_ptr, db_ptr, inv_m, C, S, P, T,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_DW: tl.constexpr, HAS_DB: tl.constexpr, HAS_DX: tl.constexpr,
    ACT: tl.constexpr, ROWS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """The backward of a channel block in one program: the two sums over every unit, dweight and
    dbias, then dx."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    mean = tl.load(mean_ptr + c, mask=cm, other=0.0).to(tl.float32)
    invstd = _invstd(tl.load(var_ptr + c, mask=cm, other=1.0).to(tl.float32), eps)
    scale = invstd * _channel(w_ptr, c, cm, HAS_W, 1.0)
    b = _channel(b_ptr, c, cm, HAS_B, 0.0)
    sg = tl.zeros([BLOCK_C], tl.float32)
    sgx = tl.zeros([BLOCK_C], tl.float32)
    for t in range(T):
        offs, mask = _tile(t, c, C, S, P, ROWS, BLOCK_M)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        xmu = tl.where(mask, x - mean[None, :], 0.0)
        if ACT != 0:
            g = _activation_grad(g, xmu * scale[None, :] + b[None, :], slope, ACT)
        sg += tl.sum(g, 0)
        sgx += tl.sum(g * xmu, 0)
    if HAS_DW:
        tl.store(dw_ptr + c, (sgx * invstd).to(dw_ptr.dtype.element_ty), mask=cm)
    if HAS_DB:
        tl.store(db_ptr + c, sg.to(db_ptr.dtype.element_ty), mask=cm)
    if HAS_DX:
        mg = sg * inv_m
        proj = sgx * inv_m * invstd * invstd
        for t in range(T):
            offs, mask = _tile(t, c, C, S, P, ROWS, BLOCK_M)
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            g = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            xmu = x - mean[None, :]
            if ACT != 0:
                g = _activation_grad(g, xmu * scale[None, :] + b[None, :], slope, ACT)
            dx = (g - mg[None, :] - xmu * proj[None, :]) * scale[None, :]
            tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
