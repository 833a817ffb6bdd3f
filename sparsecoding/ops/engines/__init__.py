"""Compute engines of the convolution and pool operators, and the one place that picks them.

Engines (one small class each):

* :class:`~.im2col_numba.Im2colNumba` -- numba gather/scatter kernels around large GEMMs
  (CPU; channels-first and channels-last layouts, the fused per-core residual);
* :class:`~.im2col_xp.Im2colGeneric` -- window views, one GEMM, strided col2im on any
  array namespace (the path cupy takes);
* :class:`~.fft.FFTEngine` -- space-to-depth, real FFTs, batched complex matmuls;
* :class:`~.winograd.WinogradNumba` -- Winograd F(2x2, 3x3) / F(4x4, 3x3) / F(2x2, 5x5) for 3x3 and
  5x5 stride-1 2-D layers (CPU, channels-last, the 2x2 max pool fusable with the forward; the adjoint
  by Winograd or by im2col, "winograd<m>+im2col");
* :class:`~.pool_numba.PoolNumba` / :class:`~.pool_xp.PoolGeneric` -- the pools.

Selection (:func:`select_conv_engine`, :func:`select_pool_engine`) reads the array
namespace's capability table (:func:`sparsecoding.backend.capabilities`): its
``engines`` field is ``"native"`` (numba) on numpy and ``"generic"`` on cupy, or on
numpy under ``SPARSECODING_ENGINES=generic`` / ``backend.use_engines("generic")``,
which is how the tests run the GPU code path on the CPU. The method (im2col or FFT)
comes from the caller or the cost model :func:`choose_method`; for 3x3 stride-1 2-D
layers in the channels-last layout on the CPU (the EqProp networks' convolutions) the
engine (im2col, Winograd F(2x2) or F(4x4), either with the im2col adjoint) and the chunk size are measured on
first use on the machine and cached (:mod:`sparsecoding.ops.autotune`). Operators call
these once, when they are built; nothing else in the library tests the array module.
"""
from __future__ import annotations

import math

import numpy as np

from ...backend import capabilities
from .. import autotune
from .base import ConvEngine
from .fft import FFTEngine
from .im2col_numba import Im2colNumba
from .im2col_xp import Im2colGeneric
from .pool_numba import PoolNumba
from .pool_xp import PoolGeneric, pool_output_shape
from .winograd import TILES as WINOGRAD_TILES
from .winograd import WinogradNumba, winograd_applies

__all__ = ["select_conv_engine", "select_pool_engine", "choose_method", "ConvEngine", "Im2colNumba",
           "Im2colGeneric", "FFTEngine", "WinogradNumba", "PoolNumba", "PoolGeneric", "pool_output_shape",
           "METHODS", "CONV3X3_ENGINES"]

METHODS = ("auto", "im2col", "fft", "winograd")

# The engines the 3x3 / 5x5 stride-1 choice is made among ("SPARSECODING_CONV_ENGINE" forces one), and the
# Winograd chunk sizes tried (bytes of transformed tiles and products per core chunk: L2-sized and
# up; which one wins depends on the cache sizes and the BLAS's small-GEMM efficiency).
CONV3X3_ENGINES = ("im2col", "winograd2", "winograd4", "winograd2+im2col", "winograd4+im2col")
WINOGRAD_CHUNKS = (1 << 18, 1 << 20, 1 << 22, 1 << 24)
# Channels-last im2col split per core (each worker its own samples, single-threaded BLAS): column bytes per
# chunk tried (the whole-batch threaded form is not a candidate: see Im2colNumba.__init__)
SPLIT_CL_CHUNKS = (1 << 18, 1 << 20, 1 << 22)
# Below this many multiply-adds per sample and map the engines' fixed costs dominate and the
# measurement would cost more than it can save: im2col without measuring.
TUNE_MIN_MACS = 1 << 22
# Channels-first im2col (the public layout): one whole-batch gather and a multi-threaded GEMM, or the
# per-core split with these column chunk sizes; measured from this many multiply-adds per sample.
SPLIT_CHUNKS = (1 << 18, 1 << 19, 1 << 20, 1 << 21)
TUNE_MIN_MACS_CF = 1 << 21


