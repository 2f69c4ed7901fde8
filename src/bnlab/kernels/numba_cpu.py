r"""Fused, parallel CPU kernels for batch norm (numba JIT), float32 and float64.

The same math as :mod:`bnlab.functional` (which stays the reference these kernels are tested
against), reorganised so each pass over memory does as much as it can:

* **training forward** -- statistics in one read of ``x``, then ``y`` in one read + one write.
  Each block of ``x`` (one (n, c) plane chunk in NCHW, a group of rows in channels_last) is
  summed, then re-read from cache for the *corrected two-pass* sums (Chan, Golub & LeVeque 1983):
  ``d = x - m_block``, ``mean = m_block + sum(d)/k``, ``M2 = sum(d^2) - sum(d)^2/k``. Blocks are
  merged with Chan et al.'s pairwise update in float64, so a large common offset (1e4 + N(0, 1) in
  float32) loses no precision -- never E[x^2] - E[x]^2. ``var`` is the *biased* variance M2/m.
* **training backward** -- ``sum(g)`` and ``sum(g * (x - mean))`` in one read of ``dy`` and ``x``,
  then ``dx = w * invstd * (g - sum(g)/m - (x - mean) * invstd^2 * sum(g*(x-mean))/m)`` in one more.
* **normalize** -- ``y = act((x - mean) * invstd * w + b)`` in one read + one write; eval
  (``eval_forward_ncs``) is the same pass with ``scale = w / sqrt(running_var + eps)`` and
  ``shift = b - running_mean * scale``, as torch computes it;
* **running statistics** -- ``update_running_stats``, torch's lerp in place.

``act`` fuses an activation after the affine map (``ACT_TAGS``); its gradient ``g = dy * act'(z)``
is recomputed in the backward from the saved ``x`` and the batch statistics, so only ``x`` needs
saving. With ``act = identity``, ``g = dy`` and this is plain batch norm.

Layouts: ``"ncs"`` is a contiguous (N, C, S) view (NCHW with S = H*W, or (N, C, L)); ``"rc"`` is a
(R, C) view with channels innermost (channels_last, or a 2D (N, C) input). Per-channel vectors are
contiguous (C,) arrays of the input's dtype; an empty (0,) array for weight/bias means "none".

Each operation has a parallel driver (``prange`` over planes or row blocks) and a serial one: a
parallel launch costs microseconds (see :mod:`bnlab.kernels.threads`) -- on a small tensor more
than the work it splits -- so the entry
points take a ``mode`` (PARALLEL or SERIAL) and the dispatch decides. The per-task bodies are
inlined into both.

Compiled code is cached on disk (``cache=True``); see :mod:`bnlab.kernels.cache` for where.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import threads
from .cache import CACHE_DIR  # sets numba's cache folder before anything compiles
from .numba_tags import ACT_TAGS, PARALLEL, SERIAL, activate, activate_grad, serial_or_parallel

__all__ = [
    "ACT_TAGS", "PARALLEL", "SERIAL",
    "train_forward_ncs", "train_forward_rc", "train_backward_ncs", "train_backward_rc",
    "eval_constants", "eval_forward_ncs", "update_running_stats",
]

threads.start()  # numba's threading layer, before any parallel kernel compiles (see threads.py)

# Elements per block: small enough that a block's second read hits the L1/L2 cache, large enough
# that the per-block bookkeeping is noise; float32 partial sums over a block stay accurate.
BLOCK = 4096
# Channels-last blocks are groups of rows; each ends in a (C,) merge, so they are larger (128 KiB
# of float32, still L2-resident for the second read).
ROW_BLOCK = 32768
# Reassociation lets LLVM vectorize the reductions; no "nnan"/"ninf" so NaN and inf propagate.
_FM = {"reassoc", "contract", "nsz", "arcp"}
_JIT = dict(cache=CACHE_DIR is not None, fastmath=_FM)
_INLINE = dict(inline="always", **_JIT)


# --- per-channel constants and merges (tiny, serial) ---------------------------------------------


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
        tot = cnt + k
        for c in range(C):
            delta = pmean[blk, c] - mu[c]
            mu[c] += delta * k / tot
            m2[c] += pm2[blk, c] + delta * delta * cnt * k / tot
        cnt = tot
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
    zero = xp.dtype.type(0)
    S = xp.shape[0]
    cnt = 0.0
    mu = 0.0
    m2 = 0.0
    for s0 in range(0, S, BLOCK):
        # Loops run over 0-based views: a loop from a variable start defeats LLVM's vectorizer.
        xb = xp[s0 : min(S, s0 + BLOCK)]
        k = xb.shape[0]
        acc = zero
        for i in range(k):
            acc += xb[i]
        bm = xp.dtype.type(acc / k)  # in x's dtype: a float64 mean would make the next loop float64
        sd = zero
        sd2 = zero
        for i in range(k):
            d = xb[i] - bm
            sd += d
            sd2 += d * d
        bmean = bm + float(sd) / k
        bm2 = float(sd2) - float(sd) * float(sd) / k
        tot = cnt + k
        delta = bmean - mu
        mu += delta * k / tot
        m2 += bm2 + delta * delta * cnt * k / tot
        cnt = tot
    return mu, m2


@njit(**_INLINE)
def _rows_stats(xb, out_mean, out_m2):
    """Per-channel (mean, M2) over the rows of a (k, C) block, corrected two-pass, float64 out.

    Rows are taken four at a time: their sum is formed in registers and added to the (C,)
    accumulator once, so a small C is not held up by one add chain through memory per row.
    """
    k, C = xb.shape
    k4 = k - k % 4
    acc = np.zeros(C, xb.dtype)
    for r in range(0, k4, 4):
        x0, x1, x2, x3 = xb[r], xb[r + 1], xb[r + 2], xb[r + 3]
        for c in range(C):
            acc[c] += (x0[c] + x1[c]) + (x2[c] + x3[c])
    for r in range(k4, k):
        xr = xb[r]
        for c in range(C):
            acc[c] += xr[c]
    for c in range(C):
        acc[c] /= k
    sd = np.zeros(C, xb.dtype)
    sd2 = np.zeros(C, xb.dtype)
    for r in range(0, k4, 4):
        x0, x1, x2, x3 = xb[r], xb[r + 1], xb[r + 2], xb[r + 3]
        for c in range(C):
            d0 = x0[c] - acc[c]
            d1 = x1[c] - acc[c]
            d2 = x2[c] - acc[c]
            d3 = x3[c] - acc[c]
            sd[c] += (d0 + d1) + (d2 + d3)
            sd2[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
    for r in range(k4, k):
        xr = xb[r]
        for c in range(C):
            d = xr[c] - acc[c]
            sd[c] += d
            sd2[c] += d * d
    for c in range(C):
        out_mean[c] = acc[c] + float(sd[c]) / k
        out_m2[c] = float(sd2[c]) - float(sd[c]) * float(sd[c]) / k


# --- task bodies: y = act((x - mean) * scale + shift) ---------------------------------------------


@njit(**_INLINE)
def _norm_plane(xp, yp, mu, a, b, act, sl):
    for s in range(xp.shape[0]):
        yp[s] = activate(act, (xp[s] - mu) * a + b, sl)


@njit(**_INLINE)
def _norm_rows(xb, yb, mean, scale, shift, act, sl):
    for r in range(xb.shape[0]):
        xr = xb[r]
        yr = yb[r]
        for c in range(xr.shape[0]):
            yr[c] = activate(act, (xr[c] - mean[c]) * scale[c] + shift[c], sl)


# --- task bodies: backward sums, sum(g) and sum(g * (x - mean)) ------------------------------------


@njit(**_INLINE)
def _red_plane(dyp, xp, mu, a, b, act, sl):
    zero = xp.dtype.type(0)
    S = xp.shape[0]
    tg = 0.0
    tgx = 0.0
    for s0 in range(0, S, BLOCK):
        xb = xp[s0 : min(S, s0 + BLOCK)]
        db = dyp[s0 : min(S, s0 + BLOCK)]
        g_acc = zero
        gx_acc = zero
        for i in range(xb.shape[0]):
            xm = xb[i] - mu
            g = activate_grad(act, db[i], xm * a + b, sl)
            g_acc += g
            gx_acc += g * xm
        tg += g_acc
        tgx += gx_acc
    return tg, tgx


@njit(**_INLINE)
def _red_rows(dyb, xb, mean, scale, shift, act, sl, out_g, out_gx):
    """sum(g) and sum(g * (x - mean)) per channel over a (k, C) block, rows four at a time (as in
    :func:`_rows_stats`)."""
    k, C = xb.shape
    k4 = k - k % 4
    g_acc = np.zeros(C, xb.dtype)
    gx_acc = np.zeros(C, xb.dtype)
    for r in range(0, k4, 4):
        x0, x1, x2, x3 = xb[r], xb[r + 1], xb[r + 2], xb[r + 3]
        y0, y1, y2, y3 = dyb[r], dyb[r + 1], dyb[r + 2], dyb[r + 3]
        for c in range(C):
            m, a, b = mean[c], scale[c], shift[c]
            xm0 = x0[c] - m
            xm1 = x1[c] - m
            xm2 = x2[c] - m
            xm3 = x3[c] - m
            g0 = activate_grad(act, y0[c], xm0 * a + b, sl)
            g1 = activate_grad(act, y1[c], xm1 * a + b, sl)
            g2 = activate_grad(act, y2[c], xm2 * a + b, sl)
            g3 = activate_grad(act, y3[c], xm3 * a + b, sl)
            g_acc[c] += (g0 + g1) + (g2 + g3)
            gx_acc[c] += (g0 * xm0 + g1 * xm1) + (g2 * xm2 + g3 * xm3)
    for r in range(k4, k):
        xr = xb[r]
        dyr = dyb[r]
        for c in range(C):
            xm = xr[c] - mean[c]
            g = activate_grad(act, dyr[c], xm * scale[c] + shift[c], sl)
            g_acc[c] += g
            gx_acc[c] += g * xm
    for c in range(C):
        out_g[c] = g_acc[c]
        out_gx[c] = gx_acc[c]


# --- task bodies: dx = (g - mean_g - (x - mean) * proj) * scale -------------------------------------


@njit(**_INLINE)
def _elemt_plane(dyp, xp, dxp, mu, a, b, mg, k, act, sl):
    for s in range(xp.shape[0]):
        xm = xp[s] - mu
        g = activate_grad(act, dyp[s], xm * a + b, sl)
        dxp[s] = (g - mg - xm * k) * a


@njit(**_INLINE)
def _elemt_rows(dyb, xb, dxb, mean, scale, shift, mean_g, proj, act, sl):
    for r in range(xb.shape[0]):
        xr = xb[r]
        dyr = dyb[r]
        dxr = dxb[r]
        for c in range(xr.shape[0]):
            xm = xr[c] - mean[c]
            g = activate_grad(act, dyr[c], xm * scale[c] + shift[c], sl)
            dxr[c] = (g - mean_g[c] - xm * proj[c]) * scale[c]


# --- drivers: the same task loop, parallel (prange) and serial ----------------------------------
# (Two functions rather than one compiled twice: numba's disk cache does not tell them apart.)


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
def _stats_rc_par(x, rows, pmean, pm2):
    R = x.shape[0]
    for blk in prange(pmean.shape[0]):
        _rows_stats(x[blk * rows : min(R, (blk + 1) * rows)], pmean[blk], pm2[blk])


@njit(**_JIT)
def _stats_rc_ser(x, rows, pmean, pm2):
    R = x.shape[0]
    for blk in range(pmean.shape[0]):
        _rows_stats(x[blk * rows : min(R, (blk + 1) * rows)], pmean[blk], pm2[blk])


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
def _red_rc_par(dy, x, rows, mean, scale, shift, act, sl, pg, pgx):
    R = x.shape[0]
    for blk in prange(pg.shape[0]):
        r0 = blk * rows
        r1 = min(R, r0 + rows)
        _red_rows(dy[r0:r1], x[r0:r1], mean, scale, shift, act, sl, pg[blk], pgx[blk])


@njit(**_JIT)
def _red_rc_ser(dy, x, rows, mean, scale, shift, act, sl, pg, pgx):
    R = x.shape[0]
    for blk in range(pg.shape[0]):
        r0 = blk * rows
        r1 = min(R, r0 + rows)
        _red_rows(dy[r0:r1], x[r0:r1], mean, scale, shift, act, sl, pg[blk], pgx[blk])


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
_red_ncs = serial_or_parallel(_red_ncs_par, _red_ncs_ser)
_red_rc = serial_or_parallel(_red_rc_par, _red_rc_ser)
_elemt_ncs = serial_or_parallel(_elemt_ncs_par, _elemt_ncs_ser)
_elemt_rc = serial_or_parallel(_elemt_rc_par, _elemt_rc_ser)


# --- entry points: one call per direction and layout ---------------------------------------------


@njit(**_JIT)
def _rows_per_block(C):
    return max(1, ROW_BLOCK // C)


@njit(**_JIT)
def train_forward_ncs(x, w, b, eps, act, slope, mode, y, mean, var):
    """Training forward on (N, C, S): fills ``y``, ``mean`` and the biased ``var``."""
    N, C, S = x.shape
    pmean = np.empty((N, C))
    pm2 = np.empty((N, C))
    _stats_ncs(mode, x, pmean, pm2)
    _merge_equal(pmean, pm2, S, mean, var)
    _, scale, shift = _scale_shift(var, w, b, eps)
    sl = x.dtype.type(slope)
    _norm_ncs(mode, x, mean, scale, shift, act, sl, y)


@njit(**_JIT)
def train_forward_rc(x, w, b, eps, act, slope, mode, y, mean, var):
    """Training forward on (R, C): fills ``y``, ``mean`` and the biased ``var``."""
    R, C = x.shape
    rows = _rows_per_block(C)
    nblk = (R + rows - 1) // rows
    pmean = np.empty((nblk, C))
    pm2 = np.empty((nblk, C))
    _stats_rc(mode, x, rows, pmean, pm2)
    _merge_blocks(pmean, pm2, rows, R, mean, var)
    _, scale, shift = _scale_shift(var, w, b, eps)
    sl = x.dtype.type(slope)
    _norm_rc(mode, x, rows, mean, scale, shift, act, sl, y)


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


@njit(**_JIT)
def train_backward_ncs(dy, x, w, b, mean, var, eps, act, slope, mode, dx, dw, db):
    """Training backward on (N, C, S): fills ``dx``, ``dw``, ``db`` (each skipped if empty)."""
    N, C, S = x.shape
    invstd, scale, shift = _scale_shift(var, w, b, eps)
    sl = x.dtype.type(slope)
    pg = np.empty((N, C))
    pgx = np.empty((N, C))
    _red_ncs(mode, dy, x, mean, scale, shift, act, sl, pg, pgx)
    sum_g = np.empty(C, x.dtype)
    sum_gxmu = np.empty(C, x.dtype)
    _sum_partials(pg, pgx, sum_g, sum_gxmu)
    mean_g, proj = _backward_consts(sum_g, sum_gxmu, invstd, N * S, dw, db)
    if dx.shape[0] != 0:
        _elemt_ncs(mode, dy, x, mean, scale, shift, mean_g, proj, act, sl, dx)


@njit(**_JIT)
def train_backward_rc(dy, x, w, b, mean, var, eps, act, slope, mode, dx, dw, db):
    """Training backward on (R, C): fills ``dx``, ``dw``, ``db`` (each skipped if empty)."""
    R, C = x.shape
    rows = _rows_per_block(C)
    nblk = (R + rows - 1) // rows
    invstd, scale, shift = _scale_shift(var, w, b, eps)
    sl = x.dtype.type(slope)
    pg = np.empty((nblk, C), x.dtype)
    pgx = np.empty((nblk, C), x.dtype)
    _red_rc(mode, dy, x, rows, mean, scale, shift, act, sl, pg, pgx)
    sum_g = np.empty(C, x.dtype)
    sum_gxmu = np.empty(C, x.dtype)
    _sum_partials(pg, pgx, sum_g, sum_gxmu)
    mean_g, proj = _backward_consts(sum_g, sum_gxmu, invstd, R, dw, db)
    if dx.shape[0] != 0:
        _elemt_rc(mode, dy, x, rows, mean, scale, shift, mean_g, proj, act, sl, dx)


@njit(**_JIT)
def eval_constants(rmean, rvar, w, b, eps, scale, shift):
    """Fills ``scale = w / sqrt(running_var + eps)`` and ``shift = b - running_mean * scale``, the
    per-channel constants of eval-mode batch norm (as torch's eval computes them)."""
    _, sc, sh = _scale_shift(rvar, w, b, eps)
    for c in range(sc.shape[0]):
        scale[c] = sc[c]
        shift[c] = sh[c] - rmean[c] * sc[c]


@njit(**_JIT)
def eval_forward_ncs(x, rmean, rvar, w, b, eps, act, mode, y):
    """Eval-mode batch norm on (N, C, S) in one pass: ``y = x * scale + shift``.

    (Channels-last eval has no kernel here: torch's ``addcmul`` over (R, C) is faster than this
    module's row loops, so the dispatch leaves it to the reference's torch operations.)"""
    scale = np.empty_like(rvar)
    shift = np.empty_like(rvar)
    eval_constants(rmean, rvar, w, b, eps, scale, shift)
    _norm_ncs(mode, x, np.zeros_like(scale), scale, shift, act, x.dtype.type(0), y)


@njit(**_INLINE)
def _lerp(a, b, w):
    """torch.lerp's formula: a + w * (b - a) for |w| < 0.5, else b - (b - a) * (1 - w)."""
    return a + w * (b - a) if abs(w) < 0.5 else b - (b - a) * (1 - w)


@njit(**_JIT)
def update_running_stats(rmean, rvar, mean, var, count, momentum):
    """``running = lerp(running, batch, momentum)`` in place, the variance made unbiased
    (``var * count / (count - 1)``); an empty ``rmean``/``rvar`` is skipped."""
    t = mean.dtype.type
    w = t(momentum)
    factor = t(count / (count - 1)) if count > 1 else t(1)
    for c in range(rmean.shape[0]):
        rmean[c] = _lerp(rmean[c], mean[c], w)
    for c in range(rvar.shape[0]):
        rvar[c] = _lerp(rvar[c], var[c] * factor, w)
