"""N-d cross-correlation and its adjoint, channels-first, PyTorch semantics.

``conv(x, w)`` is ``torch.nn.functional.conv{1,2,3}d(x, w, stride, padding)``
(no bias, dilation 1, groups 1) and ``conv_transpose(y, w)`` is
``conv_transpose{1,2,3}d(y, w, stride, padding, output_padding)``, i.e. the
exact adjoint of ``conv`` for an input of the matching size.

Shapes: ``x (N, C, *L)``, ``w (K, C, *k)``, ``y (N, K, *O)`` with
``O = floor((L + 2p - k) / s) + 1`` per spatial dimension.

Padding ``"same"`` means ``p = (k - 1) // 2`` for odd ``k`` at any stride (as
lca-pytorch uses it); with stride 1 this is PyTorch's ``"same"``.

:class:`ConvOperator` is the :class:`~sparsecoding.ops.linop.LinearOperator` of
``x -> conv(x, w)`` for a fixed input shape: it checks and casts the arrays and
hands them to its engine, fixed when it is built (:mod:`sparsecoding.ops.engines`:
numba im2col on the CPU, generic-array im2col on any namespace, FFT; chosen by the
backend's capability table and the cost model :func:`choose_method`). Nothing here
tests the array module.

Dtypes and edge cases:

* Complex arrays are refused with a ``TypeError`` naming the argument (the
  imaginary part would otherwise be dropped).
* The engines compute in float32 or float64. A :class:`ConvOperator` computes
  in its weights' dtype, which must be one of those two (``TypeError`` naming
  ``w`` otherwise); its inputs of any real dtype are cast to it. The
  functional :func:`conv` / :func:`conv_transpose` compute in ``w``'s dtype
  when it is float32/float64 (as before), and otherwise promote float16,
  integer and bool operands to float32 (float64 when the other operand is
  float64): float16 in, float32 out.
* An empty batch (N = 0) gives an empty result of the usual shape:
  ``(0, K, *O)`` for ``conv`` / ``forward``, ``(0, C, *L)`` for
  ``conv_transpose`` / ``adjoint`` (channels-last shapes where asked), and a
  zero weight gradient.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager

import numpy as np

from ..backend import get_xp
from ._geometry import as_tuple, check_real, check_weights, conv_output_shape, make_geometry, resolve_padding
from .engines import METHODS, choose_method, select_conv_engine
from .linop import LinearOperator, power_iteration

__all__ = ["conv", "conv_transpose", "ConvOperator", "conv_output_shape", "resolve_padding", "choose_method"]

LAYOUTS = ("channels_first", "channels_last")


def _check_finite(xp, a, name):
    if not bool(xp.isfinite(a).all()):
        raise ValueError(f"{name} contains NaN or Inf")


def _per_sample(layout, n_channels, spatial):
    return (*spatial, n_channels) if layout == "channels_last" else (n_channels, *spatial)


class ConvOperator(LinearOperator):
    """The linear map ``x -> conv(x, w)`` for a fixed input shape, and its adjoint.

    Parameters
    ----------
    w : array (K, C, *k)
        Weights, float32 or float64; 1 to 3 spatial dimensions. Kept by reference: in-place
        changes are seen at the next call (see :meth:`frozen_weights`).
    in_shape : tuple of int
        Spatial shape ``L`` of the inputs.
    stride, padding : as for :func:`conv`.
    method : {"auto", "im2col", "fft", "winograd"}
        Engine kind; "auto" uses :func:`choose_method`'s cost model, except for 3x3 stride-1 2-D
        layers with channels-last inputs and codes on the CPU, where im2col, Winograd F(2x2, 3x3)
        and F(4x4, 3x3) are timed on first use and the fastest is cached per machine
        (:mod:`sparsecoding.ops.autotune`); "winograd" (3x3 stride-1 2-D, CPU) picks the faster
        tile size the same way. The engine family (numba or generic arrays) comes from
        ``backend.capabilities``.
    layout : {"channels_first", "channels_last"}
        Layout of the inputs ``x``: ``(N, C, *L)`` (PyTorch) or ``(N, *L, C)``.
    code_layout : {"channels_first", "channels_last"} or None
        Layout of the outputs ``y`` (codes): ``(N, K, *O)`` or ``(N, *O, K)``; default ``layout``.
    out_shape : tuple of int or None
        Keep only the leading ``out_shape`` block of the output positions (each entry between 1 and
        the full output size): those are all that is computed, and ``adjoint`` is the adjoint of the
        cropped map. For a layer followed by a 2x2 floor pool on an odd output (11x11 -> 5x5), the
        row and column the pool drops are never computed: ``out_shape=(10, 10)``. Default: the full
        output ``conv_output_shape(in_shape, k, stride, padding)``.

    Notes
    -----
    The :class:`~sparsecoding.ops.linop.LinearOperator` contract: ``in_shape`` / ``out_shape``
    are the per-sample shapes in the operator's layouts (``(C, *L)`` and ``(K, *O)``
    channels-first), ``forward(x)`` is ``conv``, ``adjoint(y)`` is ``conv_transpose`` onto
    ``in_shape`` (``<forward(x), y> = <x, adjoint(y)>``), ``weight_grad(x, y)`` the derivative
    of ``<forward(x), y>`` in ``w``, ``lipschitz()`` the largest eigenvalue of ``A A^T``,
    ``residual_plan`` / ``forward_residual`` the fused residual step, and
    ``iteration_view()`` the same operator with codes in the engine's native layout
    (channels-last for the numba im2col engine, where the fused per-core residual runs).
    ``geometry`` holds the spatial shapes, kernel, stride and padding.
    """

    def __init__(self, w, in_shape, stride=1, padding=0, method="auto", layout="channels_first", code_layout=None,
                 out_shape=None):
        self.xp = get_xp(w)
        self.geometry = make_geometry(w, in_shape, stride, padding, out_shape)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        code_layout = layout if code_layout is None else code_layout
        for name, value in (("layout", layout), ("code_layout", code_layout)):
            if value not in LAYOUTS:
                raise ValueError(f"{name} must be one of {LAYOUTS}, got {value!r}")
        g = self.geometry
        self.layout, self.code_layout, self.dtype = layout, code_layout, w.dtype
        self.in_shape = _per_sample(layout, g.n_in, g.in_shape)
        self.out_shape = _per_sample(code_layout, g.n_out, g.out_shape)
        self._engine = select_conv_engine(g, self.xp, w.dtype, method, layout, code_layout)
        self.method = self._engine.method
        self._shared = {"L": None}  # the Lipschitz estimate, shared with the iteration view
        self._view = None
        self._outer_layout = code_layout  # the code layout of the operator this one is a view of
        self.update_weights(w)

    @property
    def engine(self):
        """The engine's name: "im2col-native", "im2col-generic", "fft-native", "fft-generic",
        "winograd2-native", "winograd4-native", or "winograd2+im2col-native" / "winograd4+im2col-native"
        (the Winograd forward with the im2col adjoint)."""
        return self._engine.name

    # ------------------------------------------------------------------ setup
    def update_weights(self, w):
        """Use a new weight array of the same shape (and drop the cached Lipschitz estimate).

        Nothing derived from the weight *values* is kept between calls (the channels-last
        GEMM operand, the FFT kernel spectrum): it is recomputed from ``w`` at every
        ``forward`` / ``adjoint``, so in-place changes of ``w`` (optimiser steps) are always
        seen. Inside :meth:`frozen_weights` it is computed once and reused, which iterative
        solvers use for the length of one relaxation. The Lipschitz estimate is cached until
        the next call of this method.
        """
        g = self.geometry
        check_weights(w)
        if tuple(w.shape) != (g.n_out, g.n_in, *g.kernel):
            raise ValueError(f"w must keep shape {(g.n_out, g.n_in, *g.kernel)}, got {tuple(w.shape)}")
        self.w = w
        self._engine.set_weights(w)
        self._shared["L"] = None
        if self._view is not None and self._view is not self:
            self._view.w = w
            self._view._engine.set_weights(w)

    set_weights = update_weights

    @contextmanager
    def frozen_weights(self):
        """Promise that ``w`` does not change inside the block: derived operands are computed once.

        Re-entrant; the cache is dropped when the outermost block exits. Used by the
        relaxation loops (one weight transpose or kernel FFT per relaxation, not per step).
        """
        with self._engine.frozen():
            yield self

    frozen = frozen_weights

    # ------------------------------------------------------------- iteration
    def iteration_view(self):
        """This operator with codes in the engine's native layout (a view sharing weights and the
        Lipschitz estimate; itself where the layouts agree)."""
        native = self._engine.native_code_layout
        if self._view is None:
            if native == self.code_layout or self.layout == "channels_last":
                self._view = self
            else:
                view = copy.copy(self)
                view.code_layout = native
                view.out_shape = _per_sample(native, self.geometry.n_out, self.geometry.out_shape)
                view._engine = select_conv_engine(self.geometry, self.xp, self.dtype, self.method, self.layout,
                                                  native)
                view._engine.set_weights(self.w)
                view._view = view
                self._view = view
        return self._view

    def to_inner(self, a):
        if self._outer_layout == self.code_layout:
            return a
        return self.xp.ascontiguousarray(self.xp.moveaxis(a, 1, -1) if self.code_layout == "channels_last"
                                         else self.xp.moveaxis(a, -1, 1))

    def to_outer(self, a):
        if self._outer_layout == self.code_layout:
            return a
        return self.xp.ascontiguousarray(self.xp.moveaxis(a, -1, 1) if self.code_layout == "channels_last"
                                         else self.xp.moveaxis(a, 1, -1))

    # --------------------------------------------------------------- checking
    def _check(self, a, layout, n_channels, spatial, name):
        check_real(a, name)
        d = self.geometry.d
        if layout == "channels_last":
            if a.ndim != 2 + d or tuple(a.shape[1:]) != (*spatial, n_channels):
                raise ValueError(f"{name} must have shape (N, {', '.join(map(str, spatial))}, {n_channels}) "
                                 f"(channels-last), got shape {tuple(a.shape)}")
            return
        if a.ndim != 2 + d:
            raise ValueError(f"{name} must have shape (N, C, *spatial) with {d} spatial dims, "
                             f"got shape {tuple(a.shape)}")
        if a.shape[1] != n_channels:
            raise ValueError(f"{name} has {a.shape[1]} channels, expected {n_channels}")
        if tuple(a.shape[2:]) != tuple(spatial):
            raise ValueError(f"{name} has spatial shape {tuple(a.shape[2:])}, expected {tuple(spatial)}")

    def _check_x(self, x, name="x"):
        g = self.geometry
        self._check(x, self.layout, g.n_in, g.in_shape, name)
        return x.astype(self.dtype, copy=False)

    def _check_y(self, y, name="y"):
        g = self.geometry
        self._check(y, self.code_layout, g.n_out, g.out_shape, name)
        return y.astype(self.dtype, copy=False)

    # ------------------------------------------------------------------- maps
    def forward(self, x):
        """``conv(x, w)``: (N, *in_shape) -> (N, *out_shape). An empty batch gives an empty result."""
        x = self._check_x(x)
        if x.shape[0] == 0:
            return self.xp.zeros((0, *self.out_shape), dtype=self.dtype)
        return self._engine.forward(x)

    def forward_maxpool(self, x):
        """``max_pool(forward(x), 2, 2)`` (2x2 windows, stride 2, floor) and the argmax indices, as
        :func:`sparsecoding.ops.max_pool` returns them for this code layout. Fused where the engine can
        (with channels-last codes: Winograd takes the pool in its output transform, the numba im2col
        per cache-sized chunk of its per-core forward; the pre-activation is never written), else the
        forward followed by the pool."""
        if self.geometry.d != 2:
            raise ValueError(f"forward_maxpool needs a 2-D convolution, got {self.geometry.d} spatial dims")
        x = self._check_x(x)
        if x.shape[0] == 0:  # the engines' maps need a sample; forward() answers an empty batch itself
            from .engines import select_pool_engine

            return select_pool_engine(self.xp).max_pool(self.forward(x), (2, 2), (2, 2),
                                                        self.code_layout == "channels_last")
        return self._engine.forward_maxpool(x)

    def adjoint(self, y):
        """``conv_transpose(y, w)`` onto the operator's input shape: (N, *out_shape) -> (N, *in_shape)."""
        y = self._check_y(y)
        if y.shape[0] == 0:
            return self.xp.zeros((0, *self.in_shape), dtype=self.dtype)
        return self._engine.adjoint(y)

    def weight_grad(self, x, y):
        """``dW[k, c, j] = sum_{n, o} y[n, k, o] x_pad[n, c, o*s + j]``, shape (K, C, *k).

        The derivative of ``<conv(x, w), y>`` with respect to ``w`` (the correlation of
        inputs with output-space maps). An empty batch gives zeros.
        """
        g = self.geometry
        x, y = self._check_x(x), self._check_y(y)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must have the same batch size, got {x.shape[0]} and {y.shape[0]}")
        if x.shape[0] == 0:
            return self.xp.zeros((g.n_out, g.n_in, *g.kernel), dtype=self.dtype)
        return self._engine.weight_grad(x, y)

    # ------------------------------------------------ fused residual analysis
    def residual_plan(self, s):
        """``s`` (N, *in_shape) prepared for repeated :meth:`forward_residual` calls (for the numba
        engine with channels-last codes: embedded once in the zero-padded buffer, so a later
        in-place change of ``s`` needs a new plan)."""
        s = self._check_x(s, "s")
        if s.shape[0] == 0:
            return {"s": s}
        return self._engine.residual_plan(s)

    def forward_residual(self, plan, a, residual=True):
        """``(forward(r), r)`` with ``r = s - adjoint(a)``: the LCA drive and the negative LASSO gradient.

        ``plan`` comes from :meth:`residual_plan`; ``a`` are codes (N, *out_shape). Without
        ``residual`` the second item is None (nothing written out). On the numba im2col engine
        with channels-last codes the two convolutions run fused per core and per cache-sized
        chunk of samples (:mod:`sparsecoding.ops.parallel`).
        """
        n = plan["s"].shape[0]
        check_real(a, "a")
        if tuple(a.shape) != (n, *self.out_shape):
            raise ValueError(f"a must have shape {(n, *self.out_shape)}, got {tuple(a.shape)}")
        if n == 0:
            return self.xp.zeros((0, *self.out_shape), dtype=self.dtype), (plan["s"] if residual else None)
        return self._engine.forward_residual(plan, a.astype(self.dtype, copy=False), True, residual)

    def residual(self, plan, a):
        """``r = s - adjoint(a)`` (N, *in_shape) alone (fused like :meth:`forward_residual`)."""
        n = plan["s"].shape[0]
        check_real(a, "a")
        if tuple(a.shape) != (n, *self.out_shape):
            raise ValueError(f"a must have shape {(n, *self.out_shape)}, got {tuple(a.shape)}")
        if n == 0:
            return plan["s"]
        return self._engine.forward_residual(plan, a.astype(self.dtype, copy=False), False, True)[1]

    # ------------------------------------------------------------------ misc
    def lipschitz(self, n_iter=2000, seed=0, tol=1e-5):
        """Largest eigenvalue of ``A A^T`` (power iteration on the code space, +1% margin).

        The iteration stops once the estimate grows by less than ``tol`` (relative) over 10
        iterations (at most ``n_iter``: close top eigenvalues converge slowly, and the estimate
        approaches from below, so a fixed short count could return less than ``L``).
        Always from the same seeded start vector (drawn channels-first, so the estimate does not
        depend on the layout), so it is a function of the weights alone and resumed training
        reproduces an uninterrupted run. Cached until :meth:`update_weights`.
        """
        if self._shared["L"] is None:
            g = self.geometry
            v0 = np.random.default_rng(seed).standard_normal((1, g.n_out, *g.out_shape))
            if self.code_layout == "channels_last":
                v0 = np.ascontiguousarray(np.moveaxis(v0, 1, -1))
            v0 = self.xp.asarray(v0, dtype=self.dtype)
            with self.frozen_weights():
                lam, _ = power_iteration(lambda v: self.forward(self.adjoint(v)), v0.shape, self.xp, self.dtype,
                                         n_iter, v0=v0, tol=tol)
            self._shared["L"] = 1.01 * lam
        return self._shared["L"]

    def flops(self):
        """Multiply-add flops of one forward (or adjoint) as a direct GEMM: ``2 M K C prod(k)`` per sample."""
        g = self.geometry
        return 2 * int(np.prod(g.out_shape)) * g.n_out * g.n_in * int(np.prod(g.kernel))


