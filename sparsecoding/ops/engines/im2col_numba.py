"""numba im2col on the CPU: index-table gather/scatter kernels around single large GEMMs.

Layouts (inputs / codes):

* channels-first / channels-first: numba gather into columns ``(N, M, C, J)``, one
  ``(N M, C J) x (C J, K)`` GEMM, a parallel batched transpose to ``(N, K, M)``;
  the adjoint is the swap, one GEMM and a race-free scatter-add (col2im);
* channels-first / channels-last codes: the same without the transposes (the GEMM
  produces ``(N, *O, K)``): the layout the solvers iterate in, and the one with the
  fused per-core residual (:meth:`Im2colNumba.forward_residual`: per core and per cache-sized chunk,
  ``Phi^T a`` as columns, col2im into the residual ``r = s - Phi^T a``, im2col of ``r``, ``Phi r``;
  where a chunk's codes are sparse enough the first product skips the zero codes instead of a GEMM:
  on the LCA workload of DESIGN.md §9, 2-core EPYC (Zen 4), one LCA iteration went from 21.1 to
  16.1 ms, codes 0.3-18% nonzero over steps 10-40, the limit measured there at 25%; the gather and
  scatter by runs of the last kernel dimension, :func:`~sparsecoding.ops._kernels.window_runs`:
  16.4 to 12.6-13.3 ms);
* channels-last / channels-last: contiguous-run gathers ``(N, M, J, C)`` of the
  channels-last padded input and one GEMM per chunk of samples whose columns take about
  ``chunk_bytes`` (measured per machine for the EqProp layers; :data:`CHUNK_BYTES` otherwise), so
  the gather writes and the GEMM reads stay in cache; each core works through its own share of
  the samples with single-threaded BLAS (the layout the EqProp networks keep on the CPU).

The kernels live in :mod:`sparsecoding.ops._kernels`; the per-core split in
:mod:`sparsecoding.ops.parallel`.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _kernels as K
from .. import parallel
from .._geometry import check_real, embed_slices
from .base import ConvEngine

__all__ = ["Im2colNumba", "CHUNK_BYTES"]

# Channels-last im2col works through the batch in chunks whose columns take about
# this many bytes, so the gather writes and the GEMM reads them in cache: measured
# on the 2-core development machine (bench/eqprop layers, 1 MiB L2 per core, 32 MiB
# L3), a conv + adjoint pair ran at 0.55 of the GEMM rate unchunked and 0.73-0.85
# with 2-6 MB chunks; below 1 MB the small GEMMs lose more than the cache gains.
CHUNK_BYTES = 4 << 20


# Code densities (fraction of nonzero codes in a chunk) at which the sparse product Phi^T a is timed
# against the GEMM on first use; on the 2-core EPYC (Zen 4) it won up to about 30% nonzeros.
SPARSE_DENSITIES = (1 / 32, 1 / 16, 1 / 8, 3 / 16, 1 / 4, 3 / 8, 1 / 2)


def _measure_sparse_limit(rows, k, width, dtype):
    """The largest of :data:`SPARSE_DENSITIES` up to which the sparse product of ``rows x k`` codes with a
    ``k x width`` matrix beats the single-threaded GEMM (0 where it never does); each density a cached
    :func:`~sparsecoding.ops.autotune.tuned` choice."""
    from .. import autotune

    if autotune.tune_mode() == "off":
        return 0.0
    r = np.random.default_rng(0)
    w = r.standard_normal((k, width)).astype(dtype)
    out = np.empty((rows, width), dtype=dtype)
    limit = 0.0
    with parallel.blas_single_thread():
        for d in SPARSE_DENSITIES:
            a = (r.standard_normal((rows, k)) * (r.random((rows, k)) < d)).astype(dtype)
            cands = {"gemm": lambda: [np.matmul(a, w, out=out) for _ in range(4)],
                     "sparse": lambda: [K.sparse_rows_product_1t(a, w, out, a.size) for _ in range(4)]}
            key = f"sparse Phi^T a: {rows}x{k} codes, width {width}, {np.dtype(dtype).name}, density {d:.4f}"
            if autotune.tuned(key, cands, "gemm") != "sparse":
                break
            limit = d
    return limit


# Column bytes per core chunk of the fused residual timed on first use (one sample of the LCA workload's
# columns is 249 kB; the 2-core development machines have 1-2 MiB of L2 per core).
RESIDUAL_CHUNKS = (1 << 18, 1 << 19, 1 << 20, 1 << 21)


# Per-sample multiply-adds of the fused residual from which its chunk size and sparse limit are measured
# (the LCA workload: 8.0 M); smaller problems (the test suite's) keep the defaults without measuring.
TUNE_MIN_MACS_RESIDUAL = 1 << 21


class Im2colNumba(ConvEngine):
    method, family = "im2col", "native"
    native_code_layout = "channels_last"

    def __init__(self, geometry, xp, dtype, x_layout, y_layout, caps, split_cf=False, chunk_bytes=None,
                 split_cl=True):
        super().__init__(geometry, xp, dtype, x_layout, y_layout, caps)
        g = geometry
        self.buffer = tuple((o - 1) * s + k for o, s, k in zip(g.out_shape, g.stride, g.kernel))
        self.idx = K.window_index(self.buffer, g.kernel, g.stride, g.out_shape)
        self._runs = K.window_runs(self.idx, g.kernel[-1])  # the per-core gathers / scatters walk runs
        self._scratch = self._pad_buf = None  # reused channels-last work buffers
        # channels-first inputs: whole-batch gather + one multi-threaded GEMM, or the per-core split
        # (the columns of each core's chunk stay in its cache between the copies and the GEMM)
        self.split_cf, self.chunk_bytes = bool(split_cf), chunk_bytes
        # channels-last: the per-core split (each worker gathers and multiplies its own samples' chunks,
        # single-threaded BLAS; the chunk size measured per machine in engines._conv3x3), or chunks of the
        # batch with whole-batch threading (numba gather, BLAS threads). The split is the default: on its own
        # it is as fast (2-core EPYC Zen 4, 128->256 8x8, batch 64: pair 29.5 vs 31.7 ms), and a relaxation
        # that mixes the two loses twice: OpenBLAS's idle threads spin for a while after a threaded call and
        # take a core from the per-core workers that follow (the split pair right after a threaded GEMM:
        # 55 ms; 0.2 s later: 30 ms), so the EqProp relaxation runs with single-threaded BLAS throughout
        self.split_cl = bool(split_cl)
        self.sparse_limit = None  # code density limit of the sparse Phi^T a; None: measured (_sparse_limit)
        self.residual_chunk_bytes = None  # column bytes per core chunk of the fused residual; None: measured
        self._tuned_chunk, self._sparse_limits = None, {}  # the measured chunk, limit per chunk size

    def _derive(self, w):
        if not self.x_cl:
            return {}
        # (K, *k, C) flattened: the column order of the channels-last gather
        return {"w2cl": self.xp.ascontiguousarray(self.xp.moveaxis(w, 1, -1)).reshape(self.g.n_out, -1)}

    @property
    def _w2(self):
        # (K, C*prod(k)) for the channels-first GEMMs: a view of w, so it follows in-place changes
        return self.w.reshape(self.g.n_out, -1)

    def _chunks(self, n, per_sample):
        """Sample ranges whose columns (``per_sample`` values each) take about CHUNK_BYTES, and a
        scratch buffer for them reused across calls."""
        nb = max(min(n, 2), min(n, CHUNK_BYTES // max(per_sample * self.dtype.itemsize, 1)))
        size = nb * per_sample
        if self._scratch is None or self._scratch.size < size:
            self._scratch = self.xp.empty(size, dtype=self.dtype)
        return [(a, min(n, a + nb)) for a in range(0, n, nb)], self._scratch

    # ---------------------------------------------------------------- forward
    def forward(self, x):
        if self.x_cl:
            y = self._forward_cl(x)
            return y if self.y_cl else self.y_from_cl(y)
        return self._forward_cf_cols(self.embed(x, self.buffer))

    def y_from_cl(self, y):
        return self.xp.ascontiguousarray(self.xp.moveaxis(y, -1, 1))

    def _forward_cf_cols(self, buf):
        if self.split_cf:
            return self._forward_cf_split(buf)
        # numba gather into (N, M, C, J), one (N*M, CJ) x (CJ, K) GEMM, swap to (N, K, M) unless codes are cl
        g, np_ = self.g, self.xp
        n = buf.shape[0]
        m, nj = self.idx.shape
        cols = np_.empty((n, m, g.n_in, nj), dtype=self.dtype)
        K.gather_columns(buf.reshape(n, g.n_in, -1), self.idx, cols)
        out = cols.reshape(n * m, -1) @ self._w2.T  # (N*M, K)
        if self.y_cl:
            return out.reshape(n, *g.out_shape, g.n_out)
        res = np_.empty((n, g.n_out, m), dtype=self.dtype)
        K.swap_last_two(out.reshape(n, m, g.n_out), res)
        return res.reshape(n, g.n_out, *g.out_shape)

    def _per_core_chunk(self, default=parallel.L2_CHUNK_BYTES):
        """Samples per core chunk of the split paths: columns of about ``chunk_bytes`` (else ``default``:
        :data:`parallel.L2_CHUNK_BYTES` channels-first, :data:`CHUNK_BYTES` channels-last; at least one)."""
        m, nj = self.idx.shape
        return max(1, (self.chunk_bytes or default) // (m * self.g.n_in * nj * self.dtype.itemsize))

    def _forward_cf_split(self, buf):
        # per core, per chunk of samples: gather, GEMM and (channels-first codes) transpose while the
        # columns are in the core's cache (single-threaded BLAS in each worker)
        g, np_ = self.g, self.xp
        n = buf.shape[0]
        m, nj = self.idx.shape
        src = buf.reshape(n, g.n_in, -1)
        w2t = self._w2.T
        nb = self._per_core_chunk()
        out = np_.empty((n * m, g.n_out) if self.y_cl else (n, g.n_out, m), dtype=self.dtype)

        def work(lo, hi):
            b = min(nb, hi - lo)
            cols = self._worker_buf("cols", lo, (b, m, g.n_in, nj))
            tmp = None if self.y_cl else self._worker_buf("tmp", lo, (b * m, g.n_out))
            for i in range(lo, hi, nb):
                j = min(hi, i + nb)
                cv = cols[:j - i]
                K.gather_runs_1t(src[i:j], *self._runs, cv)
                if self.y_cl:
                    np_.matmul(cv.reshape((j - i) * m, -1), w2t, out=out[i * m:j * m])
                else:
                    tv = tmp[:(j - i) * m]
                    np_.matmul(cv.reshape((j - i) * m, -1), w2t, out=tv)
                    K.swap_last_two_1t(tv.reshape(j - i, m, g.n_out), out[i:j])

        parallel.run_split(work, n)
        if self.y_cl:
            return out.reshape(n, *g.out_shape, g.n_out)
        return out.reshape(n, g.n_out, *g.out_shape)

    def _adjoint_cf_split(self, y):
        g, np_ = self.g, self.xp
        n = y.shape[0]
        m, nj = self.idx.shape
        yc = np_.ascontiguousarray(y).reshape((n * m, g.n_out) if self.y_cl else (n, g.n_out, m))
        w2 = self._w2
        nb = self._per_core_chunk()
        buf = np_.zeros((n, g.n_in, math.prod(self.buffer)), dtype=self.dtype)

        def work(lo, hi):
            b = min(nb, hi - lo)
            cols = self._worker_buf("cols", lo, (b * m, g.n_in * nj))
            yt = None if self.y_cl else self._worker_buf("tmp", lo, (b, m, g.n_out))
            for i in range(lo, hi, nb):
                j = min(hi, i + nb)
                cv = cols[:(j - i) * m]
                if self.y_cl:
                    np_.matmul(yc[i * m:j * m], w2, out=cv)
                else:
                    yv = yt[:j - i]
                    K.swap_last_two_1t(yc[i:j], yv)
                    np_.matmul(yv.reshape((j - i) * m, g.n_out), w2, out=cv)
                K.scatter_add_runs_1t(cv.reshape(j - i, m, g.n_in, nj), *self._runs, buf[i:j])

        parallel.run_split(work, n)
        return buf.reshape(n, g.n_in, *self.buffer)

    def _padded_input(self, x):
        """x (N, *L, C) in the zero-padded buffer, flattened to (N, P, C). The buffer is kept between
        calls: only its interior is written, so the padding stays zero without clearing it."""
        g = self.g
        n, c = x.shape[0], g.n_in
        shape = (n, *self.buffer, c)
        if self._pad_buf is None or self._pad_buf.shape != shape:
            self._pad_buf = self.xp.zeros(shape, dtype=self.dtype)
        bsl, xsl = embed_slices(g, self.buffer, channels_last=True)
        self._pad_buf[bsl] = x[xsl]
        return self._pad_buf.reshape(n, -1, c)

    def _forward_cl_split(self, buf, w2cl, pool=False):
        """The per-core channels-last forward; with ``pool`` the 2x2 max pool (stride 2, floor) of each
        chunk's output taken while it is in the core's cache, returning ``(pooled, indices)``: the
        pre-activation is never written to memory."""
        g, np_ = self.g, self.xp
        n, c = buf.shape[0], g.n_in
        m, nj = self.idx.shape
        nb, w2t = self._per_core_chunk(CHUNK_BYTES), w2cl.T
        if pool:
            oh, ow = g.out_shape
            pooled = np_.empty((n, oh // 2, ow // 2, g.n_out), dtype=self.dtype)
            indices = np_.empty(pooled.shape, dtype=np.int64)
        else:
            out = np_.empty((n * m, g.n_out), dtype=self.dtype)

        def work(lo, hi):
            cols = self._worker_buf("cols", lo, (min(nb, hi - lo), m, nj, c))
            pre = self._worker_buf("pre", lo, (min(nb, hi - lo) * m, g.n_out)) if pool else None
            for i in range(lo, hi, nb):
                j = min(hi, i + nb)
                cv = cols[:j - i]
                K.gather_columns_cl_1t(buf[i:j], self.idx, cv)
                if pool:
                    y = pre[:(j - i) * m]
                    np_.matmul(cv.reshape((j - i) * m, -1), w2t, out=y)
                    K.max_pool_2d_cl_1t(y.reshape(j - i, *g.out_shape, g.n_out), 2, 2, 2, 2, pooled[i:j], indices[i:j])
                else:
                    np_.matmul(cv.reshape((j - i) * m, -1), w2t, out=out[i * m:j * m])

        parallel.run_split(work, n)
        return (pooled, indices) if pool else out.reshape(n, *g.out_shape, g.n_out)

    def forward_maxpool(self, x):
        """``max_pool(forward(x), 2, 2)`` and its indices (channels-last ``(N, PH, PW, K)``, flat ``h * OW
        + w``): with channels-last inputs and codes on the per-core split the pool is taken per chunk
        while the chunk's output is in cache (2-core EPYC (Zen 4), batch 128: EqProp CIFAR layer 1,
        3->64 32x32, 8.5 ms against 12.4 ms for the forward and then the pool; MNIST layer 2, 32->64 5x5,
        9.0 against 9.7 ms); otherwise the forward followed by the pool."""
        g = self.g
        if self.x_cl and self.y_cl and self.split_cl and g.d == 2 and min(g.out_shape) >= 2:
            return self._forward_cl_split(self._padded_input(x), self.derived()["w2cl"], pool=True)
        return super().forward_maxpool(x)

    def _forward_cl(self, x):
        # channels-last: embed in the zero-padded buffer (N, *B, C), then per chunk of samples a
        # contiguous-run gather into columns (b, M, J, C) and one (b*M, J*C) x (J*C, K) GEMM
        g, np_ = self.g, self.xp
        n, c = x.shape[0], g.n_in
        m, nj = self.idx.shape
        buf = self._padded_input(x)
        w2cl = self.derived()["w2cl"]
        if self.split_cl:
            return self._forward_cl_split(buf, w2cl)
        out = np_.empty((n * m, g.n_out), dtype=self.dtype)
        chunks, scratch = self._chunks(n, m * nj * c)
        for a, b in chunks:
            cols = scratch[:(b - a) * m * nj * c].reshape(b - a, m, nj, c)
            K.gather_columns_cl(buf[a:b], self.idx, cols)
            np_.matmul(cols.reshape((b - a) * m, -1), w2cl.T, out=out[a * m:b * m])
        return out.reshape(n, *g.out_shape, g.n_out)

    # ---------------------------------------------------------------- adjoint
    def adjoint(self, y):
        if self.x_cl:
            if not self.y_cl:
                y = self.xp.moveaxis(y, 1, -1)
            return self._adjoint_cl(y)
        return self.crop(self._adjoint_cf_cols(y), self.buffer)

    def _adjoint_cf_cols(self, y):
        if self.split_cf:
            return self._adjoint_cf_split(y)
        g, np_ = self.g, self.xp
        n = y.shape[0]
        m, nj = self.idx.shape
        if self.y_cl:
            yt = np_.ascontiguousarray(y).reshape(n, m, g.n_out)
        else:
            yt = np_.empty((n, m, g.n_out), dtype=self.dtype)
            K.swap_last_two(np_.ascontiguousarray(y).reshape(n, g.n_out, m), yt)
        cols = yt.reshape(n * m, g.n_out) @ self._w2  # (N*M, C*J)
        buf = np_.zeros((n, g.n_in, *self.buffer), dtype=self.dtype)
        K.scatter_add_columns(cols.reshape(n, m, g.n_in, nj), self.idx, buf.reshape(n, g.n_in, -1))
        return buf

    def _adjoint_cl(self, y):
        # per chunk: one (b*M, K) x (K, J*C) GEMM into columns, contiguous-run scatter-add (col2im)
        g, np_ = self.g, self.xp
        n, c = y.shape[0], g.n_in
        m, nj = self.idx.shape
        yf = np_.ascontiguousarray(y).reshape(n * m, g.n_out)
        w2cl = self.derived()["w2cl"]
        buf = np_.zeros((n, math.prod(self.buffer), c), dtype=self.dtype)
        if self.split_cl:
            nb = self._per_core_chunk(CHUNK_BYTES)

            def work(lo, hi):
                cols = self._worker_buf("cols", lo, (min(nb, hi - lo) * m, nj * c))
                for i in range(lo, hi, nb):
                    j = min(hi, i + nb)
                    cv = cols[:(j - i) * m]
                    np_.matmul(yf[i * m:j * m], w2cl, out=cv)
                    K.scatter_add_columns_cl_1t(cv.reshape(j - i, m, nj, c), self.idx, buf[i:j])

            parallel.run_split(work, n)
        else:
            chunks, scratch = self._chunks(n, m * nj * c)
            for a, b in chunks:
                cols = scratch[:(b - a) * m * nj * c]
                np_.matmul(yf[a * m:b * m], w2cl, out=cols.reshape((b - a) * m, nj * c))
                K.scatter_add_columns_cl(cols.reshape(b - a, m, nj, c), self.idx, buf[a:b])
        bsl, xsl = embed_slices(g, self.buffer, channels_last=True)
        inner = buf.reshape(n, *self.buffer, c)[bsl]
        if tuple(inner.shape[1:-1]) == tuple(g.in_shape):
            return inner  # the buffer covers the whole input: a view, no copy
        out = np_.zeros((n, *g.in_shape, c), dtype=self.dtype)
        out[xsl] = inner
        return out

    # ------------------------------------------------------- weight gradient
    def weight_grad(self, x, y):
        g, np_ = self.g, self.xp
        n, m = x.shape[0], math.prod(g.out_shape)
        if self.x_cl:
            if not self.y_cl:
                y = np_.moveaxis(y, 1, -1)
            return self._weight_grad_cl(x, y)
        buf = self.embed(x, self.buffer)
        cols = np_.empty((n, m, g.n_in, self.idx.shape[1]), dtype=self.dtype)
        K.gather_columns(buf.reshape(n, g.n_in, -1), self.idx, cols)
        if self.y_cl:
            yt = np_.ascontiguousarray(y).reshape(n, m, g.n_out)
        else:
            yt = np_.empty((n, m, g.n_out), dtype=self.dtype)
            K.swap_last_two(np_.ascontiguousarray(y).reshape(n, g.n_out, m), yt)
        dw = yt.reshape(n * m, g.n_out).T @ cols.reshape(n * m, -1)
        return dw.reshape(g.n_out, g.n_in, *g.kernel)

    def _weight_grad_cl(self, x, y):
        # dW (K, J*C) = sum over chunks of y_chunk^T (K, b*M) x columns (b*M, J*C)
        g, np_ = self.g, self.xp
        n, c = x.shape[0], g.n_in
        m, nj = self.idx.shape
        buf = self._padded_input(x)
        yf = np_.ascontiguousarray(y).reshape(n * m, g.n_out)
        dw = np_.zeros((g.n_out, nj * c), dtype=self.dtype)
        chunks, scratch = self._chunks(n, m * nj * c)
        for a, b in chunks:
            cols = scratch[:(b - a) * m * nj * c].reshape(b - a, m, nj, c)
            K.gather_columns_cl(buf[a:b], self.idx, cols)
            dw += yf[a * m:b * m].T @ cols.reshape((b - a) * m, -1)
        return np_.ascontiguousarray(np_.moveaxis(dw.reshape(g.n_out, *g.kernel, c), -1, 1))

    # ------------------------------------------------ fused residual analysis
    def _fused(self):
        return not self.x_cl and self.y_cl

    def _tunable(self):
        """Whether the fused residual's choices are worth a measurement: at least
        :data:`TUNE_MIN_MACS_RESIDUAL` multiply-adds per sample (below, fixed costs dominate and the
        defaults apply: :data:`parallel.L2_CHUNK_BYTES`, the GEMM)."""
        m, nj = self.idx.shape
        return 2 * m * self.g.n_out * self.g.n_in * nj >= TUNE_MIN_MACS_RESIDUAL

    def _residual_chunk(self):
        """Samples per core chunk of the fused residual: columns of about ``residual_chunk_bytes``, by
        default the fastest of :data:`RESIDUAL_CHUNKS` timed on this machine on first use (two workers'
        chunks per candidate, the GEMM path; :func:`sparsecoding.ops.autotune.tuned`, cached per machine
        and geometry), :data:`parallel.L2_CHUNK_BYTES` with ``SPARSECODING_TUNE=off``."""
        m, nj = self.idx.shape
        per_sample = m * self.g.n_in * nj * self.dtype.itemsize
        chunk = self.residual_chunk_bytes
        if chunk is None:
            chunk = self._tuned_chunk
        if chunk is None:
            chunk = self._tuned_chunk = self._measure_residual_chunk(per_sample)
        return max(1, chunk // per_sample)

    def _measure_residual_chunk(self, per_sample):
        from .. import autotune

        g = self.g
        sizes = sorted({max(1, c // per_sample) for c in RESIDUAL_CHUNKS})  # distinct samples per chunk
        if autotune.tune_mode() == "off" or len(sizes) == 1 or not self._fused() or not self._tunable():
            return parallel.L2_CHUNK_BYTES
        n = min(64, 2 * parallel.n_workers() * sizes[-1])
        r = np.random.default_rng(0)
        s = r.standard_normal((n, g.n_in, *g.in_shape)).astype(self.dtype)
        a = r.standard_normal((n, *g.out_shape, g.n_out)).astype(self.dtype)
        plan = self.residual_plan(s)
        saved = self.residual_chunk_bytes, self.sparse_limit

        def run(nb):
            def f():
                self.residual_chunk_bytes, self.sparse_limit = nb * per_sample, 0.0
                try:
                    self.forward_residual(plan, a, True, False)
                finally:
                    self.residual_chunk_bytes, self.sparse_limit = saved
            return f

        key = (f"fused residual chunk: C{g.n_in} K{g.n_out} {'x'.join(map(str, g.out_shape))} codes, "
               f"{self.idx.shape[1]} taps, {self.dtype.name}")
        default = max(1, parallel.L2_CHUNK_BYTES // per_sample)
        cands = {f"{nb} samples": run(nb) for nb in sizes}
        choice = autotune.tuned(key, cands, f"{default} samples" if default in sizes else next(iter(cands)))
        return int(choice.split()[0]) * per_sample

    def _sparse_limit(self, nb):
        """The code density up to which ``Phi^T a`` of a chunk of ``nb`` samples is the sparse product
        (:func:`~sparsecoding.ops._kernels.sparse_rows_product_1t`) rather than the GEMM: the largest of
        :data:`SPARSE_DENSITIES` at which the sparse product was faster, and at every lower one, timed
        single-threaded on this machine on first use (:func:`sparsecoding.ops.autotune.tuned`, cached per
        machine); 0 (always the GEMM) with ``SPARSECODING_TUNE=off``. ``self.sparse_limit`` overrides it."""
        if self.sparse_limit is not None:
            return self.sparse_limit
        cache = self._sparse_limits
        if nb not in cache:
            m, nj = self.idx.shape
            cache[nb] = _measure_sparse_limit(nb * m, self.g.n_out, self.g.n_in * nj, self.dtype) \
                if self._tunable() else 0.0
        return cache[nb]

    def residual_plan(self, s):
        """``s`` embedded once in the zero-padded buffer, with the mask of the unpadded region (the
        fused path: channels-first inputs, channels-last codes)."""
        if not self._fused():
            return {"s": s}
        g, n = self.g, s.shape[0]
        buf = self.embed(s, self.buffer)
        mask = self.xp.zeros(self.buffer, dtype=self.dtype)
        mask[embed_slices(g, self.buffer)[0][2:]] = 1
        return {"s": s, "s_buf": buf.reshape(n, g.n_in, -1), "mask": mask.reshape(-1)}

    def forward_residual(self, plan, a, want_c=True, want_r=True):
        """``(forward(r), r)`` with ``r = s - adjoint(a)``, the two convolutions fused per core and per
        cache-sized chunk of samples (:mod:`sparsecoding.ops.parallel`): the columns never leave
        the core's cache."""
        if "s_buf" not in plan:
            return super().forward_residual(plan, a, want_c, want_r)
        xp, g = self.xp, self.g
        check_real(a, "a")
        n, c = plan["s"].shape[0], g.n_in
        m, nj = self.idx.shape
        af = xp.ascontiguousarray(a, dtype=self.dtype).reshape(n * m, g.n_out)
        out = xp.empty((n * m, g.n_out), dtype=self.dtype) if want_c else None
        resid = xp.empty_like(plan["s"]) if want_r else None
        s_buf, mask, w2 = plan["s_buf"], plan["mask"], self._w2
        nb = self._residual_chunk()
        # Phi^T a by the sparse product where the chunk's codes are sparse enough (limit measured per machine)
        limit = self._sparse_limit(nb)
        bsl, xsl = embed_slices(g, self.buffer)
        if want_r and tuple(sl.stop - sl.start for sl in xsl[2:]) != tuple(g.in_shape):
            resid[...] = plan["s"]  # inputs no window reaches: nothing reconstructs them

        def work(lo, hi):
            cols = self._worker_buf("cols", lo, (min(nb, hi - lo), m, c, nj))
            rb = self._worker_buf("resid", lo, (cols.shape[0], c, s_buf.shape[2]))
            for i in range(lo, hi, nb):
                j = min(hi, i + nb)
                cv, rv = cols[:j - i], rb[:j - i]
                ai, ci = af[i * m:j * m], cv.reshape((j - i) * m, -1)
                if not (limit and K.sparse_rows_product_1t(ai, w2, ci, int(limit * ai.size))):
                    xp.matmul(ai, w2, out=ci)  # Phi^T a, as columns
                K.scatter_residual_runs_1t(cv, *self._runs, s_buf[i:j], mask, rv)  # r = s - col2im(columns)
                if want_r:
                    resid[i:j][xsl] = rv.reshape(j - i, c, *self.buffer)[bsl]
                if want_c:
                    K.gather_runs_1t(rv, *self._runs, cv)  # im2col(r)
                    xp.matmul(cv.reshape((j - i) * m, -1), w2.T, out=out[i * m:j * m])  # Phi r

        parallel.run_split(work, n)
        return (out.reshape(n, *g.out_shape, g.n_out) if want_c else None), resid
