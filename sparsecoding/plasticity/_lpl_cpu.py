"""The LPL step of a conv layer on the CPU: per core, cache-sized chunks, channels-last, few passes.

For one 2-D conv layer ``a = conv(x, W) + b`` (stride 1, "same" zero padding), ``z = f(a)``,
``N`` samples of ``P`` positions and ``M`` channels, written channels-last as the matrix
``Z (N P, M)``, the LPL gradient (DESIGN.md §7, :mod:`sparsecoding.plasticity.lpl`) with
the Hebbian and decorrelation losses over positions as samples (``B' = N P``)::

    dL/dZ = Z G + 1 r_n^T + s_pos (Z - Z_other)                                      (1)
    G     = lambda2 4/((B'-1) M (M-1)) (C - diag C) - diag(lambda1 2/(M (B'-1) (var + eps)))
    r_n   = s_pool (p_n - p_other,n) / P - zbar G,   p = per-sample mean of z over positions
    dL/da = dL/dZ * f'(a),   dL/dW = im2col(x)^T dL/da,   dL/db = 1^T dL/da

(``zbar G`` moves the centring ``Z - 1 zbar`` of ``zc G`` into the row constant, so the
pass needs no centred copy). The statistics ``zbar``, ``C = zc^T zc / (B'-1)`` and
``var = diag C`` come from one pass over ``Z``: per chunk a shifted co-moment
``(Z - s)^T (Z - s)`` (one symmetric GEMM) and sum ``1^T (Z - s)`` with ``s`` the mean of
the worker's first chunk, so float32 sums do not cancel; the workers' moments are
merged with Chan's formula in float64.

Two passes per view, each split over the cores by samples (:mod:`sparsecoding.ops.parallel`,
one BLAS thread each) and, inside a core, over chunks of ``ROWS`` positions whose im2col
columns stay in the core's L2 between the gather and the GEMM:

A. gather columns from the channels-last zero-padded input, ``a = cols W^T`` (written to
   the layer's channels-last pre-activation buffer), then one kernel adds ``b``, applies
   ``f``, sums ``z`` per sample (pooling) and writes ``z - s`` for the co-moment GEMM;
B. ``Z G`` (one GEMM on ``z = f(a)`` recomputed in cache), one kernel for ``dL/da`` (1),
   the column gather again and ``dW += dL/da^T cols``.

No array of the size of the columns (604 MB per conv at 64->64, batch 256, 32x32) is ever
formed, the pre-activation buffers are kept between steps (no page faults on fresh
memory), and nothing is transposed but the input, once, into its padded buffer.

Measured (2-core Xeon with AVX-512, shared with other jobs, bench/peers/lpl.py: one
LPLConvNet step, two views, batch 256, 32x32, against torch 2.13 autograd of the same
loss + Adam): 64->64 1.08 CPU s per step (torch 2.18), median wall 1.78 s vs 4.71 s;
3->64 0.27 CPU s (torch 1.50), 548 ms vs 3.41 s. The generic path (channels-first
im2col of the whole batch, separate statistics) takes 3.2-3.3 CPU s at 64->64 and
1.9-2.1 at 3->64 in the same setting (2.8x and 7x ours). Per view at
64->64 (CPU ms, one thread): pass A 273 (input transpose 22, gathers 23, GEMM 154,
statistics kernel 17-37, co-moment GEMM 18), pass B 265 (Z G 25, delta kernel 29,
gathers 23, weight-gradient GEMM 164): the GEMMs are about 60%.
"""
from __future__ import annotations

import math
import threading

import numpy as np

from ..ops import _kernels as K
from ..ops import parallel
from ..ops._jit import njit_cached

__all__ = ["ACT_CODES", "FusedConvLPL", "ROWS"]

ACT_CODES = {"relu": 0, "tanh": 1, "sigmoid": 2, "linear": 3}

# Positions per chunk: 512 rows of 64->64 3x3 columns are 1.2 MB, inside a core's 2 MB L2.
# Measured on the 2-core Xeon (AVX-512, loaded by other jobs; CPU seconds of one step of
# bench/peers/lpl.py at 64->64, batch 256): 256 rows 1.42-1.47, 512 rows 1.19-1.45,
# 1024 rows 1.53-1.66, 2048 rows 1.81-2.01, 4096 rows 1.72-2.03.
ROWS = 512


