"""numba CPU kernels for im2col / col2im and the layout swaps around the GEMM.

The gather and scatter walk one precomputed index table ``idx (M, J)``
(``J = prod(k)`` window offsets, ``M = prod(O)`` output positions) of flat
positions in the padded input plane, so one kernel serves 1-, 2- and 3-D.
Columns are laid out ``(N, M, C, J)`` so that both GEMMs are single large
2-D products ``(N*M, C*J) x (C*J, K)``; samples are independent, so the
scatter-add is race-free under ``prange`` over samples.

The ``*_cl`` kernels are the channels-last forms: planes ``(N, P, C)`` and
columns ``(N, M, J, C)``, so every window element is one contiguous run of
``C`` values (the layout the EqProp networks keep on the CPU).
"""
from __future__ import annotations

import os

import numba
import numpy as np

from ._jit import njit_cached

# numba's OpenMP layer spin-waits after each parallel region and starves the
# OpenBLAS threads of the GEMM that follows (measured: 57 ms vs 34 ms for the
# conv pair of bench/conv.py on 2 cores); the workqueue layer sleeps instead.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"


@njit_cached(parallel=True)
def _columns(plane, idx, cols, scatter):  # pragma: no cover - compiled
    """im2col ``cols[n, m, c, j] = plane[n, c, idx[m, j]]``, or with ``scatter`` its adjoint
    ``plane[n, c, idx[m, j]] += cols[n, m, c, j]``; plane (N, C, P), cols (N, M, C, J)."""
    nn, nc = plane.shape[0], plane.shape[1]
    nm, nj = idx.shape
    for n in numba.prange(nn):
        for m in range(nm):
            for c in range(nc):
                if scatter:
                    for j in range(nj):
                        plane[n, c, idx[m, j]] += cols[n, m, c, j]
                else:
                    for j in range(nj):
                        cols[n, m, c, j] = plane[n, c, idx[m, j]]


def gather_columns(src, idx, out):
    """out[n, m, c, j] = src[n, c, idx[m, j]]; src (N, C, P), out (N, M, C, J)."""
    _columns(src, idx, out, False)


def scatter_add_columns(src, idx, out):
    """out[n, c, idx[m, j]] += src[n, m, c, j]; src (N, M, C, J), out (N, C, P)."""
    _columns(out, idx, src, True)


# Single-threaded, GIL-free kernels for the per-core workers of ops.parallel (a parallel=True
# kernel must not be entered from two threads at once under the workqueue layer).
@njit_cached(nogil=True)
def swap_last_two_1t(a, out):  # pragma: no cover - compiled
    """:func:`swap_last_two` in the calling thread: out[n, j, i] = a[n, i, j]."""
    for n in range(a.shape[0]):
        for i in range(a.shape[1]):
            for j in range(a.shape[2]):
                out[n, j, i] = a[n, i, j]


# The fused residual's gather and scatter walk each window as runs of ``kw`` consecutive buffer
# positions (its last kernel dimension; ``runs[m, q]`` is the start of run q at output position m),
# with ``kw`` a compile-time constant: the length of the tuple ``width`` (one compilation per kernel
# width). Measured on the 2-core EPYC (Zen 4), 8 samples of the LCA workload (9x9 kernel): the gather
# took 143 us this way, 202 us through the index table and 365 us by runs of a run-time length.
def window_runs(idx, kw):
    """The starts (M, J // kw) of the runs of ``kw`` consecutive positions of the window table ``idx``
    (M, J) from :func:`window_index`, and the tuple ``width`` whose length is ``kw``."""
    idx = np.asarray(idx)
    runs = np.ascontiguousarray(idx[:, ::kw])
    assert np.array_equal(idx, (runs[:, :, None] + np.arange(kw)).reshape(idx.shape)), "windows are not runs"
    return runs, (0,) * kw


@numba.njit(nogil=True, inline="always")
def _runs_sample(plane, runs, width, cols, scatter, n):  # pragma: no cover - compiled
    """Sample ``n`` of the run-wise im2col ``cols[n, m, c, q*kw + t] = plane[n, c, runs[m, q] + t]``, or with
    ``scatter`` its adjoint ``plane[n, c, runs[m, q] + t] += cols[n, m, c, q*kw + t]`` (``kw = len(width)``);
    plane (N, C, P), cols (N, M, C, J)."""
    kw = len(width)
    nc = plane.shape[1]
    nm, nq = runs.shape
    for m in range(nm):
        for c in range(nc):
            for q in range(nq):
                b = runs[m, q]
                o = q * kw
                if scatter:
                    for t in range(kw):
                        plane[n, c, b + t] += cols[n, m, c, o + t]
                else:
                    for t in range(kw):
                        cols[n, m, c, o + t] = plane[n, c, b + t]


@njit_cached(nogil=True)
def gather_runs_1t(src, runs, width, out):  # pragma: no cover - compiled
    """:func:`gather_columns` in the calling thread, by runs: ``out[n, m, c, q*kw + t] = src[n, c,
    runs[m, q] + t]`` (``kw = len(width)``); src (N, C, P), out (N, M, C, J)."""
    for n in range(src.shape[0]):
        _runs_sample(src, runs, width, out, False, n)


