"""Generic-array im2col: window views, one GEMM, strided col2im; any array namespace (the path cupy takes).

* forward: the zero-padded input's strided window view is copied once into
  columns ``(N, C prod(k), prod(O))`` and multiplied by ``w (K, C prod(k))``;
* adjoint: one GEMM into columns, then ``prod(k)`` strided adds (col2im) into the
  padded buffer, no ``add.at`` and no per-channel loop;
* weight gradient: the window view contracted with ``y`` over samples and positions.

Channels-last arrays are transposed around the channels-first core.
"""
from __future__ import annotations

import math
from itertools import product

from .base import ConvEngine

__all__ = ["Im2colGeneric"]


class Im2colGeneric(ConvEngine):
    method, family = "im2col", "generic"

    def __init__(self, geometry, xp, dtype, x_layout, y_layout, caps):
        super().__init__(geometry, xp, dtype, x_layout, y_layout, caps)
        g = geometry
        self.buffer = tuple((o - 1) * s + k for o, s, k in zip(g.out_shape, g.stride, g.kernel))

    def _windows(self, buf):
        """Strided window view (N, C, *O, *k) of a padded buffer."""
        g = self.g
        win = self.caps.sliding_window_view(buf, g.kernel, axis=tuple(range(2, 2 + g.d)))
        return win[(slice(None), slice(None), *(slice(None, None, s) for s in g.stride))]

    def _forward_cf(self, x):
        g, xp = self.g, self.xp
        n = x.shape[0]
        win = self._windows(self.embed(x, self.buffer))
        d = g.d
        perm = [0, 1] + list(range(2 + d, 2 + 2 * d)) + list(range(2, 2 + d))
        # columns (N, C, *k, *O) -> (N, C*prod(k), prod(O)): the one im2col copy
        cols = xp.ascontiguousarray(win.transpose(perm)).reshape(n, -1, math.prod(g.out_shape))
        out = xp.matmul(self.w.reshape(g.n_out, -1), cols)  # (N, K, prod(O))
        return out.reshape(n, g.n_out, *g.out_shape)

    def _adjoint_cf(self, y):
        g, xp = self.g, self.xp
        n = y.shape[0]
        cols = xp.matmul(self.w.reshape(g.n_out, -1).T, y.reshape(n, g.n_out, -1))  # (N, C*prod(k), prod(O))
        buf = xp.zeros((n, g.n_in, *self.buffer), dtype=self.dtype)
        cols = cols.reshape(n, g.n_in, *g.kernel, *g.out_shape)
        for off in product(*(range(k) for k in g.kernel)):  # col2im: one strided add per kernel offset
            dst = tuple(slice(j, j + (o - 1) * s + 1, s) for j, o, s in zip(off, g.out_shape, g.stride))
            buf[(slice(None), slice(None), *dst)] += cols[(slice(None), slice(None), *off)]
        return self.crop(buf, self.buffer)

    def weight_grad(self, x, y):
        g, xp = self.g, self.xp
        x, y = self.x_to_cf(x), self.y_to_cf(y)
        n, m = x.shape[0], math.prod(g.out_shape)
        win = self._windows(self.embed(x, self.buffer))
        cols = win.reshape(n, g.n_in, m, math.prod(g.kernel))
        dw = xp.einsum("nkm,ncmj->kcj", y.reshape(n, g.n_out, m), cols)
        return dw.reshape(g.n_out, g.n_in, *g.kernel)
