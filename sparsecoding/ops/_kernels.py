"""numba CPU kernels for im2col / col2im and the layout swaps around the GEMM.

The gather and scatter walk one precomputed index table ``idx (M, J)``
(``J = prod(k)`` window offsets, ``M = prod(O)`` output positions) of flat
positions in the padded input plane, so one kernel serves 1-, 2- and 3-D.
Columns are laid out ``(N, M, C, J)`` so that both GEMMs are single large
2-D products ``(N*M, C*J) x (C*J, K)``; samples are independent, so the
scatter-add is race-free under ``prange`` over samples.
"""
from __future__ import annotations

import os

import numba
import numpy as np

# numba's OpenMP layer spin-waits after each parallel region and starves the
# OpenBLAS threads of the GEMM that follows (measured: 57 ms vs 34 ms for the
# conv pair of bench/conv.py on 2 cores); the workqueue layer sleeps instead.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"


@numba.njit(parallel=True, cache=True)
def gather_columns(src, idx, out):  # pragma: no cover - compiled
    """out[n, m, c, j] = src[n, c, idx[m, j]]; src (N, C, P), out (N, M, C, J)."""
    nn, nc = src.shape[0], src.shape[1]
    nm, nj = idx.shape
    for n in numba.prange(nn):
        for m in range(nm):
            for c in range(nc):
                for j in range(nj):
                    out[n, m, c, j] = src[n, c, idx[m, j]]


@numba.njit(parallel=True, cache=True)
def scatter_add_columns(src, idx, out):  # pragma: no cover - compiled
    """out[n, c, idx[m, j]] += src[n, m, c, j]; src (N, M, C, J), out (N, C, P)."""
    nn, nc = out.shape[0], out.shape[1]
    nm, nj = idx.shape
    for n in numba.prange(nn):
        for m in range(nm):
            for c in range(nc):
                for j in range(nj):
                    out[n, c, idx[m, j]] += src[n, m, c, j]


@numba.njit(parallel=True, cache=True)
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


@numba.njit(parallel=True, cache=True)
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