def _compute_dtypes(a, w, name):
    """``a`` and ``w`` in the computation dtype: ``w``'s when float32/float64, else float16, integer
    and bool operands promoted to float32 (float64 when the other operand is float64)."""
    for arr, label in ((a, name), (w, "w")):
        if not hasattr(arr, "dtype") or not hasattr(arr, "ndim"):
            raise TypeError(f"{label} must be an array, got {type(arr).__name__}")
        check_real(arr, label)
    if w.dtype.kind == "f" and w.dtype.itemsize in (4, 8):
        return a, w
    dtype = "float64" if "float64" in (str(a.dtype), str(w.dtype)) else "float32"
    return a.astype(dtype, copy=False), w.astype(dtype, copy=False)


def _check_operands(a, w, name, letter, n_channels, expected, check_finite):
    """Rank, channel count and (optionally) finiteness of ``a`` against the weights ``w``."""
    check_weights(w)
    if a.ndim != w.ndim:
        raise ValueError(
            f"{name} must have shape (N, {letter}, *spatial) with {w.ndim - 2} spatial dims to match w "
            f"{tuple(w.shape)}, got shape {tuple(a.shape)}"
        )
    if a.shape[1] != n_channels:
        raise ValueError(f"channel mismatch: {name} has {a.shape[1]} channels, {expected}")
    if check_finite:
        xp = get_xp(a, w)
        _check_finite(xp, a, name)
        _check_finite(xp, w, "w")


