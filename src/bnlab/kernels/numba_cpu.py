r"""Fused, parallel CPU kernels for batch norm (numba JIT), float32 and float64 (and bfloat16 storage).

The same math as :mod:`bnlab.core.math` (which stays the reference these kernels are tested
against), reorganised so each pass over memory does as much as it can. The entry points are the
primitives of :mod:`bnlab.core.backends` (the numba backend calls them), each for two families of
memory layout:

* **forward** -- statistics in one read of ``x``, then ``y`` in one read + one write, and the
  running-statistics update in the same call. Each block of ``x`` (one (n, c) plane chunk, a group
  of rows) is summed, then re-read from cache for the *corrected two-pass* sums (Chan, Golub &
  LeVeque 1983): ``d = x - m_block``, ``mean = m_block + sum(d)/k``, ``M2 = sum(d^2) - sum(d)^2/k``.
  Blocks are merged with Chan et al.'s pairwise update in float64, so a large common offset
  (1e4 + N(0, 1) in float32) loses no precision -- never E[x^2] - E[x]^2. ``var`` is the *biased*
  variance M2/m. The float64 mean's rounding to the compute dtype is folded into the shift
  (``shift -= (mean64 - mean) * scale``), so ``y`` is normalized by the unrounded mean, as torch's
  float64-accumulating kernel does. ``stats`` and ``normalize`` are its two halves, for layers that need the
  statistics before normalizing (Batch Renorm, SyncBatchNorm).
* **backward** -- ``sum(g)`` and ``sum(g * (x - mean))`` in one read of ``dy`` and ``x``, then
  ``dx = w * invstd * (g - sum(g)/m - (x - mean) * invstd^2 * sum(g*(x-mean))/m)`` in one more;
  ``reduce`` and ``elemt`` are its two halves (SyncBatchNorm sums across processes in between).
* **eval** -- ``y = act(x * scale + shift)`` with ``scale = w / sqrt(running_var + eps)`` and
  ``shift = b - running_mean * scale``, as torch computes it, in one read + one write.
* **update_running_stats** -- torch's lerp in place, the variance made unbiased.

``act`` fuses an activation after the affine map (``ACT_TAGS``); its gradient ``g = dy * act'(z)``
is recomputed in the backward from the saved ``x`` and the batch statistics, so only ``x`` needs
saving. With ``act = identity``, ``g = dy`` and this is plain batch norm.

Layout families: *planes*, a contiguous (N, C, S) (NCHW with S = H*W, or (N, C, L)), one task per
(n, c) plane; *rows*, (R, C*G) with each channel owning G consecutive columns -- G = 1 for channels
innermost (channels_last, (N, C)), G = S for a contiguous (N, C, S) whose planes are too short to
be tasks of their own; its statistics and backward sums run in blocks of rows, each block of rows
wider than ROW_BLOCK / ROW_MIN values split into ranges of whole channels' columns. Which family a
tensor takes is the backend's choice.

Each operation has a parallel driver (``prange`` over planes or row blocks) and a serial one: a
parallel launch costs microseconds (see :mod:`bnlab.kernels.threads`) -- on a small tensor more
than the work it splits -- so the entry points take a ``mode`` (PARALLEL or SERIAL) and the caller
decides. The per-task bodies are inlined into both. Nothing here is specific to an instruction set:
the loops are written for LLVM's vectorizer, which targets the machine numba runs on.

Element types: x, y, dy and dx are float32 or float64, computed in their own dtype, or bfloat16,
computed in float32 from its exact widening and rounded once on the way out (:mod:`.numba_storage`),
so a bfloat16 call reads and writes 2 bytes per element instead of converting to a float32 copy and
back. The per-channel vectors are always of the compute dtype.

Compiled code is cached on disk (``cache=True``); see :mod:`bnlab.kernels.cache` for where.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import threads
from .cache import CACHE_DIR, compile_out_of_process  # sets numba's cache folder before anything compiles
from .numba_storage import as_compute, load, store, zero, zeros
from .numba_tags import ACT_TAGS, PARALLEL, SERIAL, activate, activate_grad, serial_or_parallel

__all__ = [
    "ACT_TAGS",
    "PARALLEL",
    "SERIAL",
    "forward_planes",
    "forward_rows",
    "stats_planes",
    "stats_rows",
    "normalize_planes",
    "normalize_rows",
    "backward_planes",
    "backward_rows",
    "reduce_planes",
    "reduce_rows",
    "elemt_planes",
    "elemt_rows",
    "eval_planes",
    "eval_rows",
    "update_running_stats",
]

threads.start()  # numba's threading layer, before any parallel kernel compiles (see threads.py)

# Elements per block: small enough that a block's second read hits the L1/L2 cache, large enough
# that the per-block bookkeeping is noise; float32 partial sums over a block stay accurate.
BLOCK = 4096
# Channels-last blocks are groups of rows; each ends in a (C,) merge, so they are larger (128 KiB
# of float32, still L2-resident for the second read).
ROW_BLOCK = 32768
# The fewest rows a block of the statistics and backward sums takes: below it (rows wider than
# ROW_BLOCK / ROW_MIN values) a block is ROW_MIN rows of a range of whole channels' columns, so each
# column's merge still covers ROW_MIN values. A block of one row per merge made (64, 512, 7, 7)
# NCHW -- rows of 512*49 values -- 5.7 ms forward on one thread, twice torch's time.
ROW_MIN = 16
# Reassociation lets LLVM vectorize the reductions; no "nnan"/"ninf" so NaN and inf propagate.
_FM = {"reassoc", "contract", "nsz", "arcp"}
# numpy's error model: a float division by zero gives inf/NaN instead of raising ZeroDivisionError,
# whose check in every division (SiLU's 1 / (1 + exp(-z))) stops the vectorizer.
_JIT: dict[str, Any] = dict(cache=CACHE_DIR is not None, fastmath=_FM, error_model="numpy")
_INLINE: dict[str, Any] = dict(inline="always", **_JIT)


# --- per-channel constants and merges (tiny, serial) ---------------------------------------------


@njit(**_INLINE)
def _finite(v):
    """Neither inf nor NaN. A comparison: math.isfinite is folded to True under reassociation
    (it tests v - v == 0)."""
    return abs(v) <= 1.7976931348623157e308


@njit(**_JIT)
def _scale_shift(var, w, b, eps):
    """invstd = 1/sqrt(var + eps); scale = invstd * w; shift = b (w, b empty: 1 and 0)."""
    C = var.shape[0]
    invstd = np.empty(C, var.dtype)
    scale = np.empty(C, var.dtype)
    shift = np.zeros(C, var.dtype)
    for c in range(C):
        invstd[c] = 1 / math.sqrt(var[c] + eps)
        scale[c] = invstd[c] * w[c] if w.shape[0] else invstd[c]
        if b.shape[0]:
            shift[c] = b[c]
    return invstd, scale, shift


@njit(**_JIT)
def _fold_mean_residual(shift, scale, mean, exact_mean):
    """``shift -= (exact_mean - mean) * scale``: the mean's rounding to the compute dtype (up to half an ulp,
    which ``invstd`` magnifies when the variance is small) is put back through the shift, so
    ``(x - mean) * scale + shift`` normalizes by the float64 mean, as accurately as torch's kernel."""
    for c in range(shift.shape[0]):
        shift[c] -= (exact_mean[c] - mean[c]) * scale[c]


