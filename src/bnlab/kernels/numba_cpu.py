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
* **eval / normalize** -- ``y = act((x - mean) * invstd * w + b)`` in one read + one write.

``act`` fuses an activation after the affine map (``ACT_CODES``); its gradient ``g = dy * act'(z)``
is recomputed in the backward from the saved ``x`` and the batch statistics, so only ``x`` needs
saving. With ``act = identity``, ``g = dy`` and this is plain batch norm.

Layouts: ``"ncs"`` is a contiguous (N, C, S) view (NCHW with S = H*W, or (N, C, L)); ``"rc"`` is a
(R, C) view with channels innermost (channels_last, or a 2D (N, C) input). Per-channel vectors are
contiguous (C,) arrays of the input's dtype; an empty (0,) array for weight/bias means "none".

Compiled code is cached on disk (``cache=True``); see :mod:`bnlab.kernels.cache` for where.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .cache import CACHE_DIR  # sets numba's cache folder before anything compiles

ACT_CODES = {"identity": 0, "relu": 1, "leaky_relu": 2, "silu": 3}

# Elements per block: small enough that a block's second read hits the L1/L2 cache, large enough
# that the per-block bookkeeping is noise.
BLOCK = 4096
# Reassociation lets LLVM vectorize the reductions; no "nnan"/"ninf" so NaN and inf propagate.
_FM = {"reassoc", "contract", "nsz", "arcp"}
_JIT = dict(cache=CACHE_DIR is not None, fastmath=_FM, nogil=True)


# --- activations --------------------------------------------------------------------------------


@njit(inline="always", **_JIT)
def _act(z, act, slope):
    if act == 1:
        return z if z > 0 else z * 0
    if act == 2:
        return z if z > 0 else z * slope
    if act == 3:
        return z / (1 + math.exp(-z))
    return z


@njit(inline="always", **_JIT)
def _act_grad(dy, z, act, slope):
    """dy * act'(z); at z == 0 relu and leaky_relu take the left derivative, as torch does."""
    if act == 1:
        return dy if z > 0 else dy * 0
    if act == 2:
        return dy if z > 0 else dy * slope
    if act == 3:
        s = 1 / (1 + math.exp(-z))
        return dy * (s * (1 + z * (1 - s)))
    return dy


# --- per-channel constants ----------------------------------------------------------------------


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


# --- statistics ---------------------------------------------------------------------------------


@njit(parallel=True, **_JIT)
def _stats_ncs(x, mean, var):
    """Per-channel mean and biased variance of (N, C, S) ``x`` into ``mean``, ``var`` (C,)."""
    N, C, S = x.shape
    zero = x.dtype.type(0)
    pmean = np.empty((N, C))  # float64 partials per (n, c) plane, each over S values
    pm2 = np.empty((N, C))
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        cnt = 0.0
        pm = 0.0
        m2 = 0.0
        for s0 in range(0, S, BLOCK):
            # Loops over 0-based views: a loop from a variable start defeats LLVM's vectorizer.
            xb = x[n, c, s0 : min(S, s0 + BLOCK)]
            k = xb.shape[0]
            acc = zero
            for i in range(k):
                acc += xb[i]
            bm = acc / k
            sd = zero
            sd2 = zero
            for i in range(k):
                d = xb[i] - bm
                sd += d
                sd2 += d * d
            bmean = bm + float(sd) / k
            bm2 = float(sd2) - float(sd) * float(sd) / k
            tot = cnt + k
            delta = bmean - pm
            pm += delta * k / tot
            m2 += bm2 + delta * delta * cnt * k / tot
            cnt = tot
        pmean[n, c] = pm
        pm2[n, c] = m2
    # Equal counts (S) per plane: mean of means, and M2 = sum M2_n + S * sum (mean_n - mean)^2.
    for c in prange(C):
        mu = 0.0
        for n in range(N):
            mu += pmean[n, c]
        mu /= N
        m2 = 0.0
        for n in range(N):
            d = pmean[n, c] - mu
            m2 += pm2[n, c] + S * d * d
        mean[c] = mu
        var[c] = m2 / (N * S)