def choose_method(g) -> str:
    """Cost model: estimated time of each engine in GEMM-flop equivalents.

    im2col does ``2 M K C prod(k)`` flops of GEMM plus one copy of the
    columns; FFT does real transforms of the K output maps and C' input
    maps (``~2.5 n log2 n`` flops each) and a ``C' x K`` complex product per
    frequency. The constants come from ``bench/conv.py`` on the 2-core development
    machine, where the FFT's transforms and layout transposes ran at about 1/8 of the
    GEMM rate and its small per-frequency complex products at about 1/16: for C=3,
    K=64 on 32x32 inputs the crossover is at about k=11 for stride 1, im2col wins at
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


def select_conv_engine(g, xp, dtype, method="auto", x_layout="channels_first", y_layout="channels_first"):
    """The engine for geometry ``g`` on namespace ``xp`` (its capability table decides the family)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    caps = capabilities(xp)
    if method == "winograd":
        if not (caps.numba and winograd_applies(g)):
            raise ValueError("method='winograd' needs the numba engines and a 2-D 3x3 or 5x5 stride-1 convolution "
                             f"with padding below the kernel size, got kernel {g.kernel}, stride {g.stride}, "
                             f"padding {g.pad}")
        tiles = WINOGRAD_TILES[g.kernel[0]]
        return _conv3x3(g, xp, dtype, x_layout, y_layout, caps,
                        tuple(f"winograd{m}" for m in tiles) + tuple(f"winograd{m}+im2col" for m in tiles))
    if method == "auto":
        if (caps.numba and winograd_applies(g) and x_layout == y_layout == "channels_last"
                and np.dtype(dtype) in (np.float32, np.float64)):
            tiles = WINOGRAD_TILES[g.kernel[0]]
            return _conv3x3(g, xp, dtype, x_layout, y_layout, caps, ("im2col",) + tuple(f"winograd{m}" for m in tiles)
                            + tuple(f"winograd{m}+im2col" for m in tiles))
        method = choose_method(g)
    if caps.numba and x_layout == y_layout == "channels_first" and np.dtype(dtype) in (np.float32, np.float64):
        engine = _im2col_cf(g, xp, dtype, caps)
    else:
        engine = (Im2colNumba if caps.numba else Im2colGeneric)(g, xp, dtype, x_layout, y_layout, caps)
    if method == "fft":
        engine = FFTEngine(g, xp, dtype, x_layout, y_layout, caps, grad_engine=engine)
    return engine


def select_pool_engine(xp):
    """The pool engine for namespace ``xp``."""
    caps = capabilities(xp)
    return (PoolNumba if caps.numba else PoolGeneric)(xp, caps)


def _build3x3(name, g, xp, dtype, x_layout, y_layout, caps, chunk=None):
    """"im2col", "winograd<m>" or "winograd<m>+im2col" (the Winograd forward with the im2col adjoint)."""
    if name == "im2col":
        return Im2colNumba(g, xp, dtype, x_layout, y_layout, caps, chunk_bytes=chunk)
    return WinogradNumba(g, xp, dtype, x_layout, y_layout, caps, m=int(name[len("winograd")]), chunk_bytes=chunk,
                         adjoint_im2col=name.endswith("+im2col"))