@njit_cached(nogil=True)
def scatter_add_runs_1t(src, runs, width, out):  # pragma: no cover - compiled
    """:func:`scatter_add_columns` in the calling thread, by runs: ``out[n, c, runs[m, q] + t] +=
    src[n, m, c, q*kw + t]`` (``kw = len(width)``); src (N, M, C, J), out (N, C, P)."""
    for n in range(out.shape[0]):
        _runs_sample(out, runs, width, src, True, n)


@njit_cached(nogil=True)
def scatter_residual_runs_1t(cols, runs, width, s_buf, mask, out):  # pragma: no cover - compiled
    """``out = (s_buf - col2im(cols)) * mask`` in the calling thread, by runs (``kw = len(width)``): the
    residual ``s - Phi^T a`` in the padded buffer, zero on the padding (the cropped objective ignores
    it). cols (N, M, C, J); s_buf, out (N, C, P)."""
    nn, nc, npos = out.shape
    for n in range(nn):
        for c in range(nc):
            for p in range(npos):
                out[n, c, p] = 0.0
        _runs_sample(out, runs, width, cols, True, n)
        for c in range(nc):
            for p in range(npos):
                out[n, c, p] = (s_buf[n, c, p] - out[n, c, p]) * mask[p]


@njit_cached(nogil=True)
def sparse_rows_product_1t(a, w, out, max_nnz):  # pragma: no cover - compiled
    """``out = a @ w`` for a sparse ``a`` (R, K), w (K, W), out (R, W), in the calling thread, when
    ``a`` has at most ``max_nnz`` nonzeros; returns False (``out`` untouched) when it has more.

    Each row of ``a`` is compacted to its nonzeros, and ``out``'s row accumulates four rows of
    ``w`` per pass (one load and store of ``out`` per four products). The LCA's codes
    are sparse (18% nonzero after 40 steps of the LCA workload, 16% at the fixed point), and the
    work is ``nnz * W`` multiply-adds instead of the GEMM's ``R K W``: on the 2-core EPYC (Zen 4) at
    R=512, K=64, W=243 this kernel took 2.5 / 5.9 / 7.3 / 10.8 / 21.7 ms per 128 samples at
    2 / 10 / 18 / 30 / 50% nonzeros against 11.5-12.6 ms for the GEMM (the crossover is
    measured per machine, :meth:`Im2colNumba._sparse_limit`)."""
    nr, nk = a.shape
    nw = w.shape[1]
    nnz = 0
    for i in range(nr):
        for k in range(nk):
            nnz += a[i, k] != 0
    if nnz > max_nnz:
        return False
    ks = np.zeros(nk + 4, np.int64)
    vs = np.zeros(nk + 4, a.dtype)
    for i in range(nr):
        cnt = 0
        for k in range(nk):  # branch-free compaction: the slot is overwritten unless the value is nonzero
            v = a[i, k]
            ks[cnt] = k
            vs[cnt] = v
            cnt += v != 0
        if cnt == 0:
            for t in range(nw):
                out[i, t] = 0
            continue
        while cnt % 4:  # pad to a multiple of four with zero coefficients on row 0
            ks[cnt] = 0
            vs[cnt] = 0
            cnt += 1
        # the first four products are stored, not added to a zeroed row (10-15% less time below 10% nonzeros)
        k1, k2, k3, k4 = ks[0], ks[1], ks[2], ks[3]
        v1, v2, v3, v4 = vs[0], vs[1], vs[2], vs[3]
        for t in range(nw):
            out[i, t] = (v1 * w[k1, t] + v2 * w[k2, t]) + (v3 * w[k3, t] + v4 * w[k4, t])
        for q in range(4, cnt, 4):
            k1, k2, k3, k4 = ks[q], ks[q + 1], ks[q + 2], ks[q + 3]
            v1, v2, v3, v4 = vs[q], vs[q + 1], vs[q + 2], vs[q + 3]
            for t in range(nw):
                out[i, t] += (v1 * w[k1, t] + v2 * w[k2, t]) + (v3 * w[k3, t] + v4 * w[k4, t])
    return True


@numba.njit(nogil=True, inline="always")
def _columns_cl_sample(plane, idx, cols, scatter, n):  # pragma: no cover - compiled
    """Sample ``n`` of :func:`_columns_cl`."""
    nc = plane.shape[2]
    nm, nj = idx.shape
    for m in range(nm):
        for j in range(nj):
            p = idx[m, j]
            if scatter:
                for c in range(nc):
                    plane[n, p, c] += cols[n, m, j, c]
            else:
                for c in range(nc):
                    cols[n, m, j, c] = plane[n, p, c]


@njit_cached(parallel=True)
def _columns_cl(plane, idx, cols, scatter):  # pragma: no cover - compiled
    """Channels-last :func:`_columns`: ``cols[n, m, j, :] = plane[n, idx[m, j], :]``, or with
    ``scatter`` ``plane[n, idx[m, j], :] += cols[n, m, j, :]``; plane (N, P, C), cols (N, M, J, C)."""
    for n in numba.prange(plane.shape[0]):
        _columns_cl_sample(plane, idx, cols, scatter, n)