@njit(parallel=True, **_JIT)
def _stats_rc(x, mean, var):
    """Per-channel (column) mean and biased variance of (R, C) ``x`` into ``mean``, ``var``."""
    R, C = x.shape
    rows = max(1, BLOCK // C)
    nblk = (R + rows - 1) // rows
    pmean = np.empty((nblk, C))
    pm2 = np.empty((nblk, C))
    for blk in prange(nblk):
        r0 = blk * rows
        r1 = min(R, r0 + rows)
        k = r1 - r0
        acc = np.zeros(C, x.dtype)
        for r in range(r0, r1):
            xr = x[r]
            for c in range(C):
                acc[c] += xr[c]
        for c in range(C):
            acc[c] /= k
        sd = np.zeros(C, x.dtype)
        sd2 = np.zeros(C, x.dtype)
        for r in range(r0, r1):
            xr = x[r]
            for c in range(C):
                d = xr[c] - acc[c]
                sd[c] += d
                sd2[c] += d * d
        for c in range(C):
            pmean[blk, c] = acc[c] + float(sd[c]) / k
            pm2[blk, c] = float(sd2[c]) - float(sd[c]) * float(sd[c]) / k
    # Chan's update over the blocks, in order (the last block may be short).
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


# --- elementwise: y = act((x - mean) * scale + shift) -------------------------------------------


@njit(parallel=True, **_JIT)
def _normalize_ncs(x, mean, scale, shift, act, slope, y):
    N, C, S = x.shape
    sl = x.dtype.type(slope)
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        mu = mean[c]
        a = scale[c]
        b = shift[c]
        xp = x[n, c]
        yp = y[n, c]
        for s in range(S):
            yp[s] = _act((xp[s] - mu) * a + b, act, sl)


@njit(parallel=True, **_JIT)
def _normalize_rc(x, mean, scale, shift, act, slope, y):
    R, C = x.shape
    sl = x.dtype.type(slope)
    rows = max(1, BLOCK // C)
    nblk = (R + rows - 1) // rows
    for blk in prange(nblk):
        for r in range(blk * rows, min(R, (blk + 1) * rows)):
            xr = x[r]
            yr = y[r]
            for c in range(C):
                yr[c] = _act((xr[c] - mean[c]) * scale[c] + shift[c], act, sl)


# --- backward: the two per-channel sums, then dx ------------------------------------------------


@njit(parallel=True, **_JIT)
def _bwd_reduce_ncs(dy, x, mean, scale, shift, act, slope, sum_g, sum_gxmu):
    """sum(g) and sum(g * (x - mean)) per channel, g = dy * act'((x - mean) * scale + shift)."""
    N, C, S = x.shape
    zero = x.dtype.type(0)
    sl = x.dtype.type(slope)
    pg = np.empty((N, C))
    pgx = np.empty((N, C))
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        mu = mean[c]
        a = scale[c]
        b = shift[c]
        tg = 0.0
        tgx = 0.0
        for s0 in range(0, S, BLOCK):
            g_acc = zero
            gx_acc = zero
            xb = x[n, c, s0 : min(S, s0 + BLOCK)]
            db = dy[n, c, s0 : min(S, s0 + BLOCK)]
            for i in range(xb.shape[0]):
                xm = xb[i] - mu
                g = _act_grad(db[i], xm * a + b, act, sl)
                g_acc += g
                gx_acc += g * xm
            tg += g_acc
            tgx += gx_acc
        pg[n, c] = tg
        pgx[n, c] = tgx
    for c in prange(C):
        tg = 0.0
        tgx = 0.0
        for n in range(N):
            tg += pg[n, c]
            tgx += pgx[n, c]
        sum_g[c] = tg
        sum_gxmu[c] = tgx


@njit(parallel=True, **_JIT)
def _bwd_reduce_rc(dy, x, mean, scale, shift, act, slope, sum_g, sum_gxmu):
    R, C = x.shape
    sl = x.dtype.type(slope)
    rows = max(1, BLOCK // C)
    nblk = (R + rows - 1) // rows
    pg = np.empty((nblk, C))
    pgx = np.empty((nblk, C))
    for blk in prange(nblk):
        g_acc = np.zeros(C, x.dtype)
        gx_acc = np.zeros(C, x.dtype)
        for r in range(blk * rows, min(R, (blk + 1) * rows)):
            xr = x[r]
            dyr = dy[r]
            for c in range(C):
                xm = xr[c] - mean[c]
                g = _act_grad(dyr[c], xm * scale[c] + shift[c], act, sl)
                g_acc[c] += g
                gx_acc[c] += g * xm
        for c in range(C):
            pg[blk, c] = g_acc[c]
            pgx[blk, c] = gx_acc[c]
    tg = np.zeros(C)
    tgx = np.zeros(C)
    for blk in range(nblk):
        for c in range(C):
            tg[c] += pg[blk, c]
            tgx[c] += pgx[blk, c]
    for c in range(C):
        sum_g[c] = tg[c]
        sum_gxmu[c] = tgx[c]


@njit(parallel=True, **_JIT)
def _bwd_elemt_ncs(dy, x, mean, scale, shift, act, slope, mean_g, proj, dx):
    """dx = (g - mean_g - (x - mean) * proj) * scale with proj = invstd^2 * sum(g*(x-mean))/m."""
    N, C, S = x.shape
    sl = x.dtype.type(slope)
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        mu = mean[c]
        a = scale[c]
        b = shift[c]
        mg = mean_g[c]
        k = proj[c]
        xp = x[n, c]
        dyp = dy[n, c]
        dxp = dx[n, c]
        for s in range(S):
            xm = xp[s] - mu
            g = _act_grad(dyp[s], xm * a + b, act, sl)
            dxp[s] = (g - mg - xm * k) * a


@njit(parallel=True, **_JIT)
def _bwd_elemt_rc(dy, x, mean, scale, shift, act, slope, mean_g, proj, dx):
    R, C = x.shape
    sl = x.dtype.type(slope)
    rows = max(1, BLOCK // C)
    nblk = (R + rows - 1) // rows
    for blk in prange(nblk):
        for r in range(blk * rows, min(R, (blk + 1) * rows)):
            xr = x[r]
            dyr = dy[r]
            dxr = dx[r]
            for c in range(C):
                xm = xr[c] - mean[c]
                g = _act_grad(dyr[c], xm * scale[c] + shift[c], act, sl)
                dxr[c] = (g - mean_g[c] - xm * proj[c]) * scale[c]


# --- entry points: one call per direction ---------------------------------------------------------


@njit(**_JIT)
def train_forward_ncs(x, w, b, eps, act, slope, y, mean, var):
    """Training forward on (N, C, S): fills ``y``, ``mean`` and the biased ``var``."""
    _stats_ncs(x, mean, var)
    _, scale, shift = _scale_shift(var, w, b, eps)
    _normalize_ncs(x, mean, scale, shift, act, slope, y)


@njit(**_JIT)
def train_forward_rc(x, w, b, eps, act, slope, y, mean, var):
    """Training forward on (R, C): fills ``y``, ``mean`` and the biased ``var``."""
    _stats_rc(x, mean, var)
    _, scale, shift = _scale_shift(var, w, b, eps)
    _normalize_rc(x, mean, scale, shift, act, slope, y)


@njit(**_JIT)
def _backward_consts(sum_g, sum_gxmu, invstd, m, dw, db):
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
def train_backward_ncs(dy, x, w, b, mean, var, eps, act, slope, dx, dw, db):
    """Training backward on (N, C, S): fills ``dx`` (if non-empty), ``dw``, ``db`` (if non-empty)."""
    N, C, S = x.shape
    invstd, scale, shift = _scale_shift(var, w, b, eps)
    sum_g = np.empty(C, x.dtype)
    sum_gxmu = np.empty(C, x.dtype)
    _bwd_reduce_ncs(dy, x, mean, scale, shift, act, slope, sum_g, sum_gxmu)
    mean_g, proj = _backward_consts(sum_g, sum_gxmu, invstd, N * S, dw, db)
    if dx.shape[0]:
        _bwd_elemt_ncs(dy, x, mean, scale, shift, act, slope, mean_g, proj, dx)


@njit(**_JIT)
def train_backward_rc(dy, x, w, b, mean, var, eps, act, slope, dx, dw, db):
    """Training backward on (R, C): fills ``dx`` (if non-empty), ``dw``, ``db`` (if non-empty)."""
    R, C = x.shape
    invstd, scale, shift = _scale_shift(var, w, b, eps)
    sum_g = np.empty(C, x.dtype)
    sum_gxmu = np.empty(C, x.dtype)
    _bwd_reduce_rc(dy, x, mean, scale, shift, act, slope, sum_g, sum_gxmu)
    mean_g, proj = _backward_consts(sum_g, sum_gxmu, invstd, R, dw, db)
    if dx.shape[0]:
        _bwd_elemt_rc(dy, x, mean, scale, shift, act, slope, mean_g, proj, dx)


@njit(**_JIT)
def eval_forward_ncs(x, mean, var, w, b, eps, act, slope, y):
    """Eval on (N, C, S): y = act((x - running_mean) / sqrt(running_var + eps) * w + b)."""
    _, scale, shift = _scale_shift(var, w, b, eps)
    _normalize_ncs(x, mean, scale, shift, act, slope, y)


@njit(**_JIT)
def eval_forward_rc(x, mean, var, w, b, eps, act, slope, y):
    """Eval on (R, C): y = act((x - running_mean) / sqrt(running_var + eps) * w + b)."""
    _, scale, shift = _scale_shift(var, w, b, eps)
    _normalize_rc(x, mean, scale, shift, act, slope, y)
