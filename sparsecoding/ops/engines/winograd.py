"""Winograd minimal-filtering convolution for 3x3 and 5x5 stride-1 2-D layers (numba, CPU, channels-last).

Winograd's ``F(m x m, r x r)`` (Lavin & Gray 2016) computes an ``m x m`` output tile of the
cross-correlation ``y[u, v] = sum_{i,j} d[u + i, v + j] g[i, j]`` from the ``a x a`` input tile
``d`` (``a = m + r - 1``) as::

    Y = A^T [ (G g G^T) . (B^T d B) ] A          (. elementwise, per channel pair)

Summed over input channels, the elementwise products become ``a^2`` independent GEMMs::

    V[xi, t, c] = (B^T d_{t,c} B)[xi]     U[xi, c, k] = (G g_{k,c} G^T)[xi]
    M[xi] = V[xi] @ U[xi]                 y_{t,k} = A^T M[:, t, k] A

for tiles ``t`` and ``xi`` over the ``a x a`` transform positions: ``a^2`` multiplies per
``m^2`` outputs and channel pair instead of ``r^2 m^2``: 2.25x fewer GEMM flops for
``F(2x2, 3x3)`` (``a = 4``), 4x for ``F(4x4, 3x3)`` (``a = 6``), 2.8x for ``F(2x2, 5x5)``
(``a = 6``); the transformed input takes ``a^2 / m^2`` times the input's size (4x, 2.25x, 9x)
against ``r^2`` times for im2col columns.

The adjoint of a stride-1 convolution with padding ``p`` is the stride-1 convolution of the
codes with the flipped, channel-swapped kernel ``w'[c, k, i, j] = w[k, c, r-1-i, r-1-j]`` and
padding ``r - 1 - p`` (exact for ``p <= r - 1``), so the same kernels serve both maps.

Numerics: an output tile is a signed combination of its whole input tile, so the error is
normwise: at most about ``(|B^T|_inf |G|_inf |A^T|_inf)^2 eps max(|x| * |w|)`` per output map
(81 eps for F(2x2, 3x3), measured <= 40 eps; F(4x4, 3x3)'s larger entries give about 10x more;
tests/test_winograd.py checks every tile size against the direct convolution in float64 with
this bound). The weight transform is one small GEMM in the working precision.

A fused 2x2 max pool: the pool windows of a stride-2 2x2 pool are aligned with the output
tiles (``m`` even), so :meth:`WinogradNumba.forward_maxpool` takes the maximum and its index in
the output transform and never writes the pre-activation.

Work split: each core takes a contiguous share of the samples (:mod:`sparsecoding.ops.parallel`)
and works through it in chunks of tiles whose transformed inputs and products take about
``chunk_bytes`` (measured per machine, :mod:`sparsecoding.ops.autotune`), with single-threaded
BLAS, so the transformed tiles stay in the core's cache between the transform and the GEMM.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from .. import parallel
from .._jit import njit_cached
from .base import ConvEngine
from .im2col_numba import Im2colNumba

__all__ = ["WinogradNumba", "winograd_matrices", "winograd_applies", "TILES"]

TILES = {3: (2, 4), 5: (2,)}  # kernel size r -> the output tile sizes m of F(m x m, r x r) implemented


def _toom_cook(m, r, points):
    """``(B^T, G, A^T)`` of ``F(m, r)`` from Toom-Cook at ``points`` and infinity: the transpose of the
    linear-convolution algorithm ``c = C [(G g) . (A h)]`` (``A``, ``G`` evaluate ``h`` and ``g`` at the
    points, ``C`` interpolates), so ``B^T = C^T``. Rows of ``B^T`` are scaled to small integers, the
    inverse scale moved into ``G`` (the products are unchanged)."""
    n = m + r - 1
    V = np.zeros((n, n))
    A = np.zeros((n, m))
    G = np.zeros((n, r))
    for i, p in enumerate(points):
        V[i] = [p ** j for j in range(n)]
        A[i] = [p ** j for j in range(m)]
        G[i] = [p ** j for j in range(r)]
    V[-1, -1] = A[-1, -1] = G[-1, -1] = 1.0  # the point at infinity: leading coefficients
    BT = np.linalg.inv(V).T
    for i in range(n):
        nz = np.abs(BT[i][np.abs(BT[i]) > 1e-12])
        scale = nz.min()
        BT[i] /= scale
        G[i] *= scale
    BT = np.round(BT, 12)
    return BT, G, A.T


def winograd_matrices(m, r=3):
    """``(B^T, G, A^T)`` of ``F(m, r)`` (float64): ``A^T [(G g) . (B^T d)]`` is the correlation of
    ``d`` (length ``m + r - 1``) with ``g`` (length ``r``). For ``r = 3`` Lavin & Gray's matrices
    (points 0, +-1 for m=2; 0, +-1, +-2, infinity for m=4); for ``F(2, 5)`` Toom-Cook at 0, +-1, +-2
    and infinity."""
    if (m, r) == (2, 3):
        BT = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
        G = [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]
        AT = [[1, 1, 1, 0], [0, 1, -1, -1]]
    elif (m, r) == (4, 3):
        BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
              [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
        G = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
             [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]
        AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
    elif (m, r) == (2, 5):
        return _toom_cook(2, 5, [0, 1, -1, 2, -2])
    else:
        raise ValueError(f"Winograd F({m}, {r}) is not implemented: tile sizes {TILES}")
    return np.array(BT, dtype=np.float64), np.array(G, dtype=np.float64), np.array(AT, dtype=np.float64)


def winograd_applies(g):
    """Whether geometry ``g`` is a 2-D stride-1 convolution with a square kernel in :data:`TILES` and
    padding below the kernel size (the adjoint's padding ``r - 1 - p`` must not be negative)."""
    return (g.d == 2 and g.kernel[0] == g.kernel[1] and g.kernel[0] in TILES and tuple(g.stride) == (1, 1)
            and max(g.pad) <= g.kernel[0] - 1)


# ----------------------------------------------------------------------------- kernels
@njit_cached(nogil=True)
def _input_transform(x, n0, n1, th, tw, m, py, px, BT, V):  # pragma: no cover - compiled
    """``V[xi*a + nu, t, :] = (B^T d_t B)[xi, nu]`` for the tiles ``t`` of samples ``n0:n1`` (row-major
    over (n, ty, tx)); ``d_t`` the ``a x a`` window of ``x (N, H, W, C)`` at ``(ty m - py, tx m - px)``,
    zero outside ``x`` (the padding)."""
    h, w, nc = x.shape[1], x.shape[2], x.shape[3]
    a = BT.shape[0]
    tmp = np.empty((a, a, nc), dtype=V.dtype)
    t = 0
    for n in range(n0, n1):
        for ty in range(th):
            for tx in range(tw):
                y0 = ty * m - py
                x0 = tx * m - px
                # tmp[xi, j, :] = sum_i BT[xi, i] d[i, j, :]
                for xi in range(a):
                    for j in range(a):
                        for c in range(nc):
                            tmp[xi, j, c] = 0.0
                        xx = x0 + j
                        if xx < 0 or xx >= w:
                            continue
                        for i in range(a):
                            b = BT[xi, i]
                            yy = y0 + i
                            if b == 0.0 or yy < 0 or yy >= h:
                                continue
                            for c in range(nc):
                                tmp[xi, j, c] += b * x[n, yy, xx, c]
                # V[xi, nu, :] = sum_j tmp[xi, j, :] BT[nu, j]
                for xi in range(a):
                    for nu in range(a):
                        row = V[xi * a + nu, t]
                        for c in range(nc):
                            row[c] = 0.0
                        for j in range(a):
                            b = BT[nu, j]
                            if b == 0.0:
                                continue
                            for c in range(nc):
                                row[c] += b * tmp[xi, j, c]
                t += 1


@njit_cached(nogil=True)
def _tile_output(M, t, AT, tmp, val):  # pragma: no cover - compiled
    """``val[u, v, :] = (A^T M_t A)[u, v]`` for tile ``t`` of ``M (a*a, T, K)``."""
    mm, a = AT.shape
    nk = M.shape[2]
    for u in range(mm):
        for nu in range(a):
            for k in range(nk):
                tmp[u, nu, k] = 0.0
            for xi in range(a):
                b = AT[u, xi]
                if b == 0.0:
                    continue
                row = M[xi * a + nu, t]
                for k in range(nk):
                    tmp[u, nu, k] += b * row[k]
    for u in range(mm):
        for v in range(mm):
            for k in range(nk):
                val[u, v, k] = 0.0
            for nu in range(a):
                b = AT[v, nu]
                if b == 0.0:
                    continue
                for k in range(nk):
                    val[u, v, k] += b * tmp[u, nu, k]


@njit_cached(nogil=True)
def _output_transform(M, n0, n1, th, tw, AT, out):  # pragma: no cover - compiled
    """``out[n, ty m + u, tx m + v, :] = (A^T M_t A)[u, v]`` inside ``out (N, OH, OW, K)``."""
    mm, a = AT.shape
    oh, ow, nk = out.shape[1], out.shape[2], out.shape[3]
    tmp = np.empty((mm, a, nk), dtype=M.dtype)
    val = np.empty((mm, mm, nk), dtype=M.dtype)
    t = 0
    for n in range(n0, n1):
        for ty in range(th):
            for tx in range(tw):
                _tile_output(M, t, AT, tmp, val)
                for u in range(mm):
                    oy = ty * mm + u
                    if oy >= oh:
                        break
                    for v in range(mm):
                        ox = tx * mm + v
                        if ox >= ow:
                            break
                        for k in range(nk):
                            out[n, oy, ox, k] = val[u, v, k]
                t += 1


@njit_cached(nogil=True)
def _output_maxpool(M, n0, n1, th, tw, AT, ow_full, pooled, idx):  # pragma: no cover - compiled
    """The output tiles max-pooled 2x2 / stride 2 without writing them: ``pooled (N, PH, PW, K)`` and
    ``idx`` the flat index ``h * OW + w`` of the first maximum in row-major window order (as
    :func:`sparsecoding.ops._kernels.max_pool_2d_cl`)."""
    mm, a = AT.shape
    ph, pw, nk = pooled.shape[1], pooled.shape[2], pooled.shape[3]
    tmp = np.empty((mm, a, nk), dtype=M.dtype)
    val = np.empty((mm, mm, nk), dtype=M.dtype)
    half = mm // 2
    t = 0
    for n in range(n0, n1):
        for ty in range(th):
            for tx in range(tw):
                _tile_output(M, t, AT, tmp, val)
                for pu in range(half):
                    qy = ty * half + pu
                    if qy >= ph:
                        break
                    for pv in range(half):
                        qx = tx * half + pv
                        if qx >= pw:
                            break
                        for k in range(nk):
                            best = val[2 * pu, 2 * pv, k]
                            bi = (2 * qy) * ow_full + 2 * qx
                            for da in range(2):
                                for db in range(2):
                                    v = val[2 * pu + da, 2 * pv + db, k]
                                    if v > best:
                                        best = v
                                        bi = (2 * qy + da) * ow_full + 2 * qx + db
                            pooled[n, qy, qx, k] = best
                            idx[n, qy, qx, k] = bi
                t += 1


# ----------------------------------------------------------------------------- engine
class WinogradNumba(ConvEngine):
    """``F(m x m, r x r)`` Winograd engine (``m`` in ``TILES[r]``), native layout channels-last.

    Channels-first operands are transposed on entry and exit (the EqProp networks keep their
    states channels-last on the CPU, where no copy is made). The weight gradient is the
    im2col engine's (the EqProp relaxation needs only the two maps); with ``adjoint_im2col`` the
    adjoint is too ("winograd<m>+im2col": the Winograd forward, the fused pool, the im2col adjoint).
    """

    method, family = "winograd", "native"
    native_code_layout = "channels_last"

    def __init__(self, geometry, xp, dtype, x_layout, y_layout, caps, m=2, chunk_bytes=None, adjoint_im2col=False):
        super().__init__(geometry, xp, dtype, x_layout, y_layout, caps)
        if not winograd_applies(geometry):
            raise ValueError(f"the Winograd engine needs a 2-D 3x3 or 5x5 stride-1 convolution with padding below "
                             f"the kernel size, got "
                             f"kernel {geometry.kernel}, stride {geometry.stride}, padding {geometry.pad}")
        self.m, self.r = int(m), int(geometry.kernel[0])
        BT, _, AT = winograd_matrices(self.m, self.r)
        self.a = BT.shape[0]
        self.BT, self.AT = BT.astype(dtype), AT.astype(dtype)
        self.chunk_bytes = int(chunk_bytes or 1 << 20)
        self._grad = Im2colNumba(geometry, xp, dtype, x_layout, y_layout, caps)
        # the adjoint by the im2col engine (GEMM + col2im) instead of a Winograd convolution onto the input
        # shape: where the input is larger than the output ("same"-less padding, C < K) the adjoint's tiles
        # and channels cost more than its forward (MNIST layer 2, 32->64 5x5, 13x13 -> 10x10, 64 samples on one
        # core of the 2-core EPYC Zen 4: F(2x2) forward 5.3 ms, adjoint 10.0 ms; im2col forward 7.5, adjoint
        # 7.4); which pairing wins is measured with the other candidates (engines._conv3x3)
        self.adjoint_im2col = bool(adjoint_im2col)

    @property
    def name(self):
        return f"winograd{self.m}{'+im2col' if self.adjoint_im2col else ''}-{self.family}"

    @contextmanager
    def frozen(self):
        with super().frozen(), self._grad.frozen():
            yield self

    def set_weights(self, w):
        super().set_weights(w)
        self._grad.set_weights(w)

    def _transformed(self, which):
        """``U[xi*a + nu, c, k] = (G w[k, c] G^T)[xi, nu]`` ("U", the forward's) or the same of the flipped,
        channel-swapped kernel, (a*a, K, C) ("Ut", the adjoint's); in the working precision. Only the one
        asked for is computed; inside :meth:`frozen` each once."""
        d = self._derived if self._frozen else None
        if d is None:
            d = {}
        if which not in d:
            # U[xi a + nu] = sum_ij G[xi, i] G[nu, j] w[.., i, j]: one (a^2, r^2) x (r^2, C K) GEMM with
            # kron(G, G), in the working precision (measured 2-core AMD EPYC Zen 4, 256->512 float32: 4.5 ms;
            # the same in float64 18 ms, an einsum over (K, C, r, r) in float64 52-149 ms). Its rounding,
            # at most about r^2 eps (|G| |w| |G|^T), is far inside the transform's own error bound.
            _, G, _ = winograd_matrices(self.m, self.r)
            w = np.asarray(self.w, dtype=self.dtype)
            nk, nc, r = w.shape[0], w.shape[1], self.r
            if which == "U":  # taps first, then (c, k)
                taps = np.ascontiguousarray(w.reshape(nk, nc, r * r).transpose(2, 1, 0)).reshape(r * r, -1)
                shape = (self.a * self.a, nc, nk)
            else:  # the flipped kernel: tap (i, j) of w' is tap (r-1-i, r-1-j) of w; then (k, c)
                taps = np.ascontiguousarray(w.reshape(nk, nc, r * r)[:, :, ::-1].transpose(2, 0, 1)).reshape(r * r, -1)
                shape = (self.a * self.a, nk, nc)
            u = (np.kron(G, G).astype(self.dtype) @ taps).reshape(shape)
            d[which] = np.ascontiguousarray(u, dtype=self.dtype)
        if self._frozen:
            self._derived = d
        return d[which]

    # ---------------------------------------------------------------- the core
    def _run(self, x, U, pad, out_hw, pool=False):
        """Stride-1 ``r x r`` convolution of channels-last ``x (N, H, W, C)`` with transformed weights ``U``
        (a*a, C, K) and padding ``pad``, output ``(N, *out_hw, K)``; with ``pool`` the 2x2 max pool
        of it and the indices instead."""
        xp, m, a = self.xp, self.m, self.a
        x = xp.ascontiguousarray(x, dtype=self.dtype)
        n, nc, nk = x.shape[0], x.shape[3], U.shape[2]
        oh, ow = out_hw
        th, tw = -(-oh // m), -(-ow // m)
        tiles = th * tw
        if pool:
            ph, pw = oh // 2, ow // 2
            out = xp.empty((n, ph, pw, nk), dtype=self.dtype)
            idx = xp.empty((n, ph, pw, nk), dtype=np.int64)
        else:
            out = xp.empty((n, oh, ow, nk), dtype=self.dtype)
        per_sample = a * a * tiles * (nc + nk) * self.dtype.itemsize
        nb = max(1, self.chunk_bytes // max(per_sample, 1))
        BT, AT = self.BT, self.AT

        def work(lo, hi):
            b = min(nb, hi - lo)
            vbuf = self._worker_buf("V", lo, (a * a * b * tiles * nc,))
            mbuf = self._worker_buf("M", lo, (a * a * b * tiles * nk,))
            for i in range(lo, hi, nb):
                j = min(hi, i + nb)
                t = (j - i) * tiles
                V = vbuf[:a * a * t * nc].reshape(a * a, t, nc)
                M = mbuf[:a * a * t * nk].reshape(a * a, t, nk)
                _input_transform(x, i, j, th, tw, m, pad[0], pad[1], BT, V)
                np.matmul(V, U, out=M)
                if pool:
                    _output_maxpool(M, i, j, th, tw, AT, ow, out, idx)
                else:
                    _output_transform(M, i, j, th, tw, AT, out)

        parallel.run_split(work, n)
        return (out, idx) if pool else out

    # ---------------------------------------------------------------- maps
    def forward(self, x):
        g = self.g
        xc = x if self.x_cl else self.xp.moveaxis(x, 1, -1)
        y = self._run(xc, self._transformed("U"), g.pad, g.out_shape)
        return y if self.y_cl else self.xp.ascontiguousarray(self.xp.moveaxis(y, -1, 1))

    def forward_maxpool(self, x):
        """``max_pool(forward(x), 2, 2)`` and its indices (channels-last ``(N, PH, PW, K)``, flat
        ``h * OW + w``), the pre-activation never written (channels-first codes: the forward, then the pool)."""
        if not self.y_cl:
            return super().forward_maxpool(x)
        g = self.g
        xc = x if self.x_cl else self.xp.moveaxis(x, 1, -1)
        return self._run(xc, self._transformed("U"), g.pad, g.out_shape, pool=True)

    def adjoint(self, y):
        if self.adjoint_im2col:
            return self._grad.adjoint(y)
        g = self.g
        yc = y if self.y_cl else self.xp.moveaxis(y, 1, -1)
        pad = tuple(self.r - 1 - p for p in g.pad)
        x = self._run(yc, self._transformed("Ut"), pad, g.in_shape)
        return x if self.x_cl else self.xp.ascontiguousarray(self.xp.moveaxis(x, -1, 1))

    def weight_grad(self, x, y):
        return self._grad.weight_grad(x, y)

