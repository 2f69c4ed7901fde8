r"""The lab's grouped first convolution on the CPU (numba): k members' Conv1d of one input channel each.

The grouped lab CNN (:mod:`bnlab.train.grouped`) runs member i's first convolution on input channel i of
(N, k, L) and writes its C output channels to channels i*C..(i+1)*C of a channels_last (N, L', k*C)
output, the layout of the batch norm that follows. torch has no fast way to compute that: as a depthwise
convolution it is slow, and as unfold + batched product its permutes, the bias's broadcast and their
gradients were copies costing more than the products (measured in docs/guide/seeds.md). These loops
compute it in place:

* **forward** -- ``y[n, l, i*C + c] = b[i, c] + sum_j xp[n, i, l*s + j*d] * w[i, j, c]`` (stride s,
  dilation d), the taps summed in order ``j = 0..K-1`` after the bias;
* **backward** -- ``dw[i, j, c] = sum_{n, l} dy[n, l, i*C + c] * xp[n, i, l*s + j*d]`` and
  ``db[i, c] = sum_{n, l} dy[n, l, i*C + c]``, summed in order of ``(n, l)``; and, where the input needs
  a gradient, ``dxp[n, i, l*s + j*d] += sum_c dy[n, l, i*C + c] * w[i, j, c]``.

The loops run along whole rows of k*C values (the weights are passed as taps ``wt[j, i*C + c]``, and
each example's input is first spread over the members' columns), which the vector units take in full.
``xp`` is the input padded with the convolution's zeros. Every sum runs in a fixed order over one
member's entries only, with no reassociation (only fused multiply-adds are allowed), so a member's bits
do not depend on its slot or its companions -- the rule the lab's store relies on (tested bit for bit).
Serial: a lab run uses one thread, and the work (a few MFLOP) is smaller than a parallel launch is
worth. Compiled code is cached on disk and compiled out of process, as the batch-norm kernels are
(:mod:`bnlab.kernels.cache`).
"""

from __future__ import annotations

from typing import Any

from numba import njit

from .cache import CACHE_DIR, compile_out_of_process

__all__ = ["conv1_backward", "conv1_forward"]

# Only contraction (fused multiply-add, decided by the code's shape, not by the data's address): no
# reassociation, so no sum's order depends on where a member's entries lie.
_JIT: dict[str, Any] = dict(cache=CACHE_DIR is not None, fastmath={"contract"}, error_model="numpy")
_INLINE: dict[str, Any] = dict(inline="always", **_JIT)


@njit(**_INLINE)
def _expand(xn, e):
    """``e[p, i*C + c] := xn[i, p]``: one example's input (k, Lp) spread over the members' output columns,
    so that the loops below run along whole (k*C) rows instead of one member's C columns (too short a
    loop for the vector units: 25 columns left the vectorized loop body unused)."""
    k, lp = xn.shape
    c_ = e.shape[1] // k
    for p in range(lp):
        row = e[p]
        for i in range(k):
            v = xn[i, p]
            for c in range(c_):
                row[i * c_ + c] = v


@njit(**_JIT)
def conv1_forward(xp, wt, bt, stride, dilation, y, e):
    """``y`` (N, L', k*C) := the k members' convolutions of ``xp`` (N, k, Lp) with the taps ``wt`` (K, k*C)
    and bias ``bt`` (k*C,) at ``stride`` and ``dilation`` (module docstring); ``e`` (Lp, k*C) is scratch.
    Five taps (the lab CNN's) are summed in one pass; the sums are the same, in the same order, as the
    loop over taps that other kernel widths take."""
    n_, lo, kc = y.shape
    taps = wt.shape[0]
    for n in range(n_):
        _expand(xp[n], e)
        for pos in range(lo):
            s = pos * stride
            out = y[n, pos]
            if taps == 5:
                w0, w1, w2, w3, w4 = wt[0], wt[1], wt[2], wt[3], wt[4]
                e0, e1, e2 = e[s], e[s + dilation], e[s + 2 * dilation]
                e3, e4 = e[s + 3 * dilation], e[s + 4 * dilation]
                for q in range(kc):
                    out[q] = bt[q] + e0[q] * w0[q] + e1[q] * w1[q] + e2[q] * w2[q] + e3[q] * w3[q] + e4[q] * w4[q]
            else:
                for q in range(kc):
                    out[q] = bt[q]
                for j in range(taps):
                    ej, wj = e[s + j * dilation], wt[j]
                    for q in range(kc):
                        out[q] += ej[q] * wj[q]


@njit(**_JIT)
def conv1_backward(xp, dy, wt, stride, dilation, dwt, dbt, dxp, e):
    """Gradients of :func:`conv1_forward` from ``dy`` (N, L', k*C): ``dwt`` (K, k*C) and ``dbt`` (k*C,)
    accumulated into (pass zeros), and ``dxp`` (N, k, Lp) too unless it is empty (size 0)."""
    n_, lo, kc = dy.shape
    taps = wt.shape[0]
    k = xp.shape[1]
    c_ = kc // k
    for n in range(n_):
        _expand(xp[n], e)
        for pos in range(lo):
            s = pos * stride
            g = dy[n, pos]
            if taps == 5:
                d0, d1, d2, d3, d4 = dwt[0], dwt[1], dwt[2], dwt[3], dwt[4]
                e0, e1, e2 = e[s], e[s + dilation], e[s + 2 * dilation]
                e3, e4 = e[s + 3 * dilation], e[s + 4 * dilation]
                for q in range(kc):
                    gq = g[q]
                    dbt[q] += gq
                    d0[q] += gq * e0[q]
                    d1[q] += gq * e1[q]
                    d2[q] += gq * e2[q]
                    d3[q] += gq * e3[q]
                    d4[q] += gq * e4[q]
            else:
                for q in range(kc):
                    dbt[q] += g[q]
                for j in range(taps):
                    ej, dj = e[s + j * dilation], dwt[j]
                    for q in range(kc):
                        dj[q] += g[q] * ej[q]
            if dxp.size > 0:
                for i in range(k):
                    for j in range(taps):
                        acc = dxp[n, i, s + j * dilation]
                        for c in range(i * c_, (i + 1) * c_):
                            acc += g[c] * wt[j, c]
                        dxp[n, i, s + j * dilation] = acc


compile_out_of_process([conv1_forward, conv1_backward])
