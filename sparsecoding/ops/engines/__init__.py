"""Compute engines of the convolution and pool operators, and the one place that picks them.

Engines (one small class each):

* :class:`~.im2col_numba.Im2colNumba` -- numba gather/scatter kernels around large GEMMs
  (CPU; channels-first and channels-last layouts, the fused per-core residual);
* :class:`~.im2col_xp.Im2colGeneric` -- window views, one GEMM, strided col2im on any
  array namespace (the path cupy takes);
* :class:`~.fft.FFTEngine` -- space-to-depth, real FFTs, batched complex matmuls;
* :class:`~.pool_numba.PoolNumba` / :class:`~.pool_xp.PoolGeneric` -- the pools.

Selection (:func:`select_conv_engine`, :func:`select_pool_engine`) reads the array
namespace's capability table (:func:`sparsecoding.backend.capabilities`): its
``engines`` field is ``"native"`` (numba) on numpy and ``"generic"`` on cupy, or on
numpy under ``SPARSECODING_ENGINES=generic`` / ``backend.use_engines("generic")``,
which is how the tests run the GPU code path on the CPU. The method (im2col or FFT)
comes from the caller or the cost model :func:`choose_method`. Operators call these
once, when they are built; nothing else in the library tests the array module.
"""
from __future__ import annotations

import math

from ...backend import capabilities
from .base import ConvEngine
from .fft import FFTEngine
from .im2col_numba import Im2colNumba
from .im2col_xp import Im2colGeneric
from .pool_numba import PoolNumba
from .pool_xp import PoolGeneric, pool_output_shape

__all__ = ["select_conv_engine", "select_pool_engine", "choose_method", "ConvEngine", "Im2colNumba",
           "Im2colGeneric", "FFTEngine", "PoolNumba", "PoolGeneric", "pool_output_shape", "METHODS"]

METHODS = ("auto", "im2col", "fft")


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
    if method == "auto":
        method = choose_method(g)
    im2col = Im2colNumba if caps.numba else Im2colGeneric
    engine = im2col(g, xp, dtype, x_layout, y_layout, caps)
    if method == "fft":
        engine = FFTEngine(g, xp, dtype, x_layout, y_layout, caps, grad_engine=engine)
    return engine


def select_pool_engine(xp):
    """The pool engine for namespace ``xp``."""
    caps = capabilities(xp)
    return (PoolNumba if caps.numba else PoolGeneric)(xp, caps)