@njit_cached(nogil=True)
def _columns_cl_1t(plane, idx, cols, scatter):  # pragma: no cover - compiled
    """:func:`_columns_cl` in the calling thread (the per-core workers of the channels-last split)."""
    for n in range(plane.shape[0]):
        _columns_cl_sample(plane, idx, cols, scatter, n)


def gather_columns_cl(src, idx, out):
    """out[n, m, j, :] = src[n, idx[m, j], :]; src (N, P, C), out (N, M, J, C)."""
    _columns_cl(src, idx, out, False)


def scatter_add_columns_cl(src, idx, out):
    """out[n, idx[m, j], :] += src[n, m, j, :]; src (N, M, J, C), out (N, P, C)."""
    _columns_cl(out, idx, src, True)


def gather_columns_cl_1t(src, idx, out):
    """:func:`gather_columns_cl` in the calling thread."""
    _columns_cl_1t(src, idx, out, False)


def scatter_add_columns_cl_1t(src, idx, out):
    """:func:`scatter_add_columns_cl` in the calling thread."""
    _columns_cl_1t(out, idx, src, True)


@njit_cached(parallel=True)
def swap_last_two(a, out):  # pragma: no cover - compiled
    """out[n, j, i] = a[n, i, j] (a batched transpose, parallel over n)."""
    for n in numba.prange(a.shape[0]):
        for i in range(a.shape[1]):
            for j in range(a.shape[2]):
                out[n, j, i] = a[n, i, j]


def window_index(buffer_shape, kernel, stride, out_shape):
    """Flat index table (prod(O), prod(k)): position of window element j at output position m."""
    grids_o = np.meshgrid(*(np.arange(o) * s for o, s in zip(out_shape, stride)), indexing="ij")
    grids_k = np.meshgrid(*(np.arange(k) for k in kernel), indexing="ij")
    coords = [go.reshape(-1, 1) + gk.reshape(1, -1) for gk, go in zip(grids_k, grids_o)]
    return np.ravel_multi_index(coords, tuple(buffer_shape)).astype(np.int64)


@njit_cached(parallel=True)
def max_pool_2d(x, kh, kw, sh, sw, out, idx):  # pragma: no cover - compiled
    """2-D max pool over (N*C, H, W) planes: values and flat argmax indices (first maximum)."""
    planes, h, w = x.shape
    oh, ow = out.shape[1], out.shape[2]
    for p in numba.prange(planes):
        for i in range(oh):
            for j in range(ow):
                best = x[p, i * sh, j * sw]
                bi = (i * sh) * w + j * sw
                for a in range(kh):
                    for b in range(kw):
                        v = x[p, i * sh + a, j * sw + b]
                        if v > best:
                            best = v
                            bi = (i * sh + a) * w + j * sw + b
                out[p, i, j] = best
                idx[p, i, j] = bi


@numba.njit(nogil=True, inline="always")
def _max_pool_cl_sample(x, kh, kw, sh, sw, out, idx, n):  # pragma: no cover - compiled
    """Sample ``n`` of :func:`max_pool_2d_cl`."""
    w, nc = x.shape[2], x.shape[3]
    oh, ow = out.shape[1], out.shape[2]
    for i in range(oh):
        for j in range(ow):
            for c in range(nc):
                out[n, i, j, c] = x[n, i * sh, j * sw, c]
                idx[n, i, j, c] = (i * sh) * w + j * sw
            for a in range(kh):
                for b in range(kw):
                    r = i * sh + a
                    q = j * sw + b
                    for c in range(nc):
                        v = x[n, r, q, c]
                        if v > out[n, i, j, c]:
                            out[n, i, j, c] = v
                            idx[n, i, j, c] = r * w + q


@njit_cached(parallel=True)
def max_pool_2d_cl(x, kh, kw, sh, sw, out, idx):  # pragma: no cover - compiled
    """Channels-last 2-D max pool: x (N, H, W, C) -> out, idx (N, OH, OW, C); idx is the flat
    spatial index ``h * W + w`` of the first maximum, as in the channels-first kernel."""
    for n in numba.prange(x.shape[0]):
        _max_pool_cl_sample(x, kh, kw, sh, sw, out, idx, n)


@njit_cached(nogil=True)
def max_pool_2d_cl_1t(x, kh, kw, sh, sw, out, idx):  # pragma: no cover - compiled
    """:func:`max_pool_2d_cl` in the calling thread (the per-core workers' fused forward + pool)."""
    for n in range(x.shape[0]):
        _max_pool_cl_sample(x, kh, kw, sh, sw, out, idx, n)


@njit_cached(parallel=True)
def max_unpool_cl(y, idx, out):  # pragma: no cover - compiled
    """out[n, idx[n, m, c], c] += y[n, m, c]; y, idx (N, M, C), out (N, P, C) zeroed."""
    nn, nm, nc = y.shape
    for n in numba.prange(nn):
        for m in range(nm):
            for c in range(nc):
                out[n, idx[n, m, c], c] += y[n, m, c]