def _conv3x3(g, xp, dtype, x_layout, y_layout, caps, engines):
    """The engine for a 3x3 / 5x5 stride-1 layer: forced by ``SPARSECODING_CONV_ENGINE`` (where that engine
    applies), else the fastest of ``engines`` (and Winograd chunk sizes) measured on this machine, cached
    per machine and geometry."""
    dtype = np.dtype(dtype)
    force = autotune.forced("SPARSECODING_CONV_ENGINE", CONV3X3_ENGINES)
    if force is not None and (force in engines or force == "im2col"):
        return _build3x3(force, g, xp, dtype, x_layout, y_layout, caps)
    macs = math.prod(g.out_shape) * g.n_out * g.n_in * math.prod(g.kernel)
    default = engines[0]
    if macs < TUNE_MIN_MACS:
        return _build3x3(default, g, xp, dtype, x_layout, y_layout, caps)
    names = {}
    for e in engines:
        if e == "im2col":
            for chunk in SPLIT_CL_CHUNKS:
                names[f"im2col@{chunk >> 10}K"] = (e, chunk)
        else:
            for chunk in WINOGRAD_CHUNKS:
                names[f"{e}@{chunk >> 10}K"] = (e, chunk)
    key = (f"conv{g.kernel[0]}x{g.kernel[1]} C{g.n_in} K{g.n_out} {'x'.join(map(str, g.in_shape))} "
           f"pad {'x'.join(map(str, g.pad))} out {'x'.join(map(str, g.out_shape))} {dtype.name} {x_layout}/{y_layout}")

    def candidates():
        # a batch of about 1 GMAC per map (8 to 64 samples): enough samples per worker that the larger
        # chunk sizes are told apart as they would be on a training batch
        n = int(min(64, max(8, (1 << 30) // macs)))
        r = np.random.default_rng(0)
        w = xp.asarray(r.standard_normal((g.n_out, g.n_in, *g.kernel)) / math.sqrt(g.n_in * math.prod(g.kernel)),
                       dtype=dtype)
        x = xp.asarray(r.standard_normal((n, *g.in_shape, g.n_in)), dtype=dtype)
        y = xp.asarray(r.standard_normal((n, *g.out_shape, g.n_out)), dtype=dtype)
        fns = {}
        for name, (e, chunk) in names.items():
            eng = _build3x3(e, g, xp, dtype, "channels_last", "channels_last", caps, chunk)
            eng.set_weights(w)
            # timed as a relaxation uses it: the weights frozen across the calls, so weight-derived
            # operands (Winograd's transformed kernels) are computed once, in the untimed first call
            # (timing them in every call made im2col win on layers where Winograd is 1.5-3x faster per step)
            hold = eng.frozen()
            hold.__enter__()

            def pair(eng=eng, hold=hold):
                eng.forward(x)
                eng.adjoint(y)

            fns[name] = pair
        return fns

    choice = autotune.tuned(key, _Lazy(candidates, names), default)
    e, chunk = names.get(choice, (default, None))
    return _build3x3(e, g, xp, dtype, x_layout, y_layout, caps, chunk)


class _Lazy(dict):
    """Candidate names known at once; the callables (which allocate test arrays) built on first access."""

    def __init__(self, build, names):
        super().__init__({k: None for k in names})
        self._build, self._fns = build, None

    def values(self):
        return self._get().values()

    def items(self):
        return self._get().items()

    def _get(self):
        if self._fns is None:
            self._fns = self._build()
        return self._fns


def _im2col_cf(g, xp, dtype, caps):
    """Channels-first numba im2col: whole-batch or per-core split (and its chunk size), measured on first
    use per machine and geometry (``SPARSECODING_TUNE``), the whole-batch form below TUNE_MIN_MACS_CF."""
    dtype = np.dtype(dtype)
    kernel = math.prod(g.kernel)
    macs = math.prod(g.out_shape) * g.n_out * g.n_in * kernel
    if macs < TUNE_MIN_MACS_CF:
        return Im2colNumba(g, xp, dtype, "channels_first", "channels_first", caps)
    names = {"whole": (False, None)}
    names.update({f"split@{c >> 10}K": (True, c) for c in SPLIT_CHUNKS})
    key = (f"im2col-cf C{g.n_in} K{g.n_out} {'x'.join(map(str, g.in_shape))} k{'x'.join(map(str, g.kernel))} "
           f"s{'x'.join(map(str, g.stride))} p{'x'.join(map(str, g.pad))} o{'x'.join(map(str, g.out_shape))} "
           f"{dtype.name}")

    def candidates():
        n = int(min(64, max(4, (1 << 28) // macs)))
        r = np.random.default_rng(0)
        w = xp.asarray(r.standard_normal((g.n_out, g.n_in, *g.kernel)) / math.sqrt(g.n_in * kernel), dtype=dtype)
        x = xp.asarray(r.standard_normal((n, g.n_in, *g.in_shape)), dtype=dtype)
        y = xp.asarray(r.standard_normal((n, g.n_out, *g.out_shape)), dtype=dtype)
        fns = {}
        for name, (split, chunk) in names.items():
            eng = Im2colNumba(g, xp, dtype, "channels_first", "channels_first", caps, split_cf=split, chunk_bytes=chunk)
            eng.set_weights(w)
            fns[name] = lambda eng=eng: (eng.forward(x), eng.adjoint(y))
        return fns

    choice = autotune.tuned(key, _Lazy(candidates, names), "whole")
    split, chunk = names.get(choice, (False, None))
    return Im2colNumba(g, xp, dtype, "channels_first", "channels_first", caps, split_cf=split, chunk_bytes=chunk)