@njit(**_JIT)
def _stats_exact(mean, var, out_mean, out_var):
    """Round float64 statistics into the output vectors (the compute dtype)."""
    for c in range(mean.shape[0]):
        out_mean[c] = mean[c]
        out_var[c] = var[c]


@njit(**_JIT)
def _merge_equal(pmean, pm2, count, mean, var):
    """Merge P partial (mean, M2) rows, each over ``count`` values, into ``mean``/``var`` (C,):
    mean of means, M2 = sum M2_p + count * sum (mean_p - mean)^2; var = M2 / (P * count)."""
    P, C = pmean.shape
    mu = np.zeros(C)
    for p in range(P):
        for c in range(C):
            mu[c] += pmean[p, c]
    m2 = np.zeros(C)
    for p in range(P):
        for c in range(C):
            d = pmean[p, c] - mu[c] / P
            m2[c] += pm2[p, c] + count * d * d
    for c in range(C):
        mean[c] = mu[c] / P
        var[c] = m2[c] / (P * count)


@njit(**_JIT)
def _merge_blocks(pmean, pm2, rows, R, mean, var):
    """Chan's pairwise update over row blocks of ``rows`` rows (the last may be short)."""
    nblk, C = pmean.shape
    mu = np.zeros(C)
    m2 = np.zeros(C)
    cnt = 0.0
    for blk in range(nblk):
        k = min(R, (blk + 1) * rows) - blk * rows
        for c in range(C):
            mu[c], m2[c] = _chan(mu[c], m2[c], cnt, pmean[blk, c], pm2[blk, c], k)
        cnt += k
    for c in range(C):
        mean[c] = mu[c]
        var[c] = m2[c] / R


@njit(**_JIT)
def _sum_partials(pg, pgx, sum_g, sum_gxmu):
    P, C = pg.shape
    tg = np.zeros(C)
    tgx = np.zeros(C)
    for p in range(P):
        for c in range(C):
            tg[c] += pg[p, c]
            tgx[c] += pgx[p, c]
    for c in range(C):
        sum_g[c] = tg[c]
        sum_gxmu[c] = tgx[c]


# --- task bodies: statistics ---------------------------------------------------------------------


@njit(**_INLINE)
def _plane_stats(xp):
    """(mean, M2) of a 1D plane in float64: corrected two-pass per BLOCK, merged with Chan's update."""
    z = zero(xp)
    S = xp.shape[0]
    cnt = 0.0
    mu = 0.0
    m2 = 0.0
    for s0 in range(0, S, BLOCK):
        # Loops run over 0-based views: a loop from a variable start defeats LLVM's vectorizer.
        xb = xp[s0 : min(S, s0 + BLOCK)]
        k = xb.shape[0]
        acc = z
        for i in range(k):
            acc += load(xb[i])
        bm = as_compute(xp, acc / k)  # in the compute dtype: a float64 mean would make the next loop float64
        sd = z
        sd2 = z
        for i in range(k):
            d = load(xb[i]) - bm
            sd += d
            sd2 += d * d
        bmean = bm + float(sd) / k
        bm2 = float(sd2) - float(sd) * float(sd) / k
        if not (_finite(bmean) and _finite(bm2)):
            bmean, bm2 = _block_stats64(xb)
        mu, m2 = _chan(mu, m2, cnt, bmean, bm2, k)
        cnt += k
    return mu, m2


@njit(**_INLINE)
def _block_stats64(xb):
    """(mean, M2) of a 1D block, two-pass in float64: for a block whose float32 sums overflowed
    (values of 1e19 and more square past float32's range; float64 holds any float32 squared), or
    that holds inf/NaN, whose mean is then torch's sum / count (inf, -inf or NaN) and M2 NaN."""
    k = xb.shape[0]
    acc = 0.0
    for i in range(k):
        acc += float(load(xb[i]))
    mean = acc / k
    m2 = 0.0
    for i in range(k):
        d = float(load(xb[i])) - mean
        m2 += d * d
    return mean, m2


@njit(**_INLINE)
def _chan(mu, m2, cnt, bmean, bm2, k):
    """Chan et al.'s pairwise update of ``(mean, M2)`` over ``cnt`` values with a block of ``k``. With
    an infinite or NaN mean on either side the mean is the weighted sum, as a plain sum gives it
    (inf + finite = inf, inf - inf = NaN), where the update would form inf - inf."""
    if cnt == 0:  # the first block as it is (delta^2 * 0 would be NaN where delta^2 overflows float64)
        return bmean, bm2
    tot = cnt + k
    delta = bmean - mu
    if _finite(delta):
        return mu + delta * k / tot, m2 + bm2 + delta * delta * cnt * k / tot
    return (mu * cnt + bmean * k) / tot, m2 + bm2 + delta * delta


