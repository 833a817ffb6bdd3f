"""N-d cross-correlation and its adjoint, channels-first, PyTorch semantics.

``conv(x, w)`` is ``torch.nn.functional.conv{1,2,3}d(x, w, stride, padding)``
(no bias, dilation 1, groups 1) and ``conv_transpose(y, w)`` is
``conv_transpose{1,2,3}d(y, w, stride, padding, output_padding)``, i.e. the
exact adjoint of ``conv`` for an input of the matching size.

Shapes: ``x (N, C, *L)``, ``w (K, C, *k)``, ``y (N, K, *O)`` with
``O = floor((L + 2p - k) / s) + 1`` per spatial dimension.

Padding ``"same"`` means ``p = (k - 1) // 2`` for odd ``k`` at any stride (as
lca-pytorch uses it); with stride 1 this is PyTorch's ``"same"``.

Two engines:

* ``im2col``: strided window view, one copy into columns, one GEMM; the
  adjoint is one GEMM then ``prod(k)`` strided adds (col2im).
* ``fft``: the stride is folded into channels by space-to-depth (phase
  decomposition: ``C' = C prod(s)``, ``k' = ceil(k / s)``), which turns the
  problem into a stride-1 correlation on the output grid; real FFTs padded to
  fast lengths, the channel contraction is one batched complex matmul over
  frequencies.

:class:`ConvOperator` holds a plan (geometry, and the kernel spectrum for the
FFT engine) so that iterative solvers pay the kernel transform once.

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

import math
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import product

from ..backend import capabilities, get_xp

__all__ = ["conv", "conv_transpose", "ConvOperator", "conv_output_shape", "resolve_padding"]

METHODS = ("auto", "im2col", "fft")
LAYOUTS = ("channels_first", "channels_last")

# Channels-last im2col works through the batch in chunks whose columns take about
# this many bytes, so the gather writes and the GEMM reads them in cache: measured
# on the 2-core development machine (bench/eqprop layers, 1 MiB L2 per core, 32 MiB
# L3), a conv + adjoint pair ran at 0.55 of the GEMM rate unchunked and 0.73-0.85
# with 2-6 MB chunks; below 1 MB the small GEMMs lose more than the cache gains.
CHUNK_BYTES = 4 << 20


def _as_tuple(value, d, name, minimum):
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * d
    try:
        value = tuple(int(v) for v in value)
    except TypeError as exc:
        raise TypeError(f"{name} must be an int or a tuple of {d} ints, got {value!r}") from exc
    if len(value) != d:
        raise ValueError(f"{name} must have {d} entries for a {d}-d convolution, got {value!r}")
    if any(v < minimum for v in value):
        raise ValueError(f"{name} entries must be >= {minimum}, got {value!r}")
    return value


def resolve_padding(padding, kernel_size):
    """Turn ``padding`` (int, tuple, "same", "valid") into a tuple of ints."""
    d = len(kernel_size)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0,) * d
        if mode == "same":
            even = [k for k in kernel_size if k % 2 == 0]
            if even:
                raise ValueError(
                    f'padding="same" needs odd kernel sizes, got kernel size {tuple(kernel_size)}'
                )
            return tuple((k - 1) // 2 for k in kernel_size)
        raise ValueError(f'padding must be an int, a tuple, "same" or "valid", got {padding!r}')
    return _as_tuple(padding, d, "padding", 0)


def conv_output_shape(in_shape, kernel_size, stride=1, padding=0):
    """Spatial output shape of ``conv`` for spatial input shape ``in_shape``."""
    d = len(kernel_size)
    stride = _as_tuple(stride, d, "stride", 1)
    pad = resolve_padding(padding, kernel_size)
    out = tuple((L + 2 * p - k) // s + 1 for L, k, s, p in zip(in_shape, kernel_size, stride, pad))
    if any(o < 1 for o in out):
        raise ValueError(
            f"input of spatial shape {tuple(in_shape)} is smaller than the kernel "
            f"{tuple(kernel_size)} with padding {pad}: empty output"
        )
    return out


@dataclass(frozen=True)
class _Geometry:
    n_in: int  # C
    n_out: int  # K
    in_shape: tuple  # L
    kernel: tuple  # k
    stride: tuple  # s
    pad: tuple  # p
    out_shape: tuple  # O

    @property
    def d(self):
        return len(self.kernel)


def _check_real(a, name):
    """TypeError for complex or non-numeric arrays (a cast would drop the imaginary part)."""
    kind = a.dtype.kind
    if kind == "c":
        raise TypeError(
            f"{name} must be real, got complex dtype {a.dtype} (the imaginary part would be dropped; "
            f"pass {name}.real or abs({name}) explicitly)"
        )
    if kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")


def _check_weights(w):
    _check_real(w, "w")
    if w.dtype.kind != "f" or w.dtype.itemsize not in (4, 8):
        raise TypeError(
            f"w must be float32 or float64, got {w.dtype} (the convolution engines compute in those "
            f"dtypes; cast it first, e.g. w.astype(np.float32))"
        )
    if w.ndim < 3 or w.ndim > 5:
        raise ValueError(
            f"w must have shape (K, C, *kernel) with 1 to 3 spatial dims, got shape {tuple(w.shape)}"
        )


def _make_geometry(w, in_shape, stride, padding):
    _check_weights(w)
    d = w.ndim - 2
    kernel = tuple(int(k) for k in w.shape[2:])
    in_shape = tuple(int(v) for v in in_shape)
    if len(in_shape) != d:
        raise ValueError(f"input needs {d} spatial dims for weights of shape {tuple(w.shape)}, got {in_shape}")
    stride = _as_tuple(stride, d, "stride", 1)
    pad = resolve_padding(padding, kernel)
    out = conv_output_shape(in_shape, kernel, stride, pad)
    return _Geometry(int(w.shape[1]), int(w.shape[0]), in_shape, kernel, stride, pad, out)


def _embed_slices(g, buffer_len, channels_last=False):
    """Slices pairing the input region ``[0, L)`` with buffer ``[p, p + L)``, clipped."""
    buf, src = [], []
    for L, p, B in zip(g.in_shape, g.pad, buffer_len):
        hi = min(p + L, B)
        lo = min(p, hi)
        buf.append(slice(lo, hi))
        src.append(slice(0, hi - lo))
    if channels_last:
        return (slice(None), *buf, slice(None)), (slice(None), *src, slice(None))
    return (slice(None), slice(None), *buf), (slice(None), slice(None), *src)


def _check_finite(xp, a, name):
    if not bool(xp.isfinite(a).all()):
        raise ValueError(f"{name} contains NaN or Inf")


class ConvOperator:
    """The linear map ``x -> conv(x, w)`` for a fixed input shape, and its adjoint.

    Parameters
    ----------
    w : array (K, C, *k)
        Weights; 1 to 3 spatial dimensions.
    in_shape : tuple of int
        Spatial shape ``L`` of the inputs.
    stride, padding : as for :func:`conv`.
    method : {"auto", "im2col", "fft"}
        Engine; "auto" uses :func:`choose_method`'s cost model.
    layout : {"channels_first", "channels_last"}
        Layout of both ``x`` and ``y``: ``(N, C, *L)`` (PyTorch) or ``(N, *L, C)``.
        On the CPU im2col engine channels-last inputs gather contiguous runs of
        ``C`` values and the work is chunked over the batch to stay in cache
        (:data:`CHUNK_BYTES`); elsewhere the arrays are transposed around the
        channels-first code.

    Notes
    -----
    ``forward(x)`` maps ``(N, C, *L) -> (N, K, *O)``; ``adjoint(y)`` maps
    ``(N, K, *O) -> (N, C, *L)`` and satisfies ``<forward(x), y> = <x, adjoint(y)>``.
    Operands derived from the weight values (the FFT kernel spectrum, the
    channels-last GEMM operand) are recomputed per call, so in-place changes of
    ``w`` are always seen, and computed once inside :meth:`frozen_weights`.
    """

    def __init__(self, w, in_shape, stride=1, padding=0, method="auto", layout="channels_first"):
        self.xp = get_xp(w)
        self.geometry = _make_geometry(w, in_shape, stride, padding)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.layout = layout
        self._scratch = self._pad_buf = None  # reused channels-last work buffers
        if method == "auto":
            method = choose_method(self.geometry)
        self.method = method
        self.dtype = w.dtype
        self._frozen, self._derived = 0, None
        self.update_weights(w)

    # ------------------------------------------------------------------ setup
    def update_weights(self, w):
        """Use a new weight array of the same shape.

        Nothing derived from the weight *values* is kept between calls (the channels-last
        GEMM operand, the FFT kernel spectrum): it is recomputed from ``self.w`` at every
        ``forward`` / ``adjoint``, so in-place changes of ``w`` (optimiser steps) are always
        seen. Inside :meth:`frozen_weights` it is computed once and reused, which iterative
        solvers use for the length of one relaxation.
        """
        g = self.geometry
        if tuple(w.shape) != (g.n_out, g.n_in, *g.kernel):
            raise ValueError(f"w must keep shape {(g.n_out, g.n_in, *g.kernel)}, got {tuple(w.shape)}")
        self.w = w
        self._derived = None
        if self.method == "im2col":
            self._buffer = tuple((o - 1) * s + k for o, s, k in zip(g.out_shape, g.stride, g.kernel))
            if self.xp.__name__ == "numpy":
                from ._kernels import window_index  # noqa: PLC0415

                self._idx = window_index(self._buffer, g.kernel, g.stride, g.out_shape)
        else:
            self._setup_fft_geometry()

    @contextmanager
    def frozen_weights(self):
        """Promise that ``w`` does not change inside the block: derived operands are computed once.

        Re-entrant; the cache is dropped when the outermost block exits. Used by the
        relaxation loops (one weight transpose or kernel FFT per relaxation, not per step).
        """
        self._frozen += 1
        try:
            yield self
        finally:
            self._frozen -= 1
            if not self._frozen:
                self._derived = None

    def _weights_derived(self):
        """The operands derived from the current weight values (cached only while frozen)."""
        d = self._derived
        if d is None:
            xp, g, w = self.xp, self.geometry, self.w
            d = {}
            if self.method == "fft":
                d.update(self._kernel_spectrum(w))
            elif self.layout == "channels_last" and xp.__name__ == "numpy":
                # (K, *k, C) flattened: the column order of the channels-last gather
                d["w2cl"] = xp.ascontiguousarray(xp.moveaxis(w, 1, -1)).reshape(g.n_out, -1)
            if self._frozen:
                self._derived = d
        return d

    @property
    def _w2(self):
        # (K, C*prod(k)) for the channels-first GEMMs: a view of w, so it follows in-place changes
        return self.w.reshape(self.geometry.n_out, -1)

    @property
    def _w2cl(self):
        return self._weights_derived()["w2cl"]

    def _setup_fft_geometry(self):
        g = self.geometry
        caps = capabilities(self.xp)
        self._fft, self._fkw = caps.fft, caps.fft_kwargs
        self._kq = tuple(-(-k // s) for k, s in zip(g.kernel, g.stride))  # k' = ceil(k/s)
        self._q = tuple(o + k - 1 for o, k in zip(g.out_shape, self._kq))  # phases that matter
        self._buffer = tuple(q * s for q, s in zip(self._q, g.stride))
        self._nfft = tuple(self._fft.next_fast_len(q, real=True) for q in self._q)
        self._axes = tuple(range(2, 2 + g.d))
        self._fshape = (*self._nfft[:-1], self._nfft[-1] // 2 + 1)

    def _kernel_spectrum(self, w):
        xp, g, kq = self.xp, self.geometry, self._kq
        # kernel phases: (K, C', k'...), zero padded to k'*s
        wpad = xp.zeros((g.n_out, g.n_in, *(k * s for k, s in zip(kq, g.stride))), dtype=w.dtype)
        wpad[(slice(None), slice(None), *(slice(0, k) for k in g.kernel))] = w
        wph = self._space_to_depth(wpad, kq)
        W = self._fft.rfftn(wph, s=self._nfft, axes=self._axes, **self._fkw)
        nf = math.prod(self._fshape)
        cq = wph.shape[1]
        # frequency-major layouts for batched matmuls:
        # forward uses conj(W) as (F, C', K), adjoint uses W as (F, K, C')
        Wf = W.reshape(g.n_out, cq, nf).transpose(2, 0, 1)  # (F, K, C')
        return {"W_adj": xp.ascontiguousarray(Wf),
                "W_fwd": xp.ascontiguousarray(xp.conj(Wf).transpose(0, 2, 1))}  # (F, C', K)

    def _space_to_depth(self, a, q):
        """(N, C, *(q*s)) -> (N, C*prod(s), *q), channel index (c, r1, .., rd)."""
        g = self.geometry
        n, c = a.shape[:2]
        shape = [n, c]
        for qi, si in zip(q, g.stride):
            shape += [qi, si]
        a = a.reshape(shape)
        d = g.d
        perm = [0, 1] + [3 + 2 * i for i in range(d)] + [2 + 2 * i for i in range(d)]
        return a.transpose(perm).reshape(n, c * math.prod(g.stride), *q)

    def _depth_to_space(self, a, q):
        """Inverse of :meth:`_space_to_depth`."""
        g = self.geometry
        d = g.d
        n = a.shape[0]
        c = a.shape[1] // math.prod(g.stride)
        a = a.reshape(n, c, *g.stride, *q)
        perm = [0, 1]
        for i in range(d):
            perm += [2 + d + i, 2 + i]
        return a.transpose(perm).reshape(n, c, *(qi * si for qi, si in zip(q, g.stride)))

    # --------------------------------------------------------------- checking
    def _check_input(self, x, n_channels, spatial, name):
        _check_real(x, name)
        if x.ndim != 2 + self.geometry.d:
            raise ValueError(
                f"{name} must have shape (N, C, *spatial) with {self.geometry.d} spatial dims, "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[1] != n_channels:
            raise ValueError(f"{name} has {x.shape[1]} channels, expected {n_channels}")
        if tuple(x.shape[2:]) != tuple(spatial):
            raise ValueError(f"{name} has spatial shape {tuple(x.shape[2:])}, expected {tuple(spatial)}")

    def _check_input_cl(self, x, n_channels, spatial, name):
        _check_real(x, name)
        if tuple(x.shape[1:]) != (*spatial, n_channels) or x.ndim != 2 + self.geometry.d:
            raise ValueError(
                f"{name} must have shape (N, {', '.join(map(str, spatial))}, {n_channels}) (channels-last), "
                f"got shape {tuple(x.shape)}"
            )

    def _chunks(self, n, per_sample):
        """Sample ranges whose columns (``per_sample`` values each) take about CHUNK_BYTES, and a
        scratch buffer for them reused across calls."""
        nb = max(min(n, 2), min(n, CHUNK_BYTES // max(per_sample * self.dtype.itemsize, 1)))
        size = nb * per_sample
        if self._scratch is None or self._scratch.size < size:
            self._scratch = self.xp.empty(size, dtype=self.dtype)
        return [(a, min(n, a + nb)) for a in range(0, n, nb)], self._scratch

    # ---------------------------------------------------------------- forward
    def forward(self, x, channels_last=False):
        """``conv(x, w)``: (N, C, *L) -> (N, K, *O), or (N, *O, K) with ``channels_last``.

        Iterative solvers keep codes channels-last on the CPU im2col engine,
        where the GEMM produces that layout and the transpose is saved. With
        ``layout="channels_last"`` both sides are channels-last whatever the flag.
        An empty batch gives an empty result.
        """
        g = self.geometry
        xp = self.xp
        if self.layout == "channels_last":
            self._check_input_cl(x, g.n_in, g.in_shape, "x")
        else:
            self._check_input(x, g.n_in, g.in_shape, "x")
        if x.shape[0] == 0:
            cl = channels_last or self.layout == "channels_last"
            return xp.zeros((0, *g.out_shape, g.n_out) if cl else (0, g.n_out, *g.out_shape), dtype=self.dtype)
        if self.layout == "channels_last":
            x = x.astype(self.dtype, copy=False)
            if self.method == "im2col" and xp.__name__ == "numpy":
                return self._forward_cl_cpu(x)
            x, channels_last = xp.moveaxis(x, -1, 1), True
        else:
            x = x.astype(self.dtype, copy=False)
        buf = xp.zeros((x.shape[0], g.n_in, *self._buffer), dtype=self.dtype)
        bsl, xsl = _embed_slices(g, self._buffer)
        buf[bsl] = x[xsl]
        if self.method == "im2col" and self.xp.__name__ == "numpy":
            return self._forward_im2col_cpu(buf, channels_last)
        y = self._forward_im2col(buf) if self.method == "im2col" else self._forward_fft(buf)
        return self.xp.ascontiguousarray(self.xp.moveaxis(y, 1, -1)) if channels_last else y

    # ------------------------------------------------ fused residual analysis
    def _fused_residual(self, channels_last):
        return (channels_last and self.layout == "channels_first" and self.method == "im2col"
                and self.xp.__name__ == "numpy")

    def residual_plan(self, s, channels_last=True):
        """``s`` (N, C, *L) prepared for repeated :meth:`forward_residual` calls (on the CPU path,
        embedded once in the zero-padded buffer, with the mask of the unpadded region)."""
        g = self.geometry
        self._check_input(s, g.n_in, g.in_shape, "s")
        s = s.astype(self.dtype, copy=False)
        if not self._fused_residual(channels_last) or s.shape[0] == 0:
            return {"s": s}
        n = s.shape[0]
        buf = self.xp.zeros((n, g.n_in, *self._buffer), dtype=self.dtype)
        bsl, xsl = _embed_slices(g, self._buffer)
        buf[bsl] = s[xsl]
        mask = self.xp.zeros(self._buffer, dtype=self.dtype)
        mask[bsl[2:]] = 1
        return {"s": s, "s_buf": buf.reshape(n, g.n_in, -1), "mask": mask.reshape(-1)}

    def residual(self, plan, a, resid, channels_last=True):
        """Write ``s - adjoint(a)`` into ``resid`` (N, C, *L) (fused per core like :meth:`forward_residual`)."""
        return self.forward_residual(plan, a, channels_last, resid, analysis=False)

    def forward_residual(self, plan, a, channels_last=True, resid=None, analysis=True):
        """``forward(s - adjoint(a))``, the LCA drive and the negative LASSO gradient.

        ``plan`` comes from :meth:`residual_plan`; ``a`` are codes (N, *O, K) with
        ``channels_last`` (else (N, K, *O)). With ``resid`` (N, C, *L) the residual
        ``s - adjoint(a)`` is also written there. On the CPU im2col engine with
        channels-last codes the two convolutions run fused per core and per
        cache-sized chunk of samples (:mod:`sparsecoding.ops.parallel`), so the
        columns never leave the core's cache.
        """
        xp = self.xp
        if "s_buf" not in plan:
            r = plan["s"] - self.adjoint(a, channels_last=channels_last)
            if resid is not None:
                resid[...] = r
            return self.forward(r, channels_last=channels_last) if analysis else None
        from ._kernels import gather_columns_1t, scatter_residual_1t  # noqa: PLC0415
        from .parallel import L2_CHUNK_BYTES, run_split  # noqa: PLC0415

        g = self.geometry
        n, c = plan["s"].shape[0], g.n_in
        _check_real(a, "a")
        if tuple(a.shape) != (n, *g.out_shape, g.n_out):
            raise ValueError(f"a must have shape {(n, *g.out_shape, g.n_out)}, got {tuple(a.shape)}")
        m, nj = self._idx.shape
        af = xp.ascontiguousarray(a, dtype=self.dtype).reshape(n * m, g.n_out)
        out = xp.empty((n * m, g.n_out), dtype=self.dtype)
        s_buf, mask, w2 = plan["s_buf"], plan["mask"], self._w2
        nb = max(1, L2_CHUNK_BYTES // (m * c * nj * self.dtype.itemsize))
        bsl, xsl = _embed_slices(g, self._buffer)
        if resid is not None and tuple(sl.stop - sl.start for sl in xsl[2:]) != tuple(g.in_shape):
            resid[...] = plan["s"]  # inputs no window reaches: nothing reconstructs them

        def work(lo, hi):
            cols = xp.empty((min(nb, hi - lo), m, c, nj), dtype=self.dtype)
            rb = xp.empty((cols.shape[0], c, s_buf.shape[2]), dtype=self.dtype)
            for i in range(lo, hi, nb):
                j = min(hi, i + nb)
                cv, rv = cols[:j - i], rb[:j - i]
                xp.matmul(af[i * m:j * m], w2, out=cv.reshape((j - i) * m, -1))  # Phi^T a, as columns
                scatter_residual_1t(cv, self._idx, s_buf[i:j], mask, rv)  # r = s - col2im(columns)
                if resid is not None:
                    resid[i:j][xsl] = rv.reshape(j - i, c, *self._buffer)[bsl]
                if not analysis:
                    continue
                gather_columns_1t(rv, self._idx, cv)  # im2col(r)
                xp.matmul(cv.reshape((j - i) * m, -1), w2.T, out=out[i * m:j * m])  # Phi r

        run_split(work, n)
        return out.reshape(n, *g.out_shape, g.n_out) if analysis else None

    def _forward_im2col(self, buf):
        g, xp = self.geometry, self.xp
        n = buf.shape[0]
        swv = capabilities(xp).sliding_window_view
        axes = tuple(range(2, 2 + g.d))
        win = swv(buf, g.kernel, axis=axes)  # (N, C, *(B-k+1), *k)
        win = win[(slice(None), slice(None), *(slice(None, None, s) for s in g.stride))]
        # columns (N, C, *k, *O) -> (N, C*prod(k), prod(O)): the one im2col copy
        d = g.d
        perm = [0, 1] + list(range(2 + d, 2 + 2 * d)) + list(range(2, 2 + d))
        cols = xp.ascontiguousarray(win.transpose(perm)).reshape(n, -1, math.prod(g.out_shape))
        out = xp.matmul(self._w2, cols)  # (N, K, prod(O))
        return out.reshape(n, g.n_out, *g.out_shape)

    def _forward_fft(self, buf):
        g, xp = self.geometry, self.xp
        n = buf.shape[0]
        xph = self._space_to_depth(buf, self._q)  # (N, C', *q)
        X = self._fft.rfftn(xph, s=self._nfft, axes=self._axes, **self._fkw)
        nf = math.prod(self._fshape)
        Xf = X.reshape(n, X.shape[1], nf).transpose(2, 0, 1)  # (F, N, C')
        Y = xp.matmul(Xf, self._weights_derived()["W_fwd"])  # (F, N, K)
        Y = Y.transpose(1, 2, 0).reshape(n, g.n_out, *self._fshape)
        y = self._fft.irfftn(Y, s=self._nfft, axes=self._axes, **self._fkw)
        y = y[(slice(None), slice(None), *(slice(0, o) for o in g.out_shape))]
        return xp.ascontiguousarray(y)

    # ---------------------------------------------------------------- adjoint
    def adjoint(self, y, channels_last=False):
        """``conv_transpose(y, w)`` onto the operator's input shape: (N, K, *O) -> (N, C, *L).

        With ``channels_last`` the input is (N, *O, K). An empty batch gives an empty result.
        """
        g = self.geometry
        if self.layout == "channels_last":
            self._check_input_cl(y, g.n_out, g.out_shape, "y")
            if y.shape[0] == 0:
                return self.xp.zeros((0, *g.in_shape, g.n_in), dtype=self.dtype)
            y = y.astype(self.dtype, copy=False)
            if self.method == "im2col" and self.xp.__name__ == "numpy":
                return self._adjoint_cl_cpu(y)
            x = self._adjoint_channels_first(y, channels_last=True)
            return self.xp.ascontiguousarray(self.xp.moveaxis(x, 1, -1))
        return self._adjoint_channels_first(y, channels_last)

    def _adjoint_channels_first(self, y, channels_last=False):
        """:meth:`adjoint` with a channels-first result whatever the layout (``y`` channels-last if asked)."""
        g = self.geometry
        if channels_last:
            _check_real(y, "y")
            if tuple(y.shape[1:]) != (*g.out_shape, g.n_out) or y.ndim != 2 + g.d:
                raise ValueError(f"y must have shape (N, *{g.out_shape}, {g.n_out}), got {tuple(y.shape)}")
        else:
            self._check_input(y, g.n_out, g.out_shape, "y")
        if y.shape[0] == 0:
            return self.xp.zeros((0, g.n_in, *g.in_shape), dtype=self.dtype)
        y = y.astype(self.dtype, copy=False)
        if self.method == "im2col" and self.xp.__name__ == "numpy":
            buf = self._adjoint_im2col_cpu(y, channels_last)
        else:
            if channels_last:
                y = self.xp.moveaxis(y, -1, 1)
            buf = self._adjoint_im2col(y) if self.method == "im2col" else self._adjoint_fft(y)
        out = self.xp.zeros((y.shape[0], g.n_in, *g.in_shape), dtype=self.dtype)
        bsl, xsl = _embed_slices(g, self._buffer)
        out[xsl] = buf[bsl]
        return out

    def _forward_cl_cpu(self, x):
        # channels-last: embed in the zero-padded buffer (N, *B, C), then per chunk of samples a
        # contiguous-run gather into columns (b, M, J, C) and one (b*M, J*C) x (J*C, K) GEMM
        from ._kernels import gather_columns_cl  # noqa: PLC0415

        g, np_ = self.geometry, self.xp
        n, c = x.shape[0], g.n_in
        m, nj = self._idx.shape
        buf = self._padded_input(x)
        out = np_.empty((n * m, g.n_out), dtype=self.dtype)
        chunks, scratch = self._chunks(n, m * nj * c)
        for a, b in chunks:
            cols = scratch[:(b - a) * m * nj * c].reshape(b - a, m, nj, c)
            gather_columns_cl(buf[a:b], self._idx, cols)
            np_.matmul(cols.reshape((b - a) * m, -1), self._w2cl.T, out=out[a * m:b * m])
        return out.reshape(n, *g.out_shape, g.n_out)

    def _padded_input(self, x):
        """x (N, *L, C) in the zero-padded buffer, flattened to (N, P, C). The buffer is kept between
        calls: only its interior is written, so the padding stays zero without clearing it."""
        g = self.geometry
        n, c = x.shape[0], g.n_in
        shape = (n, *self._buffer, c)
        if self._pad_buf is None or self._pad_buf.shape != shape:
            self._pad_buf = self.xp.zeros(shape, dtype=self.dtype)
        bsl, xsl = _embed_slices(g, self._buffer, channels_last=True)
        self._pad_buf[bsl] = x[xsl]
        return self._pad_buf.reshape(n, -1, c)

    def _adjoint_cl_cpu(self, y):
        # per chunk: one (b*M, K) x (K, J*C) GEMM into columns, contiguous-run scatter-add (col2im)
        from ._kernels import scatter_add_columns_cl  # noqa: PLC0415

        g, np_ = self.geometry, self.xp
        n, c = y.shape[0], g.n_in
        m, nj = self._idx.shape
        yf = np_.ascontiguousarray(y).reshape(n * m, g.n_out)
        buf = np_.zeros((n, math.prod(self._buffer), c), dtype=self.dtype)
        chunks, scratch = self._chunks(n, m * nj * c)
        for a, b in chunks:
            cols = scratch[:(b - a) * m * nj * c]
            np_.matmul(yf[a * m:b * m], self._w2cl, out=cols.reshape((b - a) * m, nj * c))
            scatter_add_columns_cl(cols.reshape(b - a, m, nj, c), self._idx, buf[a:b])
        bsl, xsl = _embed_slices(g, self._buffer, channels_last=True)
        inner = buf.reshape(n, *self._buffer, c)[bsl]
        if tuple(inner.shape[1:-1]) == tuple(g.in_shape):
            return inner  # the buffer covers the whole input: a view, no copy
        out = np_.zeros((n, *g.in_shape, c), dtype=self.dtype)
        out[xsl] = inner
        return out

    def _forward_im2col_cpu(self, buf, channels_last=False):
        # numba gather into (N, M, C, J), one (N*M, CJ) x (CJ, K) GEMM, swap to (N, K, M)
        from ._kernels import gather_columns, swap_last_two  # noqa: PLC0415

        g, np_ = self.geometry, self.xp
        n = buf.shape[0]
        m, nj = self._idx.shape
        cols = np_.empty((n, m, g.n_in, nj), dtype=self.dtype)
        gather_columns(buf.reshape(n, g.n_in, -1), self._idx, cols)
        out = cols.reshape(n * m, -1) @ self._w2.T  # (N*M, K)
        if channels_last:
            return out.reshape(n, *g.out_shape, g.n_out)
        res = np_.empty((n, g.n_out, m), dtype=self.dtype)
        swap_last_two(out.reshape(n, m, g.n_out), res)
        return res.reshape(n, g.n_out, *g.out_shape)

    def _adjoint_im2col_cpu(self, y, channels_last=False):
        from ._kernels import scatter_add_columns, swap_last_two  # noqa: PLC0415

        g, np_ = self.geometry, self.xp
        n = y.shape[0]
        m, nj = self._idx.shape
        if channels_last:
            yt = np_.ascontiguousarray(y).reshape(n, m, g.n_out)
        else:
            yt = np_.empty((n, m, g.n_out), dtype=self.dtype)
            swap_last_two(np_.ascontiguousarray(y).reshape(n, g.n_out, m), yt)
        cols = yt.reshape(n * m, g.n_out) @ self._w2  # (N*M, C*J)
        buf = np_.zeros((n, g.n_in, *self._buffer), dtype=self.dtype)
        scatter_add_columns(cols.reshape(n, m, g.n_in, nj), self._idx, buf.reshape(n, g.n_in, -1))
        return buf

    def _adjoint_im2col(self, y):
        g, xp = self.geometry, self.xp
        n = y.shape[0]
        cols = xp.matmul(self._w2.T, y.reshape(n, g.n_out, -1))  # (N, C*prod(k), prod(O))
        buf = xp.zeros((n, g.n_in, *self._buffer), dtype=self.dtype)
        cols = cols.reshape(n, g.n_in, *g.kernel, *g.out_shape)
        # col2im: one strided add per kernel offset
        for off in product(*(range(k) for k in g.kernel)):
            dst = tuple(slice(j, j + (o - 1) * s + 1, s) for j, o, s in zip(off, g.out_shape, g.stride))
            buf[(slice(None), slice(None), *dst)] += cols[(slice(None), slice(None), *off)]
        return buf

    def _adjoint_fft(self, y):
        g, xp = self.geometry, self.xp
        n = y.shape[0]
        Y = self._fft.rfftn(y, s=self._nfft, axes=self._axes, **self._fkw)
        nf = math.prod(self._fshape)
        Yf = Y.reshape(n, g.n_out, nf).transpose(2, 0, 1)  # (F, N, K)
        X = xp.matmul(Yf, self._weights_derived()["W_adj"])  # (F, N, C')
        X = X.transpose(1, 2, 0).reshape(n, X.shape[2], *self._fshape)
        xph = self._fft.irfftn(X, s=self._nfft, axes=self._axes, **self._fkw)
        xph = xph[(slice(None), slice(None), *(slice(0, q) for q in self._q))]
        return self._depth_to_space(xph, self._q)

    # ------------------------------------------------------- weight gradient
    def weight_grad(self, x, y):
        """``dW[k, c, j] = sum_{n, o} y[n, k, o] x_pad[n, c, o*s + j]``, shape (K, C, *k).

        The derivative of ``<conv(x, w), y>`` with respect to ``w`` (the
        correlation of inputs with output-space maps); computed with the
        im2col columns of ``x`` and one GEMM whatever the engine. An empty batch gives zeros.
        """
        g, xp = self.geometry, self.xp
        check = self._check_input_cl if self.layout == "channels_last" else self._check_input
        check(x, g.n_in, g.in_shape, "x")
        check(y, g.n_out, g.out_shape, "y")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must have the same batch size, got {x.shape[0]} and {y.shape[0]}")
        if x.shape[0] == 0:
            return xp.zeros((g.n_out, g.n_in, *g.kernel), dtype=self.dtype)
        if self.layout == "channels_last":
            if self.method == "im2col" and xp.__name__ == "numpy":
                return self._weight_grad_cl_cpu(x, y)
            x, y = xp.moveaxis(x, -1, 1), xp.moveaxis(y, -1, 1)
        n = x.shape[0]
        buffer = tuple((o - 1) * s + k for o, s, k in zip(g.out_shape, g.stride, g.kernel))
        buf = xp.zeros((n, g.n_in, *buffer), dtype=self.dtype)
        bsl, xsl = _embed_slices(g, buffer)
        buf[bsl] = x.astype(self.dtype, copy=False)[xsl]
        m = math.prod(g.out_shape)
        if xp.__name__ == "numpy":
            from ._kernels import gather_columns, swap_last_two, window_index  # noqa: PLC0415

            idx = self._idx if self.method == "im2col" else window_index(buffer, g.kernel, g.stride, g.out_shape)
            cols = xp.empty((n, m, g.n_in, idx.shape[1]), dtype=self.dtype)
            gather_columns(buf.reshape(n, g.n_in, -1), idx, cols)
            yt = xp.empty((n, m, g.n_out), dtype=self.dtype)
            swap_last_two(xp.ascontiguousarray(y, dtype=self.dtype).reshape(n, g.n_out, m), yt)
            dw = yt.reshape(n * m, g.n_out).T @ cols.reshape(n * m, -1)
            return dw.reshape(g.n_out, g.n_in, *g.kernel)
        swv = capabilities(xp).sliding_window_view
        win = swv(buf, g.kernel, axis=tuple(range(2, 2 + g.d)))
        win = win[(slice(None), slice(None), *(slice(None, None, s) for s in g.stride))]
        # (N, C, *O, *k) contracted with (N, K, *O) over N and O
        d = g.d
        cols = win.reshape(n, g.n_in, m, math.prod(g.kernel))
        dw = xp.einsum("nkm,ncmj->kcj", y.reshape(n, g.n_out, m).astype(self.dtype, copy=False), cols)
        return dw.reshape(g.n_out, g.n_in, *g.kernel) if d else dw

    def _weight_grad_cl_cpu(self, x, y):
        # dW (K, J*C) = sum over chunks of y_chunk^T (K, b*M) x columns (b*M, J*C)
        from ._kernels import gather_columns_cl  # noqa: PLC0415

        g, np_ = self.geometry, self.xp
        n, c = x.shape[0], g.n_in
        m, nj = self._idx.shape
        buf = self._padded_input(x.astype(self.dtype, copy=False))
        yf = np_.ascontiguousarray(y, dtype=self.dtype).reshape(n * m, g.n_out)
        dw = np_.zeros((g.n_out, nj * c), dtype=self.dtype)
        chunks, scratch = self._chunks(n, m * nj * c)
        for a, b in chunks:
            cols = scratch[:(b - a) * m * nj * c].reshape(b - a, m, nj, c)
            gather_columns_cl(buf[a:b], self._idx, cols)
            dw += yf[a * m:b * m].T @ cols.reshape((b - a) * m, -1)
        return np_.ascontiguousarray(np_.moveaxis(dw.reshape(g.n_out, *g.kernel, c), -1, 1))

    # ------------------------------------------------------------------ misc
    def flops(self):
        """Multiply-add flops of one forward (or adjoint) as a direct GEMM: ``2 N M K C prod(k)`` per sample."""
        g = self.geometry
        return 2 * math.prod(g.out_shape) * g.n_out * g.n_in * math.prod(g.kernel)


def choose_method(g) -> str:
    """Cost model: estimated time of each engine in GEMM-flop equivalents.

    im2col does ``2 M K C prod(k)`` flops of GEMM plus one copy of the
    columns; FFT does real transforms of the K output maps and C' input
    maps (``~2.5 n log2 n`` flops each, running at about a quarter of the
    GEMM rate on CPU) and a ``C' x K`` complex product per frequency (about
    half the GEMM rate, with its small matrices). The constants come from
    ``bench/conv.py`` on the 2-core development machine, where the FFT's
    transforms and layout transposes ran at about 1/8 of the GEMM rate and its
    small per-frequency complex products at about 1/16: for C=3, K=64 on
    32x32 inputs the crossover is at about k=11 for stride 1, im2col wins at
    stride 2 up to k=11, and with C >= 32 channels im2col wins throughout.
    """
    m = math.prod(g.out_shape)
    im2col = 2.0 * m * g.n_out * g.n_in * math.prod(g.kernel) + 4.0 * m * g.n_in * math.prod(g.kernel)
    kq = [-(-k // s) for k, s in zip(g.kernel, g.stride)]
    q = [o + k - 1 for o, k in zip(g.out_shape, kq)]
    nfft = math.prod(q)
    cq = g.n_in * math.prod(g.stride)
    nfreq = nfft / 2 + 1
    fft = 8.0 * 2.5 * nfft * math.log2(max(nfft, 2)) * (g.n_out + cq) + 16.0 * 8.0 * nfreq * g.n_out * cq
    return "fft" if fft < im2col else "im2col"


def _compute_dtypes(a, w, name):
    """``a`` and ``w`` in the computation dtype: ``w``'s when float32/float64, else float16, integer
    and bool operands promoted to float32 (float64 when the other operand is float64)."""
    for arr, label in ((a, name), (w, "w")):
        if not hasattr(arr, "dtype") or not hasattr(arr, "ndim"):
            raise TypeError(f"{label} must be an array, got {type(arr).__name__}")
        _check_real(arr, label)
    if w.dtype.kind == "f" and w.dtype.itemsize in (4, 8):
        return a, w
    dtype = "float64" if "float64" in (str(a.dtype), str(w.dtype)) else "float32"
    return a.astype(dtype, copy=False), w.astype(dtype, copy=False)


def _check_operands(a, w, name, letter, n_channels, expected, check_finite):
    """Rank, channel count and (optionally) finiteness of ``a`` against the weights ``w``."""
    _check_weights(w)
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
    stride_t = _as_tuple(stride, d, "stride", 1)
    pad = resolve_padding(padding, w.shape[2:])
    opad = _as_tuple(output_padding, d, "output_padding", 0)
    if any(op >= s for op, s in zip(opad, stride_t)):
        raise ValueError(f"output_padding {opad} must be smaller than the stride {stride_t}")
    in_shape = tuple(
        (o - 1) * s - 2 * p + k + op for o, s, p, k, op in zip(y.shape[2:], stride_t, pad, w.shape[2:], opad)
    )
    if any(v < 1 for v in in_shape):
        raise ValueError(f"conv_transpose output shape {in_shape} is empty: padding {pad} too large")
    return ConvOperator(w, in_shape, stride_t, pad, method).adjoint(y)
