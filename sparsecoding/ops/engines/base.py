"""The engine interface: how one engine computes a convolution operator's maps.

An engine is built for one geometry, dtype and pair of layouts (inputs ``x`` and
outputs/codes ``y``, each ``"channels_first"`` or ``"channels_last"``) and never
changes them; :class:`~sparsecoding.ops.conv.ConvOperator` checks and casts the
arrays, then calls:

* ``forward(x) -> y`` and ``adjoint(y) -> x`` (``conv`` and ``conv_transpose``);
* ``weight_grad(x, y) -> dW (K, C, *k)``;
* ``residual_plan(s)`` and ``forward_residual(plan, a, want_c, want_r) -> (c, r)`` with
  ``r = s - adjoint(a)`` and ``c = forward(r)`` (the LCA drive and minus the LASSO gradient;
  either may be skipped); engines may fuse the two.

Weight-derived operands (transposed GEMM operands, kernel spectra) come from
:meth:`ConvEngine.derived`: recomputed at every call so in-place changes of the
weights are seen, computed once inside :meth:`ConvEngine.frozen`.

Layouts: an engine computes natively in some layouts and transposes around
its channels-first core in the others (:meth:`x_to_cf` and friends);
``native_code_layout`` names the code layout it produces without a transpose,
which the solvers iterate in (:meth:`~sparsecoding.ops.conv.ConvOperator.iteration_view`).
"""
from __future__ import annotations

import math
from contextlib import contextmanager

from .._geometry import embed_slices

__all__ = ["ConvEngine"]


class ConvEngine:
    method = None  # "im2col" or "fft"
    family = None  # "native" or "generic"
    native_code_layout = "channels_first"

    def __init__(self, geometry, xp, dtype, x_layout, y_layout, caps):
        self.g, self.xp, self.dtype, self.caps = geometry, xp, dtype, caps
        self.x_layout, self.y_layout = x_layout, y_layout
        self.x_cl, self.y_cl = x_layout == "channels_last", y_layout == "channels_last"
        self.w = None
        self._frozen, self._derived = 0, None
        self._wbufs = {}  # the per-core workers' buffers, kept between calls (_worker_buf)

    @property
    def name(self):
        return f"{self.method}-{self.family}"

    # -------------------------------------------------------------- weights
    def set_weights(self, w):
        """Use ``w`` (kept by reference: in-place changes are seen at the next call)."""
        self.w = w
        self._derived = None

    @contextmanager
    def frozen(self):
        """Promise that ``w`` does not change inside the block: derived operands are computed once (re-entrant)."""
        self._frozen += 1
        try:
            yield self
        finally:
            self._frozen -= 1
            if not self._frozen:
                self._derived = None

    def derived(self):
        """The operands derived from the current weight values (cached only while frozen)."""
        d = self._derived
        if d is None:
            d = self._derive(self.w)
            if self._frozen:
                self._derived = d
        return d

    def _derive(self, w):
        return {}

    # ----------------------------------------------------------- work buffers
    def _worker_buf(self, tag, lo, shape):
        """A work buffer of ``shape`` for the per-core worker whose samples start at ``lo``, kept between
        calls (a new multi-MB array in every call would pay its page faults each time; not measured on its
        own: the 1.5-2x slowdown of the per-core split first blamed on it came from OpenBLAS's spinning
        threads, see Im2colNumba.__init__)."""
        size = math.prod(shape)
        buf = self._wbufs.get((tag, lo))
        if buf is None or buf.size < size:
            buf = self._wbufs[(tag, lo)] = self.xp.empty(size, dtype=self.dtype)
        return buf[:size].reshape(shape)

    # --------------------------------------------------------------- layouts
    def x_to_cf(self, x):
        return self.xp.moveaxis(x, -1, 1) if self.x_cl else x

    def x_from_cf(self, x):
        return self.xp.ascontiguousarray(self.xp.moveaxis(x, 1, -1)) if self.x_cl else x

    def y_to_cf(self, y):
        return self.xp.moveaxis(y, -1, 1) if self.y_cl else y

    def y_from_cf(self, y):
        return self.xp.ascontiguousarray(self.xp.moveaxis(y, 1, -1)) if self.y_cl else y

    # --------------------------------------------------------------- padding
    def embed(self, x, buffer):
        """Channels-first ``x (N, C, *L)`` in a zero buffer ``(N, C, *buffer)`` at offset ``pad``."""
        g = self.g
        buf = self.xp.zeros((x.shape[0], g.n_in, *buffer), dtype=self.dtype)
        bsl, xsl = embed_slices(g, buffer)
        buf[bsl] = x[xsl]
        return buf

    def crop(self, buf, buffer):
        """The input region ``(N, C, *L)`` of a channels-first buffer (zeros where it does not reach)."""
        g = self.g
        out = self.xp.zeros((buf.shape[0], g.n_in, *g.in_shape), dtype=self.dtype)
        bsl, xsl = embed_slices(g, buffer)
        out[xsl] = buf[bsl]
        return out

    # ------------------------------------------------------------------ maps
    def forward_maxpool(self, x):
        """``max_pool(forward(x), 2, 2)`` (stride 2, floor) and its indices, in the engine's code layout: the
        forward, then the pool; engines that take the pool inside their forward override this."""
        from . import select_pool_engine

        return select_pool_engine(self.xp).max_pool(self.forward(x), (2, 2), (2, 2), self.y_cl)

    def forward(self, x):
        return self.y_from_cf(self._forward_cf(self.x_to_cf(x)))

    def adjoint(self, y):
        return self.x_from_cf(self._adjoint_cf(self.y_to_cf(y)))

    def _forward_cf(self, x):
        raise NotImplementedError

    def _adjoint_cf(self, y):
        raise NotImplementedError

    def weight_grad(self, x, y):
        raise NotImplementedError

    def residual_plan(self, s):
        return {"s": s}

    def forward_residual(self, plan, a, want_c=True, want_r=True):
        r = plan["s"] - self.adjoint(a)
        return (self.forward(r) if want_c else None), (r if want_r else None)