@njit(**_INLINE)
def _rows_stats(xb, c0, c1, out_mean, out_m2):
    """Per-column (mean, M2) over the rows of a (k, W) block's columns c0..c1-1, corrected two-pass,
    float64 out (``out_*`` are those columns' slots).

    Rows are taken four at a time: their sum is formed in registers and added to the (C,)
    accumulator once, so a small C is not held up by one add chain through memory per row.
    """
    k = xb.shape[0]
    C = c1 - c0
    k4 = k - k % 4
    acc = zeros(C, xb)
    for r in range(0, k4, 4):
        x0, x1, x2, x3 = xb[r, c0:c1], xb[r + 1, c0:c1], xb[r + 2, c0:c1], xb[r + 3, c0:c1]
        for c in range(C):
            acc[c] += (load(x0[c]) + load(x1[c])) + (load(x2[c]) + load(x3[c]))
    for r in range(k4, k):
        xr = xb[r, c0:c1]
        for c in range(C):
            acc[c] += load(xr[c])
    for c in range(C):
        acc[c] /= k
    sd = zeros(C, xb)
    sd2 = zeros(C, xb)
    for r in range(0, k4, 4):
        x0, x1, x2, x3 = xb[r, c0:c1], xb[r + 1, c0:c1], xb[r + 2, c0:c1], xb[r + 3, c0:c1]
        for c in range(C):
            d0 = load(x0[c]) - acc[c]
            d1 = load(x1[c]) - acc[c]
            d2 = load(x2[c]) - acc[c]
            d3 = load(x3[c]) - acc[c]
            sd[c] += (d0 + d1) + (d2 + d3)
            sd2[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
    for r in range(k4, k):
        xr = xb[r, c0:c1]
        for c in range(C):
            d = load(xr[c]) - acc[c]
            sd[c] += d
            sd2[c] += d * d
    for c in range(C):
        out_mean[c] = acc[c] + float(sd[c]) / k
        out_m2[c] = float(sd2[c]) - float(sd[c]) * float(sd[c]) / k
        if not (_finite(out_mean[c]) and _finite(out_m2[c])):  # as in _plane_stats
            out_mean[c], out_m2[c] = _block_stats64(xb[:, c0 + c])


# --- task bodies: y = act((x - mean) * scale + shift) ---------------------------------------------


@njit(**_INLINE)
def _norm_plane(xp, yp, mu, a, b, act, sl):
    for s in range(xp.shape[0]):
        yp[s] = store(yp, activate(act, (load(xp[s]) - mu) * a + b, sl))


@njit(**_INLINE)
def _norm_rows(xb, yb, mean, scale, shift, act, sl):
    for r in range(xb.shape[0]):
        xr = xb[r]
        yr = yb[r]
        for c in range(xr.shape[0]):
            yr[c] = store(yr, activate(act, (load(xr[c]) - mean[c]) * scale[c] + shift[c], sl))


@njit(**_INLINE)
def _affine_plane(xp, yp, a, b, act, sl):
    for s in range(xp.shape[0]):
        yp[s] = store(yp, activate(act, load(xp[s]) * a + b, sl))


@njit(**_INLINE)
def _affine_rows(xb, yb, scale, shift, act, sl):
    for r in range(xb.shape[0]):
        xr = xb[r]
        yr = yb[r]
        for c in range(xr.shape[0]):
            yr[c] = store(yr, activate(act, load(xr[c]) * scale[c] + shift[c], sl))


# --- task bodies: backward sums, sum(g) and sum(g * (x - mean)) ------------------------------------


@njit(**_INLINE)
def _red_plane(dyp, xp, mu, a, b, act, sl):
    z = zero(xp)
    S = xp.shape[0]
    tg = 0.0
    tgx = 0.0
    for s0 in range(0, S, BLOCK):
        xb = xp[s0 : min(S, s0 + BLOCK)]
        db = dyp[s0 : min(S, s0 + BLOCK)]
        g_acc = z
        gx_acc = z
        for i in range(xb.shape[0]):
            xm = load(xb[i]) - mu
            g = activate_grad(act, load(db[i]), xm * a + b, sl)
            g_acc += g
            gx_acc += g * xm
        tg += g_acc
        tgx += gx_acc
    return tg, tgx


@njit(**_INLINE)
def _red_rows(dyb, xb, c0, c1, mean, scale, shift, act, sl, out_g, out_gx):
    """sum(g) and sum(g * (x - mean)) per column over a (k, W) block's columns c0..c1-1 (``mean``,
    ``scale``, ``shift``, ``out_*``: those columns'), a row at a time. Four rows at a time, as
    :func:`_rows_stats` takes them (eight streams of memory at once), was slower here: the sums of a
    (25088, 128) input (channels-last (8, 128, 56, 56)) took 1.8-2.2 ms instead of 0.63 on one thread,
    and in the lab's grouped CNN the backward of its (1900, 200) rows 323-353 us instead of 229-253."""
    k = xb.shape[0]
    C = c1 - c0
    g_acc = zeros(C, xb)
    gx_acc = zeros(C, xb)
    for r in range(k):
        xr = xb[r, c0:c1]
        dyr = dyb[r, c0:c1]
        for c in range(C):
            xm = load(xr[c]) - mean[c]
            g = activate_grad(act, load(dyr[c]), xm * scale[c] + shift[c], sl)
            g_acc[c] += g
            gx_acc[c] += g * xm
    for c in range(C):
        out_g[c] = g_acc[c]
        out_gx[c] = gx_acc[c]


# --- task bodies: dx = (g - mean_g - (x - mean) * proj) * scale -------------------------------------


@njit(**_INLINE)
def _elemt_plane(dyp, xp, dxp, mu, a, b, mg, k, act, sl):
    for s in range(xp.shape[0]):
        xm = load(xp[s]) - mu
        g = activate_grad(act, load(dyp[s]), xm * a + b, sl)
        dxp[s] = store(dxp, (g - mg - xm * k) * a)


@njit(**_INLINE)
def _elemt_rows(dyb, xb, dxb, mean, scale, shift, mean_g, proj, act, sl):
    for r in range(xb.shape[0]):
        xr = xb[r]
        dyr = dyb[r]
        dxr = dxb[r]
        for c in range(xr.shape[0]):
            xm = load(xr[c]) - mean[c]
            g = activate_grad(act, load(dyr[c]), xm * scale[c] + shift[c], sl)
            dxr[c] = store(dxr, (g - mean_g[c] - xm * proj[c]) * scale[c])


# --- drivers: the same task loop, parallel (prange) and serial ----------------------------------
# (Two functions rather than one compiled twice: numba's disk cache does not tell them apart.)


@njit(**_INLINE)
def _row_block(p, chunks, rows, cols, R, W):
    """Task ``p`` of the row-block loops: rows r0..r1-1 by columns c0..c1-1 (``chunks`` column ranges
    of ``cols`` per block of ``rows`` rows)."""
    blk = p // chunks
    c0 = (p - blk * chunks) * cols
    return blk, blk * rows, min(R, (blk + 1) * rows), c0, min(W, c0 + cols)


@njit(parallel=True, **_JIT)
def _stats_ncs_par(x, pmean, pm2):
    N, C, S = x.shape
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        m, v = _plane_stats(x[n, c])
        pmean[n, c] = m
        pm2[n, c] = v


@njit(**_JIT)
def _stats_ncs_ser(x, pmean, pm2):
    N, C, S = x.shape
    for p in range(N * C):
        n = p // C
        c = p - n * C
        m, v = _plane_stats(x[n, c])
        pmean[n, c] = m
        pm2[n, c] = v


@njit(parallel=True, **_JIT)
def _stats_rc_par(x, rows, cols, pmean, pm2):
    R, W = x.shape
    chunks = (W + cols - 1) // cols
    for p in prange(pmean.shape[0] * chunks):
        blk, r0, r1, c0, c1 = _row_block(p, chunks, rows, cols, R, W)
        _rows_stats(x[r0:r1], c0, c1, pmean[blk, c0:c1], pm2[blk, c0:c1])


@njit(**_JIT)
def _stats_rc_ser(x, rows, cols, pmean, pm2):
    R, W = x.shape
    chunks = (W + cols - 1) // cols
    for p in range(pmean.shape[0] * chunks):
        blk, r0, r1, c0, c1 = _row_block(p, chunks, rows, cols, R, W)
        _rows_stats(x[r0:r1], c0, c1, pmean[blk, c0:c1], pm2[blk, c0:c1])


@njit(parallel=True, **_JIT)
def _norm_ncs_par(x, mean, scale, shift, act, sl, y):
    N, C, S = x.shape
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        _norm_plane(x[n, c], y[n, c], mean[c], scale[c], shift[c], act, sl)


@njit(**_JIT)
def _norm_ncs_ser(x, mean, scale, shift, act, sl, y):
    N, C, S = x.shape
    for p in range(N * C):
        n = p // C
        c = p - n * C
        _norm_plane(x[n, c], y[n, c], mean[c], scale[c], shift[c], act, sl)


@njit(parallel=True, **_JIT)
def _norm_rc_par(x, rows, mean, scale, shift, act, sl, y):
    R = x.shape[0]
    for blk in prange((R + rows - 1) // rows):
        r0 = blk * rows
        r1 = min(R, r0 + rows)
        _norm_rows(x[r0:r1], y[r0:r1], mean, scale, shift, act, sl)


@njit(**_JIT)
def _norm_rc_ser(x, rows, mean, scale, shift, act, sl, y):
    R = x.shape[0]
    for blk in range((R + rows - 1) // rows):
        r0 = blk * rows
        r1 = min(R, r0 + rows)
        _norm_rows(x[r0:r1], y[r0:r1], mean, scale, shift, act, sl)


@njit(parallel=True, **_JIT)
def _affine_ncs_par(x, scale, shift, act, sl, y):
    N, C, S = x.shape
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        _affine_plane(x[n, c], y[n, c], scale[c], shift[c], act, sl)


@njit(**_JIT)
def _affine_ncs_ser(x, scale, shift, act, sl, y):
    N, C, S = x.shape
    for p in range(N * C):
        n = p // C
        c = p - n * C
        _affine_plane(x[n, c], y[n, c], scale[c], shift[c], act, sl)


@njit(parallel=True, **_JIT)
def _affine_rc_par(x, rows, scale, shift, act, sl, y):
    R = x.shape[0]
    for blk in prange((R + rows - 1) // rows):
        r0 = blk * rows
        r1 = min(R, r0 + rows)
        _affine_rows(x[r0:r1], y[r0:r1], scale, shift, act, sl)


@njit(**_JIT)
def _affine_rc_ser(x, rows, scale, shift, act, sl, y):
    R = x.shape[0]
    for blk in range((R + rows - 1) // rows):
        r0 = blk * rows
        r1 = min(R, r0 + rows)
        _affine_rows(x[r0:r1], y[r0:r1], scale, shift, act, sl)


@njit(parallel=True, **_JIT)
def _red_ncs_par(dy, x, mean, scale, shift, act, sl, pg, pgx):
    N, C, S = x.shape
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        g, gx = _red_plane(dy[n, c], x[n, c], mean[c], scale[c], shift[c], act, sl)
        pg[n, c] = g
        pgx[n, c] = gx


@njit(**_JIT)
def _red_ncs_ser(dy, x, mean, scale, shift, act, sl, pg, pgx):
    N, C, S = x.shape
    for p in range(N * C):
        n = p // C
        c = p - n * C
        g, gx = _red_plane(dy[n, c], x[n, c], mean[c], scale[c], shift[c], act, sl)
        pg[n, c] = g
        pgx[n, c] = gx


@njit(parallel=True, **_JIT)
def _red_rc_par(dy, x, rows, cols, mean, scale, shift, act, sl, pg, pgx):
    R, W = x.shape
    chunks = (W + cols - 1) // cols
    for p in prange(pg.shape[0] * chunks):
        blk, r0, r1, c0, c1 = _row_block(p, chunks, rows, cols, R, W)
        m, a, b = mean[c0:c1], scale[c0:c1], shift[c0:c1]
        _red_rows(dy[r0:r1], x[r0:r1], c0, c1, m, a, b, act, sl, pg[blk, c0:c1], pgx[blk, c0:c1])


@njit(**_JIT)
def _red_rc_ser(dy, x, rows, cols, mean, scale, shift, act, sl, pg, pgx):
    R, W = x.shape
    chunks = (W + cols - 1) // cols
    for p in range(pg.shape[0] * chunks):
        blk, r0, r1, c0, c1 = _row_block(p, chunks, rows, cols, R, W)
        m, a, b = mean[c0:c1], scale[c0:c1], shift[c0:c1]
        _red_rows(dy[r0:r1], x[r0:r1], c0, c1, m, a, b, act, sl, pg[blk, c0:c1], pgx[blk, c0:c1])


@njit(parallel=True, **_JIT)
def _elemt_ncs_par(dy, x, mean, scale, shift, mean_g, proj, act, sl, dx):
    N, C, S = x.shape
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        _elemt_plane(dy[n, c], x[n, c], dx[n, c], mean[c], scale[c], shift[c], mean_g[c], proj[c], act, sl)


@njit(**_JIT)
def _elemt_ncs_ser(dy, x, mean, scale, shift, mean_g, proj, act, sl, dx):
    N, C, S = x.shape
    for p in range(N * C):
        n = p // C
        c = p - n * C
        _elemt_plane(dy[n, c], x[n, c], dx[n, c], mean[c], scale[c], shift[c], mean_g[c], proj[c], act, sl)


@njit(parallel=True, **_JIT)
def _elemt_rc_par(dy, x, rows, mean, scale, shift, mean_g, proj, act, sl, dx):
    R = x.shape[0]
    for blk in prange((R + rows - 1) // rows):
        r0 = blk * rows
        r1 = min(R, r0 + rows)
        _elemt_rows(dy[r0:r1], x[r0:r1], dx[r0:r1], mean, scale, shift, mean_g, proj, act, sl)


@njit(**_JIT)
def _elemt_rc_ser(dy, x, rows, mean, scale, shift, mean_g, proj, act, sl, dx):
    R = x.shape[0]
    for blk in range((R + rows - 1) // rows):
        r0 = blk * rows
        r1 = min(R, r0 + rows)
        _elemt_rows(dy[r0:r1], x[r0:r1], dx[r0:r1], mean, scale, shift, mean_g, proj, act, sl)


_stats_ncs = serial_or_parallel(_stats_ncs_par, _stats_ncs_ser)
_stats_rc = serial_or_parallel(_stats_rc_par, _stats_rc_ser)
_norm_ncs = serial_or_parallel(_norm_ncs_par, _norm_ncs_ser)
_norm_rc = serial_or_parallel(_norm_rc_par, _norm_rc_ser)
_affine_ncs = serial_or_parallel(_affine_ncs_par, _affine_ncs_ser)
_affine_rc = serial_or_parallel(_affine_rc_par, _affine_rc_ser)
_red_ncs = serial_or_parallel(_red_ncs_par, _red_ncs_ser)
_red_rc = serial_or_parallel(_red_rc_par, _red_rc_ser)
_elemt_ncs = serial_or_parallel(_elemt_ncs_par, _elemt_ncs_ser)
_elemt_rc = serial_or_parallel(_elemt_rc_par, _elemt_rc_ser)


# --- per-channel helpers of the two families ------------------------------------------------------


@njit(**_JIT)
def _rows_per_block(width):
    return max(1, ROW_BLOCK // width)


@njit(**_JIT)
def _sum_block(W, G):
    """(rows, columns) of a block of the statistics and backward sums over (R, W) rows whose channels
    own G columns each: whole rows while a block holds ROW_MIN of them, else ROW_MIN rows of whole
    channels' columns (at least one channel)."""
    rows = ROW_BLOCK // W
    if rows >= ROW_MIN:
        return rows, W
    return ROW_MIN, max(G, (ROW_BLOCK // ROW_MIN) // G * G)


@njit(**_JIT)
def _expand(v, G):
    """A (C,) vector repeated per column of its channel's group: (C*G,), column c*G + g -> v[c]."""
    if G == 1:
        return v
    out = np.empty(v.shape[0] * G, v.dtype)
    for c in range(v.shape[0]):
        for g in range(G):
            out[c * G + g] = v[c]
    return out


@njit(**_JIT)
def _merge_groups(cmean, cvar, G, R, mean, var):
    """Merge the (mean, biased var) of C*G columns of R values each into their C channels (Chan,
    equal counts): mean = mean of the column means, M2 = sum M2_col + R * sum (mean_col - mean)^2."""
    for c in range(mean.shape[0]):
        mu = 0.0
        for g in range(G):
            mu += cmean[c * G + g]
        mu /= G
        m2 = 0.0
        for g in range(G):
            d = cmean[c * G + g] - mu
            m2 += cvar[c * G + g] * R + R * d * d
        mean[c] = mu
        var[c] = m2 / (G * R)


@njit(**_JIT)
def _sum_groups(col_g, col_gx, G, sum_g, sum_gxmu):
    for c in range(sum_g.shape[0]):
        tg = 0.0
        tgx = 0.0
        for g in range(G):
            tg += col_g[c * G + g]
            tgx += col_gx[c * G + g]
        sum_g[c] = tg
        sum_gxmu[c] = tgx


@njit(**_JIT)
def _backward_consts(sum_g, sum_gxmu, invstd, m, dw, db):
    """mean_g = sum(g)/m, proj = invstd^2 * sum(g*(x-mean))/m; dweight, dbias if wanted."""
    C = sum_g.shape[0]
    mean_g = np.empty(C, sum_g.dtype)
    proj = np.empty(C, sum_g.dtype)
    for c in range(C):
        mean_g[c] = sum_g[c] / m
        proj[c] = invstd[c] * invstd[c] * (sum_gxmu[c] / m)
        if dw.shape[0]:
            dw[c] = sum_gxmu[c] * invstd[c]
        if db.shape[0]:
            db[c] = sum_g[c]
    return mean_g, proj


@njit(**_INLINE)
def _lerp(a, b, w):
    """torch.lerp's formula: a + w * (b - a) for |w| < 0.5, else b - (b - a) * (1 - w); with an
    infinite or NaN side, torch BN's own ``w * b + (1 - w) * a`` (an infinite running_var stays
    inf where lerp would form inf - inf), as :func:`bnlab.core.math.update_running_stats`."""
    if not (_finite(a) and _finite(b)):
        return w * b + (1 - w) * a
    return a + w * (b - a) if abs(w) < 0.5 else b - (b - a) * (1 - w)


@njit(**_JIT)
def _update(rmean, rvar, mean, var, count, momentum):
    """``running = lerp(running, batch, momentum)`` in place, the variance made unbiased
    (``var * count / (count - 1)``); an empty ``rmean``/``rvar`` is skipped."""
    t = mean.dtype.type
    w = t(momentum)
    factor = t(count / (count - 1)) if count > 1 else t(1)
    for c in range(rmean.shape[0]):
        rmean[c] = _lerp(rmean[c], mean[c], w)
    for c in range(rvar.shape[0]):
        rvar[c] = _lerp(rvar[c], var[c] * factor, w)


# --- the primitives on planes: x is (N, C, S) ---------------------------------------------------


@njit(**_JIT)
def _stats_of_planes(mode, x, mean, var):
    N, C, S = x.shape
    pmean = np.empty((N, C))
    pm2 = np.empty((N, C))
    _stats_ncs(mode, x, pmean, pm2)
    _merge_equal(pmean, pm2, S, mean, var)


@njit(**_JIT)
def _normalize_planes(mode, x, mean, var, w, b, eps, act, sl, y, exact_mean):
    _, scale, shift = _scale_shift(var, w, b, eps)
    _fold_mean_residual(shift, scale, mean, exact_mean)
    _norm_ncs(mode, x, mean, scale, shift, act, sl, y)


@njit(**_JIT)
def _reduce_planes(mode, dy, x, mean, scale, shift, act, sl, sum_g, sum_gxmu):
    N, C, S = x.shape
    pg = np.empty((N, C))
    pgx = np.empty((N, C))
    _red_ncs(mode, dy, x, mean, scale, shift, act, sl, pg, pgx)
    _sum_partials(pg, pgx, sum_g, sum_gxmu)


@njit(**_JIT)
def _eval_planes(mode, x, rmean, rvar, w, b, eps, act, sl, y):
    _, scale, shift = _scale_shift(rvar, w, b, eps)
    for c in range(scale.shape[0]):
        shift[c] -= rmean[c] * scale[c]
    _affine_ncs(mode, x, scale, shift, act, sl, y)


# --- the primitives on rows: x is (R, C*G), channel c owning columns c*G .. c*G+G-1 ---------------
# G = 1 is channels-last (or (N, C)); G = S views a contiguous (N, C, S) with a small S as N rows of
# C*S values, so the loops run along whole rows instead of over many short planes.


@njit(**_JIT)
def _stats_of_rows(mode, x, G, mean, var):
    R, W = x.shape
    rows, cols = _sum_block(W, G)
    nblk = (R + rows - 1) // rows
    pmean = np.empty((nblk, W))
    pm2 = np.empty((nblk, W))
    _stats_rc(mode, x, rows, cols, pmean, pm2)
    if G == 1:
        _merge_blocks(pmean, pm2, rows, R, mean, var)
    else:
        cmean = np.empty(W)
        cvar = np.empty(W)
        _merge_blocks(pmean, pm2, rows, R, cmean, cvar)
        _merge_groups(cmean, cvar, G, R, mean, var)


@njit(**_JIT)
def _normalize_rows(mode, x, G, mean, var, w, b, eps, act, sl, y, exact_mean):
    _, scale, shift = _scale_shift(var, w, b, eps)
    _fold_mean_residual(shift, scale, mean, exact_mean)
    rows = _rows_per_block(x.shape[1])
    _norm_rc(mode, x, rows, _expand(mean, G), _expand(scale, G), _expand(shift, G), act, sl, y)


@njit(**_JIT)
def _reduce_rows(mode, dy, x, G, mean, scale, shift, act, sl, sum_g, sum_gxmu):
    R, W = x.shape
    rows, cols = _sum_block(W, G)
    nblk = (R + rows - 1) // rows
    pg = np.empty((nblk, W), mean.dtype)
    pgx = np.empty((nblk, W), mean.dtype)
    _red_rc(mode, dy, x, rows, cols, _expand(mean, G), _expand(scale, G), _expand(shift, G), act, sl, pg, pgx)
    if G == 1:
        _sum_partials(pg, pgx, sum_g, sum_gxmu)
    else:
        col_g = np.empty(W)
        col_gx = np.empty(W)
        _sum_partials(pg, pgx, col_g, col_gx)
        _sum_groups(col_g, col_gx, G, sum_g, sum_gxmu)


@njit(**_JIT)
def _elemt_of_rows(mode, dy, x, G, mean, scale, shift, mean_g, proj, act, sl, dx):
    rows = _rows_per_block(x.shape[1])
    _elemt_rc(
        mode,
        dy,
        x,
        rows,
        _expand(mean, G),
        _expand(scale, G),
        _expand(shift, G),
        _expand(mean_g, G),
        _expand(proj, G),
        act,
        sl,
        dx,
    )


@njit(**_JIT)
def _eval_rows(mode, x, G, rmean, rvar, w, b, eps, act, sl, y):
    _, scale, shift = _scale_shift(rvar, w, b, eps)
    for c in range(scale.shape[0]):
        shift[c] -= rmean[c] * scale[c]
    rows = _rows_per_block(x.shape[1])
    _affine_rc(mode, x, rows, _expand(scale, G), _expand(shift, G), act, sl, y)


# --- entry points: tensors arrive as addresses ------------------------------------------------------
# Every tensor is passed as its address (``Tensor.data_ptr()``) with its sizes, and rebuilt here as
# an array of the dtype of the empty ``tag`` array: a Python int crosses into numba for a fraction of
# what converting a tensor to a numpy array costs (about 0.1 us against 0.5-0.8 us, ten or more times
# per training step). Address 0 is "no tensor" (no weight, no bias, no running statistics, no dx).
# Per-channel vectors (weight, bias, statistics) are contiguous (C,) arrays of the kernel dtype, the
# dtype of ``tag``; x, y, dy and dx are of the dtype of ``btag``: the same, or uint16 for bfloat16's bits
# (read and written through :mod:`.numba_storage`, computed in float32).
# ``dims`` is (N, C, S) for planes, (R, C, G) for rows (see the two families above).


@intrinsic
def _voidptr(typingctx, addr):
    """The integer ``addr`` as a void pointer, for numba.carray."""
    if not isinstance(addr, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(addr), codegen


@njit(**_INLINE)
def _vec(address, C, tag):
    """The (C,) array at ``address``; address 0 gives the empty array."""
    return numba.carray(_voidptr(address), (C if address else 0,), tag.dtype)


@njit(**_INLINE)
def _planes(address, dims, tag):
    return numba.carray(_voidptr(address), (dims[0], dims[1], dims[2]), tag.dtype)


@njit(**_INLINE)
def _rows(address, dims, tag):
    return numba.carray(_voidptr(address), (dims[0], dims[1] * dims[2]), tag.dtype)


@njit(**_JIT)
def forward_planes(px, dims, pw, pb, eps, act, slope, mode, py, pmean, pvar, prm, prv, count, momentum, tag, btag):
    """Training forward: batch statistics into ``mean`` and the biased ``var``, ``y = act((x - mean)
    * invstd * w + b)``, and the running-statistics update when ``prm``/``prv`` are given."""
    C = dims[1]
    x, y = _planes(px, dims, btag), _planes(py, dims, btag)
    mean, var = _vec(pmean, C, tag), _vec(pvar, C, tag)
    mean64, var64 = np.empty(C), np.empty(C)
    _stats_of_planes(mode, x, mean64, var64)
    _stats_exact(mean64, var64, mean, var)
    _normalize_planes(
        mode, x, mean, var, _vec(pw, C, tag), _vec(pb, C, tag), eps, act, tag.dtype.type(slope), y, mean64
    )
    _update(_vec(prm, C, tag), _vec(prv, C, tag), mean, var, count, momentum)


@njit(**_JIT)
def forward_rows(px, dims, pw, pb, eps, act, slope, mode, py, pmean, pvar, prm, prv, count, momentum, tag, btag):
    """:func:`forward_planes` on rows."""
    R, C, G = dims
    x, y = _rows(px, dims, btag), _rows(py, dims, btag)
    mean, var = _vec(pmean, C, tag), _vec(pvar, C, tag)
    mean64, var64 = np.empty(C), np.empty(C)
    _stats_of_rows(mode, x, G, mean64, var64)
    _stats_exact(mean64, var64, mean, var)
    _normalize_rows(
        mode, x, G, mean, var, _vec(pw, C, tag), _vec(pb, C, tag), eps, act, tag.dtype.type(slope), y, mean64
    )
    _update(_vec(prm, C, tag), _vec(prv, C, tag), mean, var, count, momentum)


@njit(**_JIT)
def stats_planes(px, dims, mode, pmean, pvar, tag, btag):
    """Batch mean and biased variance per channel."""
    _stats_of_planes(mode, _planes(px, dims, btag), _vec(pmean, dims[1], tag), _vec(pvar, dims[1], tag))


@njit(**_JIT)
def stats_rows(px, dims, mode, pmean, pvar, tag, btag):
    _stats_of_rows(mode, _rows(px, dims, btag), dims[2], _vec(pmean, dims[1], tag), _vec(pvar, dims[1], tag))


@njit(**_JIT)
def normalize_planes(px, dims, pmean, pvar, pw, pb, eps, act, slope, mode, py, tag, btag):
    """``y = act((x - mean) / sqrt(var + eps) * w + b)`` with the given statistics."""
    C = dims[1]
    x = _planes(px, dims, btag)
    mean = _vec(pmean, C, tag)  # given statistics are taken as exact (no residual to fold)
    _normalize_planes(
        mode,
        x,
        mean,
        _vec(pvar, C, tag),
        _vec(pw, C, tag),
        _vec(pb, C, tag),
        eps,
        act,
        tag.dtype.type(slope),
        _planes(py, dims, btag),
        mean,
    )


@njit(**_JIT)
def normalize_rows(px, dims, pmean, pvar, pw, pb, eps, act, slope, mode, py, tag, btag):
    C = dims[1]
    x = _rows(px, dims, btag)
    mean = _vec(pmean, C, tag)
    _normalize_rows(
        mode,
        x,
        dims[2],
        mean,
        _vec(pvar, C, tag),
        _vec(pw, C, tag),
        _vec(pb, C, tag),
        eps,
        act,
        tag.dtype.type(slope),
        _rows(py, dims, btag),
        mean,
    )


@njit(**_JIT)
def backward_planes(pdy, px, dims, pw, pb, pmean, pvar, eps, act, slope, mode, pdx, pdw, pdb, tag, btag):
    """Training backward: ``dx``, ``dw``, ``db`` (each skipped at address 0) from the batch statistics."""
    N, C, S = dims
    x, dy = _planes(px, dims, btag), _planes(pdy, dims, btag)
    mean = _vec(pmean, C, tag)
    invstd, scale, shift = _scale_shift(_vec(pvar, C, tag), _vec(pw, C, tag), _vec(pb, C, tag), eps)
    sl = tag.dtype.type(slope)
    sum_g = np.empty(C, tag.dtype)
    sum_gxmu = np.empty(C, tag.dtype)
    _reduce_planes(mode, dy, x, mean, scale, shift, act, sl, sum_g, sum_gxmu)
    mean_g, proj = _backward_consts(sum_g, sum_gxmu, invstd, N * S, _vec(pdw, C, tag), _vec(pdb, C, tag))
    if pdx:
        _elemt_ncs(mode, dy, x, mean, scale, shift, mean_g, proj, act, sl, _planes(pdx, dims, btag))


@njit(**_JIT)
def backward_rows(pdy, px, dims, pw, pb, pmean, pvar, eps, act, slope, mode, pdx, pdw, pdb, tag, btag):
    R, C, G = dims
    x, dy = _rows(px, dims, btag), _rows(pdy, dims, btag)
    mean = _vec(pmean, C, tag)
    invstd, scale, shift = _scale_shift(_vec(pvar, C, tag), _vec(pw, C, tag), _vec(pb, C, tag), eps)
    sl = tag.dtype.type(slope)
    sum_g = np.empty(C, tag.dtype)
    sum_gxmu = np.empty(C, tag.dtype)
    _reduce_rows(mode, dy, x, G, mean, scale, shift, act, sl, sum_g, sum_gxmu)
    mean_g, proj = _backward_consts(sum_g, sum_gxmu, invstd, R * G, _vec(pdw, C, tag), _vec(pdb, C, tag))
    if pdx:
        _elemt_of_rows(mode, dy, x, G, mean, scale, shift, mean_g, proj, act, sl, _rows(pdx, dims, btag))


@njit(**_JIT)
def reduce_planes(pdy, px, dims, pw, pb, pmean, pvar, eps, act, slope, mode, psum_g, psum_gxmu, tag, btag):
    """The backward's two sums, ``sum(g)`` and ``sum(g * (x - mean))`` per channel (g = dy * act'(z))."""
    C = dims[1]
    x = _planes(px, dims, btag)
    _, scale, shift = _scale_shift(_vec(pvar, C, tag), _vec(pw, C, tag), _vec(pb, C, tag), eps)
    _reduce_planes(
        mode,
        _planes(pdy, dims, btag),
        x,
        _vec(pmean, C, tag),
        scale,
        shift,
        act,
        tag.dtype.type(slope),
        _vec(psum_g, C, tag),
        _vec(psum_gxmu, C, tag),
    )


@njit(**_JIT)
def reduce_rows(pdy, px, dims, pw, pb, pmean, pvar, eps, act, slope, mode, psum_g, psum_gxmu, tag, btag):
    C = dims[1]
    x = _rows(px, dims, btag)
    _, scale, shift = _scale_shift(_vec(pvar, C, tag), _vec(pw, C, tag), _vec(pb, C, tag), eps)
    _reduce_rows(
        mode,
        _rows(pdy, dims, btag),
        x,
        dims[2],
        _vec(pmean, C, tag),
        scale,
        shift,
        act,
        tag.dtype.type(slope),
        _vec(psum_g, C, tag),
        _vec(psum_gxmu, C, tag),
    )


@njit(**_JIT)
def _elemt_consts(var, w, b, eps, mean_gxmu):
    invstd, scale, shift = _scale_shift(var, w, b, eps)
    proj = np.empty_like(invstd)
    for c in range(proj.shape[0]):
        proj[c] = invstd[c] * invstd[c] * mean_gxmu[c]
    return scale, shift, proj


@njit(**_JIT)
def elemt_planes(pdy, px, dims, pw, pb, pmean, pvar, eps, act, slope, pmean_g, pmean_gxmu, mode, pdx, tag, btag):
    """``dx = w * invstd * (g - mean_g - (x - mean) * invstd^2 * mean_gxmu)`` with the given means of
    the two sums (over the whole, possibly multi-process, batch)."""
    C = dims[1]
    x = _planes(px, dims, btag)
    scale, shift, proj = _elemt_consts(
        _vec(pvar, C, tag), _vec(pw, C, tag), _vec(pb, C, tag), eps, _vec(pmean_gxmu, C, tag)
    )
    _elemt_ncs(
        mode,
        _planes(pdy, dims, btag),
        x,
        _vec(pmean, C, tag),
        scale,
        shift,
        _vec(pmean_g, C, tag),
        proj,
        act,
        tag.dtype.type(slope),
        _planes(pdx, dims, btag),
    )


@njit(**_JIT)
def elemt_rows(pdy, px, dims, pw, pb, pmean, pvar, eps, act, slope, pmean_g, pmean_gxmu, mode, pdx, tag, btag):
    C = dims[1]
    x = _rows(px, dims, btag)
    scale, shift, proj = _elemt_consts(
        _vec(pvar, C, tag), _vec(pw, C, tag), _vec(pb, C, tag), eps, _vec(pmean_gxmu, C, tag)
    )
    _elemt_of_rows(
        mode,
        _rows(pdy, dims, btag),
        x,
        dims[2],
        _vec(pmean, C, tag),
        scale,
        shift,
        _vec(pmean_g, C, tag),
        proj,
        act,
        tag.dtype.type(slope),
        _rows(pdx, dims, btag),
    )


@njit(**_JIT)
def eval_planes(px, dims, prm, prv, pw, pb, eps, act, slope, mode, py, tag, btag):
    """Eval-mode batch norm in one pass: ``y = act(x * scale + shift)`` with ``scale = w /
    sqrt(running_var + eps)`` and ``shift = b - running_mean * scale``, as torch computes them."""
    C = dims[1]
    x = _planes(px, dims, btag)
    _eval_planes(
        mode,
        x,
        _vec(prm, C, tag),
        _vec(prv, C, tag),
        _vec(pw, C, tag),
        _vec(pb, C, tag),
        eps,
        act,
        tag.dtype.type(slope),
        _planes(py, dims, btag),
    )


@njit(**_JIT)
def eval_rows(px, dims, prm, prv, pw, pb, eps, act, slope, mode, py, tag, btag):
    C = dims[1]
    x = _rows(px, dims, btag)
    _eval_rows(
        mode,
        x,
        dims[2],
        _vec(prm, C, tag),
        _vec(prv, C, tag),
        _vec(pw, C, tag),
        _vec(pb, C, tag),
        eps,
        act,
        tag.dtype.type(slope),
        _rows(py, dims, btag),
    )


@njit(**_JIT)
def update_running_stats(prm, prv, pmean, pvar, C, count, momentum, tag):
    """The running-statistics update alone (:func:`_update`), for batch statistics computed elsewhere."""
    _update(_vec(prm, C, tag), _vec(prv, C, tag), _vec(pmean, C, tag), _vec(pvar, C, tag), count, momentum)


# Entry points compile in a child process and load from the cache, so that every process runs the
# same machine code (see bnlab.kernels.cache).
_ENTRY_POINTS = [name for name in __all__ if name not in ("ACT_TAGS", "PARALLEL", "SERIAL")]
compile_out_of_process([globals()[name] for name in _ENTRY_POINTS])
if threads.launches_need_lock():  # workqueue: one launch at a time across the caller's threads
    for _name in _ENTRY_POINTS:
        globals()[_name] = threads.serialized(globals()[_name])