def conv(x, w, stride=1, padding=0, method="auto", check_finite=False):
    """N-d cross-correlation, ``torch.nn.functional.conv{1,2,3}d`` semantics.

    Parameters
    ----------
    x : array (N, C, *L)
    w : array (K, C, *k)
    stride : int or tuple
    padding : int, tuple, "same" (odd kernels) or "valid"
    method : {"auto", "im2col", "fft"}
    check_finite : bool
        Raise ``ValueError`` if ``x`` or ``w`` holds NaN/Inf.

    Returns
    -------
    y : array (N, K, *O), ``O = floor((L + 2p - k)/s) + 1``, in ``w``'s dtype when that is
        float32/float64, else float32 (float16 / integer operands are promoted; see the module
        notes). An empty batch (N = 0) gives an empty ``(0, K, *O)`` result.

    Raises
    ------
    TypeError for complex operands; ValueError for bad shapes, strides, paddings.
    """
    x, w = _compute_dtypes(x, w, "x")
    _check_operands(x, w, "x", "C", w.shape[1], f"w expects {w.shape[1]}", check_finite)
    return ConvOperator(w, x.shape[2:], stride, padding, method).forward(x)


def conv_transpose(y, w, stride=1, padding=0, output_padding=0, method="auto", check_finite=False):
    """Adjoint of :func:`conv`, ``torch.nn.functional.conv_transpose{1,2,3}d`` semantics.

    Parameters
    ----------
    y : array (N, K, *O)
    w : array (K, C, *k)
    stride, padding : as for :func:`conv`
    output_padding : int or tuple, each entry smaller than the stride
    method : {"auto", "im2col", "fft"}

    Returns
    -------
    x : array (N, C, *L), ``L = (O - 1)s - 2p + k + output_padding``; dtypes as for :func:`conv`.
        An empty batch (N = 0) gives an empty ``(0, C, *L)`` result.
    """
    y, w = _compute_dtypes(y, w, "y")
    _check_operands(y, w, "y", "K", w.shape[0], f"w has {w.shape[0]} filters", check_finite)
    d = w.ndim - 2
    stride_t = as_tuple(stride, d, "stride", 1)
    pad = resolve_padding(padding, w.shape[2:])
    opad = as_tuple(output_padding, d, "output_padding", 0)
    if any(op >= s for op, s in zip(opad, stride_t)):
        raise ValueError(f"output_padding {opad} must be smaller than the stride {stride_t}")
    in_shape = tuple(
        (o - 1) * s - 2 * p + k + op for o, s, p, k, op in zip(y.shape[2:], stride_t, pad, w.shape[2:], opad)
    )
    if any(v < 1 for v in in_shape):
        raise ValueError(f"conv_transpose output shape {in_shape} is empty: padding {pad} too large")
    return ConvOperator(w, in_shape, stride_t, pad, method).adjoint(y)