@njit_cached(nogil=True)
def _f(v, act):  # pragma: no cover - compiled
    if act == 0:
        return v if v > 0 else v * 0
    if act == 1:
        return np.tanh(v)
    if act == 2:
        return 0.5 * (1 + np.tanh(0.5 * v))
    return v


@njit_cached(nogil=True)
def _fp(v, act):  # pragma: no cover - compiled
    if act == 0:
        return 1 if v > 0 else 0
    if act == 1:
        t = np.tanh(v)
        return 1 - t * t
    if act == 2:
        s = 0.5 * (1 + np.tanh(0.5 * v))
        return s * (1 - s)
    return 1


@njit_cached(nogil=True)
def _embed(x, lo, hi, ph, pw, channels_last, buf):  # pragma: no cover - compiled
    """buf[n, i + ph, j + pw, :] = x[n, :, i, j] (or x[n, i, j, :]) for n in [lo, hi); borders untouched."""
    if channels_last:
        nh, nw, nc = x.shape[1], x.shape[2], x.shape[3]
        for n in range(lo, hi):
            for i in range(nh):
                for j in range(nw):
                    for c in range(nc):
                        buf[n, i + ph, j + pw, c] = x[n, i, j, c]
    else:
        nc, nh, nw = x.shape[1], x.shape[2], x.shape[3]
        for n in range(lo, hi):
            for i in range(nh):
                for j in range(nw):
                    for c in range(nc):
                        buf[n, i + ph, j + pw, c] = x[n, c, i, j]


@njit_cached(nogil=True)
def _gather(buf, idx, r0, r1, cols):  # pragma: no cover - compiled
    """cols[r - r0, j, :] = buf[r // P, idx[r % P, j], :] for flat positions r in [r0, r1); buf (N, Pb, C)."""
    npos, nj = idx.shape
    nc = buf.shape[2]
    for r in range(r0, r1):
        n = r // npos
        m = r - n * npos
        for j in range(nj):
            p = idx[m, j]
            for c in range(nc):
                cols[r - r0, j, c] = buf[n, p, c]


@njit_cached(nogil=True)
def _act_stats(a, b, act, npos, r0, shift, zs, colsum, psum, stats):  # pragma: no cover - compiled
    """a += b (in place); z = f(a); psum[n] += z; with ``stats`` also zs = z - shift and colsum += zs
    (rows r0 + i of sample n = (r0 + i) // npos). Row-local accumulators, so the inner loops vectorise
    (2.3x faster than accumulating into the output arrays element by element)."""
    nr, nk = a.shape
    cs = np.zeros(nk)
    ps = np.zeros(nk)
    nprev = r0 // npos
    for i in range(nr):
        n = (r0 + i) // npos
        if n != nprev:
            for k in range(nk):
                psum[nprev, k] += ps[k]
                ps[k] = 0.0
            nprev = n
        ar = a[i]
        zr = zs[i]
        if act == 0 and stats:  # ReLU, the default: a branch-free inner loop that vectorises
            for k in range(nk):
                v = ar[k] + b[k]
                ar[k] = v
                z = max(v, 0.0)
                ps[k] += z
                d = z - shift[k]
                zr[k] = d
                cs[k] += d
            continue
        for k in range(nk):
            v = ar[k] + b[k]
            ar[k] = v
            z = _f(v, act)
            ps[k] += z
            if stats:
                d = z - shift[k]
                zr[k] = d
                cs[k] += d
    for k in range(nk):
        psum[nprev, k] += ps[k]
        colsum[k] += cs[k]


@njit_cached(nogil=True)
def _act(a, act, out):  # pragma: no cover - compiled
    for i in range(a.shape[0]):
        ar = a[i]
        orow = out[i]
        if act == 0:
            for k in range(a.shape[1]):
                orow[k] = max(ar[k], 0.0)
            continue
        for k in range(a.shape[1]):
            orow[k] = _f(ar[k], act)


