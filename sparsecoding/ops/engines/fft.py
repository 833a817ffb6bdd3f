"""FFT engine: space-to-depth for the stride, real FFTs at fast lengths, batched complex matmuls.

The stride is folded into channels (phase decomposition: ``C' = C prod(s)``,
``k' = ceil(k / s)``), which turns the problem into a stride-1 correlation on the
output grid; the transforms are real FFTs padded to fast lengths (the capability
table's FFT module: ``scipy.fft`` with workers on CPU, ``cupyx.scipy.fft`` on GPU),
and the channel contraction is one batched complex matmul over frequencies in a
frequency-major layout. The kernel spectrum is a weight-derived operand (computed
once inside ``frozen``). The weight gradient is the im2col engine's of the same
family (``grad_engine``), which needs no spectrum.
"""
from __future__ import annotations

import math

from .base import ConvEngine

__all__ = ["FFTEngine"]


class FFTEngine(ConvEngine):
    method = "fft"

    def __init__(self, geometry, xp, dtype, x_layout, y_layout, caps, grad_engine):
        super().__init__(geometry, xp, dtype, x_layout, y_layout, caps)
        self.family, self.grad_engine = grad_engine.family, grad_engine
        g = geometry
        self._fft, self._fkw = caps.fft, caps.fft_kwargs
        self._kq = tuple(-(-k // s) for k, s in zip(g.kernel, g.stride))  # k' = ceil(k/s)
        self._q = tuple(o + k - 1 for o, k in zip(g.out_shape, self._kq))  # phases that matter
        self.buffer = tuple(q * s for q, s in zip(self._q, g.stride))
        self._nfft = tuple(self._fft.next_fast_len(q, real=True) for q in self._q)
        self._axes = tuple(range(2, 2 + g.d))
        self._fshape = (*self._nfft[:-1], self._nfft[-1] // 2 + 1)

    def set_weights(self, w):
        super().set_weights(w)
        self.grad_engine.set_weights(w)

    def _derive(self, w):
        xp, g, kq = self.xp, self.g, self._kq
        # kernel phases: (K, C', k'...), zero padded to k'*s
        wpad = xp.zeros((g.n_out, g.n_in, *(k * s for k, s in zip(kq, g.stride))), dtype=w.dtype)
        wpad[(slice(None), slice(None), *(slice(0, k) for k in g.kernel))] = w
        wph = self._space_to_depth(wpad, kq)
        W = self._fft.rfftn(wph, s=self._nfft, axes=self._axes, **self._fkw)
        nf = math.prod(self._fshape)
        cq = wph.shape[1]
        # frequency-major layouts for batched matmuls: forward uses conj(W) as (F, C', K), adjoint W as (F, K, C')
        Wf = W.reshape(g.n_out, cq, nf).transpose(2, 0, 1)  # (F, K, C')
        return {"W_adj": xp.ascontiguousarray(Wf), "W_fwd": xp.ascontiguousarray(xp.conj(Wf).transpose(0, 2, 1))}

    def _space_to_depth(self, a, q):
        """(N, C, *(q*s)) -> (N, C*prod(s), *q), channel index (c, r1, .., rd)."""
        g = self.g
        n, c = a.shape[:2]
        shape = [n, c]
        for qi, si in zip(q, g.stride):
            shape += [qi, si]
        a = a.reshape(shape)
        perm = [0, 1] + [3 + 2 * i for i in range(g.d)] + [2 + 2 * i for i in range(g.d)]
        return a.transpose(perm).reshape(n, c * math.prod(g.stride), *q)

    def _depth_to_space(self, a, q):
        """Inverse of :meth:`_space_to_depth`."""
        g = self.g
        d, n = g.d, a.shape[0]
        c = a.shape[1] // math.prod(g.stride)
        a = a.reshape(n, c, *g.stride, *q)
        perm = [0, 1]
        for i in range(d):
            perm += [2 + d + i, 2 + i]
        return a.transpose(perm).reshape(n, c, *(qi * si for qi, si in zip(q, g.stride)))

    def _forward_cf(self, x):
        g, xp = self.g, self.xp
        n = x.shape[0]
        xph = self._space_to_depth(self.embed(x, self.buffer), self._q)  # (N, C', *q)
        X = self._fft.rfftn(xph, s=self._nfft, axes=self._axes, **self._fkw)
        nf = math.prod(self._fshape)
        Xf = X.reshape(n, X.shape[1], nf).transpose(2, 0, 1)  # (F, N, C')
        Y = xp.matmul(Xf, self.derived()["W_fwd"])  # (F, N, K)
        Y = Y.transpose(1, 2, 0).reshape(n, g.n_out, *self._fshape)
        y = self._fft.irfftn(Y, s=self._nfft, axes=self._axes, **self._fkw)
        return xp.ascontiguousarray(y[(slice(None), slice(None), *(slice(0, o) for o in g.out_shape))])

    def _adjoint_cf(self, y):
        g, xp = self.g, self.xp
        n = y.shape[0]
        Y = self._fft.rfftn(y, s=self._nfft, axes=self._axes, **self._fkw)
        nf = math.prod(self._fshape)
        Yf = Y.reshape(n, g.n_out, nf).transpose(2, 0, 1)  # (F, N, K)
        X = xp.matmul(Yf, self.derived()["W_adj"])  # (F, N, C')
        X = X.transpose(1, 2, 0).reshape(n, X.shape[2], *self._fshape)
        xph = self._fft.irfftn(X, s=self._nfft, axes=self._axes, **self._fkw)
        xph = xph[(slice(None), slice(None), *(slice(0, q) for q in self._q))]
        return self.crop(self._depth_to_space(xph, self._q), self.buffer)

    def weight_grad(self, x, y):
        return self.grad_engine.weight_grad(x, y)