@njit_cached(nogil=True)
def _grad_a(a, t, use_t, rowc, npos, r0, act, pos, s_pos, a_other, act_other, ga, dbsum,
            sq):  # pragma: no cover - compiled
    """ga = (t + rowc[n] + s_pos (f(a) - g(a_other))) f'(a) (t only if use_t, the last term only if pos;
    g the activation ``act_other``: f, or the identity when the other view's features are given);
    dbsum += ga; sq[0] += sum (f(a) - g(a_other))^2 when pos."""
    nr, nk = a.shape
    acc = 0.0
    db = np.zeros(nk)
    for i in range(nr):
        n = (r0 + i) // npos
        ar = a[i]
        tr = t[i]
        rc = rowc[n]
        gr = ga[i]
        orow = a_other[i]
        if act == 0 and use_t and not pos:  # ReLU with the Z G term: branch-free, vectorises
            for k in range(nk):
                g = (rc[k] + tr[k]) if ar[k] > 0 else 0.0
                gr[k] = g
                db[k] += g
            continue
        for k in range(nk):
            v = ar[k]
            g = rc[k]
            if use_t:
                g += tr[k]
            if pos:
                d = _f(v, act) - _f(orow[k], act_other)
                g += s_pos * d
                acc += d * d
            g = g * _fp(v, act)
            gr[k] = g
            db[k] += g
    for k in range(nk):
        dbsum[k] += db[k]
    sq[0] += acc


@njit_cached(nogil=True)
def _pool_act(a, lo, hi, act, out):  # pragma: no cover - compiled
    """out[n, i, j] = f(max of a over the 2x2 block (2i, 2j)) (f is non-decreasing), n in [lo, hi)."""
    oh, ow, nk = out.shape[1], out.shape[2], out.shape[3]
    for n in range(lo, hi):
        for i in range(oh):
            for j in range(ow):
                for k in range(nk):
                    m = a[n, 2 * i, 2 * j, k]
                    m = max(m, a[n, 2 * i, 2 * j + 1, k])
                    m = max(m, a[n, 2 * i + 1, 2 * j, k])
                    m = max(m, a[n, 2 * i + 1, 2 * j + 1, k])
                    out[n, i, j, k] = _f(m, act)


@njit_cached(nogil=True)
def _act_rows(a, lo, hi, act, out):  # pragma: no cover - compiled
    for n in range(lo, hi):
        for p in range(a.shape[1]):
            for k in range(a.shape[2]):
                out[n, p, k] = _f(a[n, p, k], act)


class FusedConvLPL:
    """The two passes of one 2-D conv layer (stride 1, padding ``(kh//2, kw//2)``) for up to two views.

    Built for one input spatial shape, channel counts, kernel and dtype; keeps its work
    buffers (padded inputs, channels-last pre-activations, per-core scratch) between calls.
    """

    def __init__(self, n_in, n_out, kernel, in_shape, dtype, rows=ROWS):
        self.c, self.k = int(n_in), int(n_out)
        self.kernel, self.in_shape = tuple(kernel), tuple(in_shape)
        self.pad = tuple(k // 2 for k in self.kernel)
        self.buffer = tuple(s + 2 * p for s, p in zip(self.in_shape, self.pad))
        self.dtype = np.dtype(dtype)
        self.npos = math.prod(self.in_shape)
        self.idx = K.window_index(self.buffer, self.kernel, (1, 1), self.in_shape)
        self.nj = self.idx.shape[1]
        self.rows = int(rows)
        self._bufs = {}
        self._local = threading.local()

    def __getstate__(self):  # work buffers and the per-thread scratch are not state (copy, pickle)
        return {k: v for k, v in self.__dict__.items() if k not in ("_bufs", "_local")}

    def __setstate__(self, state):
        self.__dict__.update(state, _bufs={}, _local=threading.local())

    # ---------------------------------------------------------------- buffers
    def _buf(self, name, shape, zero=False):
        key = (name, shape)
        b = self._bufs.get(key)
        if b is None:
            # drop other sizes of the same buffer (a new batch size) before allocating
            for old in [k for k in self._bufs if k[0] == name]:
                del self._bufs[old]
            b = (np.zeros if zero else np.empty)(shape, dtype=self.dtype)
            self._bufs[key] = b
        return b

    def _scratch(self, lo=None):
        """The calling thread's chunk buffers (the pool's worker threads persist, so these are kept)."""
        rows, nj, c, k = self.rows, self.nj, self.c, self.k
        s = getattr(self._local, "scratch", None)
        if s is None:
            s = {"cols": np.empty((rows, nj, c), self.dtype), "zs": np.empty((rows, k), self.dtype),
                 "t": np.empty((rows, k), self.dtype), "ga": np.empty((rows, k), self.dtype),
                 "kk": np.empty((k, k), self.dtype), "dw": np.empty((k, nj * c), self.dtype)}
            self._local.scratch = s
        return s

    def _chunks(self, lo, hi):
        r0, r1 = lo * self.npos, hi * self.npos
        return [(r, min(r1, r + self.rows)) for r in range(r0, r1, self.rows)]

    # ---------------------------------------------------------------- pass A
    def forward(self, view, x, W, b, act, channels_last=False, stats=True):
        """Pass A for ``x`` (N, C, H, W) (or (N, H, W, C)): the pre-activation ``a`` (N P, M) channels-last,
        kept in the view's buffer; returns ``(a, psum, moments)`` with ``psum`` (N, M) float64 the
        per-sample sums of ``z`` and ``moments = (count, mean, M2)`` (float64) of the rows of ``Z``
        (None without ``stats``)."""
        n = x.shape[0]
        nk, nc = self.k, self.c
        x = x.astype(self.dtype, copy=False)  # as ConvOperator casts its inputs (float16, integers, ...)
        xb = self._buf(f"x{view}", (n, *self.buffer, nc), zero=True)
        xbf = xb.reshape(n, -1, nc)
        a = self._buf(f"a{view}", (n * self.npos, nk))
        w2 = np.ascontiguousarray(np.moveaxis(W, 1, -1)).reshape(nk, -1).astype(self.dtype, copy=False)
        b = np.zeros(nk, self.dtype) if b is None else b.astype(self.dtype, copy=False)
        psum = np.zeros((n, nk))
        parts = []
        ph, pw = self.pad

        def work(lo, hi):
            s = self._scratch(lo)
            _embed(x, lo, hi, ph, pw, channels_last, xb)
            count, shift, colsum, m2 = 0, None, np.zeros(nk), np.zeros((nk, nk))
            for r0, r1 in self._chunks(lo, hi):
                nr = r1 - r0
                cols = s["cols"][:nr]
                _gather(xbf, self.idx, r0, r1, cols)
                ar = a[r0:r1]
                np.matmul(cols.reshape(nr, -1), w2.T, out=ar)
                zs = s["zs"][:nr]
                if not stats:
                    _act_stats(ar, b, act, self.npos, r0, b, zs, colsum, psum, False)
                    continue
                if shift is None:  # the shift: the mean of this worker's first chunk
                    _act_stats(ar, b, act, self.npos, r0, np.zeros(nk, self.dtype), zs, colsum, psum, True)
                    shift = (colsum / nr).astype(self.dtype)
                    zs -= shift
                    colsum[:] = zs.sum(axis=0, dtype=np.float64)
                else:
                    _act_stats(ar, b, act, self.npos, r0, shift, zs, colsum, psum, True)
                np.matmul(zs.T, zs, out=s["kk"])
                m2 += s["kk"]
                count += nr
            if stats and count:
                d = colsum / count  # mean - shift
                parts.append((count, shift.astype(np.float64) + d, m2 - count * np.outer(d, d)))

        parallel.run_split(work, n)
        moments = None
        if stats:
            count, mean, m2 = parts[0]
            for c2, mean2, m22 in parts[1:]:  # Chan et al.'s pairwise merge
                d = mean2 - mean
                tot = count + c2
                m2 = m2 + m22 + np.outer(d, d) * (count * c2 / tot)
                mean = mean + d * (c2 / tot)
                count = tot
            moments = (count, mean, m2)
        return a, psum, moments

    # ---------------------------------------------------------------- pass B
    def weight_grad(self, view, n, act, G, rowc, s_pos=0.0, other=None, z_other=None):
        """Pass B on the view's stored ``a``: ``(dW (M, C, *k), db (M,), sum (z - z_other)^2)`` for
        ``dL/dZ = Z G + rowc[n] + s_pos (Z - f(a_other))`` (G None: no ``Z G`` term; other None: no
        last term and the sum is 0; ``z_other`` (N P, M): the other view's features themselves)."""
        nk, nc = self.k, self.c
        a = self._buf(f"a{view}", (n * self.npos, nk))
        xbf = self._buf(f"x{view}", (n, *self.buffer, nc), zero=True).reshape(n, -1, nc)
        a_other = a if other is None else self._buf(f"a{other}", (n * self.npos, nk))
        act_other, pos = act, other is not None
        if z_other is not None:
            a_other, act_other, pos = z_other, ACT_CODES["linear"], True
        use_t = G is not None
        G = np.zeros((nk, nk), self.dtype) if G is None else np.ascontiguousarray(G, dtype=self.dtype)
        rowc = np.ascontiguousarray(rowc, dtype=self.dtype)
        parts = []

        def work(lo, hi):
            s = self._scratch(lo)
            dw = np.zeros((nk, self.nj * nc), self.dtype)
            db, sq = np.zeros(nk), np.zeros(1)
            for r0, r1 in self._chunks(lo, hi):
                nr = r1 - r0
                ar, t, ga = a[r0:r1], s["t"][:nr], s["ga"][:nr]
                if use_t:
                    zs = s["zs"][:nr]
                    _act(ar, act, zs)
                    np.matmul(zs, G, out=t)
                _grad_a(ar, t, use_t, rowc, self.npos, r0, act, pos, s_pos, a_other[r0:r1], act_other, ga, db, sq)
                cols = s["cols"][:nr]
                _gather(xbf, self.idx, r0, r1, cols)
                np.matmul(ga.T, cols.reshape(nr, -1), out=s["dw"])
                dw += s["dw"]
            parts.append((dw, db, sq[0]))

        parallel.run_split(work, n)
        dw = sum(p[0] for p in parts)
        db = sum(p[1] for p in parts).astype(self.dtype)
        sq = float(sum(p[2] for p in parts))
        dW = np.ascontiguousarray(np.moveaxis(dw.reshape(nk, *self.kernel, nc), -1, 1))
        return dW, db, sq

    # ------------------------------------------------------------ next input
    def output(self, view, n, act, pool):
        """``f(a)`` of the view, channels-last (N, H, W, M), 2x2 max-pooled (floor) with ``pool``."""
        a = self._buf(f"a{view}", (n * self.npos, self.k)).reshape(n, *self.in_shape, self.k)
        if pool:
            out = np.empty((n, self.in_shape[0] // 2, self.in_shape[1] // 2, self.k), self.dtype)
            parallel.run_split(lambda lo, hi: _pool_act(a, lo, hi, act, out), n)
        else:
            out = np.empty_like(a)
            parallel.run_split(lambda lo, hi: _act_rows(a.reshape(n, self.npos, self.k), lo, hi, act,
                                                        out.reshape(n, self.npos, self.k)), n)
        return out


def _coefficients(moments, m, lambda1, lambda2, eps, terms, scale):
    """``(G, zbar G, var, C)`` of (1) from the moments of the rows of ``Z`` (float64), times ``scale``."""
    count, mean, m2 = moments
    cov = m2 / (count - 1)
    var = np.diagonal(cov).copy()
    G = np.zeros((m, m))
    if "dec" in terms and lambda2 and m > 1:
        G += (scale * lambda2 * 4.0 / ((count - 1) * m * (m - 1))) * cov
        G[np.diag_indices(m)] = 0.0
    if "hebb" in terms and lambda1:
        G[np.diag_indices(m)] -= scale * lambda1 * 2.0 / (m * (count - 1) * (var + eps))
    return G, mean @ G, var, cov


def _local_losses(var, cov, m, eps):
    l_hebb = -float(np.sum(np.log(var + eps))) / m
    off = cov - np.diag(var)
    return l_hebb, (float(np.sum(off * off)) / (m * m - m) if m > 1 else 0.0)


def pair_gradients(fused, x1, x2, W, b, act, mode, lambda1, lambda2, eps, weight_decay, terms,
                   channels_last=False):
    """Gradient of ``(L(view 2 | SG view 1) + L(view 1 | SG view 2)) / 2`` for one conv layer.

    Returns ``(dW, db, (L_pred, L_hebb, L_dec) of view 2 predicting view 1)``; ``mode`` as in
    :func:`sparsecoding.plasticity.lpl.lpl_delta_conv`. The pre-activations of both views stay in
    ``fused``'s buffers (:meth:`FusedConvLPL.output` gives the next layer's input).
    """
    n, m, npos = x1.shape[0], W.shape[0], fused.npos
    local = [t for t in terms if t != "pred"]
    positions = mode != "pool"
    res = [fused.forward(v, x, W, b, act, channels_last, stats=positions) for v, x in ((0, x1), (1, x2))]
    p = [r[1] / npos for r in res]  # pooled features (N, M), float64
    gW = weight_decay * W.astype(np.float64)
    gb = np.zeros(m)
    report = None
    for v in (0, 1):
        o = 1 - v
        if mode == "pool":
            from .lpl import _grad_z  # noqa: PLC0415 - the dense formula on the pooled features

            rowc, G, s_pos, other = 0.5 * _grad_z(p[v], p[o], lambda1, lambda2, eps, terms) / npos, None, 0.0, None
        else:
            G, zG, var, cov = _coefficients(res[v][2], m, lambda1, lambda2, eps, local, 0.5)
            rowc = np.broadcast_to(-zG, (n, m))
            s_pos, other = 0.0, None
            if mode == "mixed" and "pred" in terms:
                rowc = rowc + (0.5 / (m * n * npos)) * (p[v] - p[o])
            elif mode == "positions" and ("pred" in terms or v == 1):
                s_pos, other = (0.5 / (m * n * npos) if "pred" in terms else 0.0), o
            if not local:
                G = None
        dW, db, sq = fused.weight_grad(v, n, act, G, rowc, s_pos, other)
        gW += dW
        gb += db
        if v == 1:  # the report: view 2 predicting view 1
            if mode == "pool":
                from .lpl import _losses  # noqa: PLC0415

                report = tuple(float(t) for t in _losses(p[1], p[0], eps))
            else:
                l_pred = (0.5 * sq / (m * n * npos) if mode == "positions"
                          else 0.5 * float(np.sum((p[1] - p[0]) ** 2)) / (m * n))
                report = (l_pred, *_local_losses(var, cov, m, eps))
    return gW.astype(W.dtype), gb.astype(W.dtype), report


def single_delta(x, W, b, z_prev, act, mode, lambda1, lambda2, eps, weight_decay, terms):
    """:func:`sparsecoding.plasticity.lpl.lpl_delta_conv` for a 2-D layer with stride 1 and padding
    ``k // 2`` on the CPU: ``(dW, db, z)``, minus the gradient of the view's loss, z channels-first."""
    n, m = x.shape[0], W.shape[0]
    fused = FusedConvLPL(W.shape[1], m, W.shape[2:], x.shape[2:], W.dtype)
    npos = fused.npos
    local = [t for t in terms if t != "pred"]
    _, psum, moments = fused.forward(0, x, W, b, act, stats=mode != "pool")
    p = psum / npos
    z_other = None
    if mode == "pool":
        from .lpl import _grad_z  # noqa: PLC0415

        G, rowc, s_pos = None, _grad_z(p, z_prev.astype(np.float64), lambda1, lambda2, eps, terms) / npos, 0.0
    else:
        G, zG, _, _ = _coefficients(moments, m, lambda1, lambda2, eps, local, 1.0)
        rowc = np.broadcast_to(-zG, (n, m))
        s_pos = 0.0
        if mode == "mixed" and "pred" in terms:
            rowc = rowc + (p - z_prev) / (m * n * npos)
        elif mode == "positions" and "pred" in terms:
            s_pos = 1.0 / (m * n * npos)
            z_other = np.ascontiguousarray(np.moveaxis(z_prev, 1, -1), dtype=W.dtype).reshape(n * npos, m)
        if not local:
            G = None
    dW, db, _ = fused.weight_grad(0, n, act, G, rowc, s_pos, z_other=z_other)
    dW = -dW - weight_decay * W
    z = np.ascontiguousarray(np.moveaxis(fused.output(0, n, act, False), -1, 1))
    return dW.astype(W.dtype, copy=False), (None if b is None else (-db).astype(W.dtype)), z
