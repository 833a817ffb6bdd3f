"""Fused elementwise updates of the iterative solvers.

One pass over the code arrays instead of one per numpy operation: numba
kernels on the CPU, plain array expressions elsewhere (cupy fuses or runs
them as device kernels; no host synchronisation either way). All functions
treat arrays as (N, -1): per-sample quantities are length-N vectors.

* ``lca_step``:   u <- u + eta (c + a - u);  a <- T(u)          (DESIGN.md §5)
* ``prox_step``:  a' = prox_{thr}(y + step c);  d_n = <y - a', a' - a>_n
* ``momentum``:   y = a' + beta_n (a' - a)
* ``gap_terms``:  per sample ``||a||_1``, ``<a, c>`` and ``max c`` (``max |c|`` when signed): the
  duality-gap certificate's reductions in one pass

The numba kernels take float32/float64 arrays of one dtype; other real dtypes
(float16) take the array-expression path. Complex arrays are a ``TypeError``;
an empty batch (N = 0) gives empty results.
"""
from __future__ import annotations

import numba
import numpy as np

from ..backend import capabilities, get_xp
from . import _kernels  # noqa: F401  (sets numba's threading layer before any parallel kernel)
from ._jit import njit_cached

__all__ = ["lca_step", "prox_step", "momentum", "gap_terms"]


# Branch-free soft threshold (thr >= 0) so that the loops vectorise:
#   signed: max(v - thr, 0) + min(v + thr, 0);  non-negative: max(v - thr, 0).
# fastmath lets the per-sample reduction vectorise; the solvers detect
# non-finite values through the energy, computed outside these kernels.
@numba.njit(inline="always", fastmath=True)
def _soft(v, thr, nonneg):  # pragma: no cover - compiled
    zero = v - v
    if nonneg:
        return max(v - thr, zero)
    return max(v - thr, zero) + min(v + thr, zero)


@njit_cached(parallel=True, fastmath=True)
def _lca_step_kernel(u, c, a, eta, thr, nonneg):  # pragma: no cover - compiled
    n, m = u.shape
    for i in numba.prange(n):
        for j in range(m):
            v = u[i, j] + eta * (c[i, j] + a[i, j] - u[i, j])
            u[i, j] = v
            a[i, j] = _soft(v, thr, nonneg)


@njit_cached(parallel=True, fastmath=True)
def _prox_step_kernel(y, c, a, step, thr, nonneg, out, dots):  # pragma: no cover - compiled
    n, m = y.shape
    for i in numba.prange(n):
        for j in range(m):
            out[i, j] = _soft(y[i, j] + step * c[i, j], thr, nonneg)
        acc = 0.0
        for j in range(m):
            acc += (y[i, j] - out[i, j]) * (out[i, j] - a[i, j])
        dots[i] = acc


@njit_cached(parallel=True, fastmath=True)
def _momentum_kernel(a_new, a, beta, y):  # pragma: no cover - compiled
    n, m = a_new.shape
    for i in numba.prange(n):
        b = beta[i]
        for j in range(m):
            y[i, j] = a_new[i, j] + b * (a_new[i, j] - a[i, j])


@njit_cached(parallel=True, fastmath=True)
def _gap_terms_kernel(a, c, nonneg, l1, ac, worst):  # pragma: no cover - compiled
    n, m = a.shape
    for i in numba.prange(n):
        s1 = 0.0
        s2 = 0.0
        w = -np.inf
        for j in range(m):
            s1 += abs(a[i, j])
            s2 += a[i, j] * c[i, j]
            v = c[i, j] if nonneg else abs(c[i, j])
            w = max(w, v)
        l1[i] = s1
        ac[i] = s2
        worst[i] = w


def _cpu(*arrays):
    """Whether the numba kernels take these arrays: the native engine family (backend.capabilities)
    and plain contiguous float32/float64 numpy arrays."""
    return capabilities(get_xp(*arrays)).numba and all(
        type(x) is np.ndarray and x.flags.c_contiguous and x.dtype in (np.float32, np.float64) for x in arrays)


def _check_real(**arrays):
    for name, x in arrays.items():
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be a real array, got dtype {x.dtype}")


def _soft_xp(xp, v, thr, nonneg):
    if nonneg:
        return xp.maximum(v - thr, 0)
    return xp.sign(v) * xp.maximum(xp.abs(v) - thr, 0)


def lca_step(u, c, a, eta, thr, nonneg):
    """In place: ``u <- u + eta (c + a - u)``, ``a <- soft_thr(u)``. Returns (u, a)."""
    _check_real(u=u, c=c, a=a)
    if u.shape[0] == 0:
        return u, a
    if _cpu(u, c, a) and u.dtype == c.dtype == a.dtype:
        n = u.shape[0]
        _lca_step_kernel(u.reshape(n, -1), c.reshape(n, -1), a.reshape(n, -1), u.dtype.type(eta),
                         u.dtype.type(thr), bool(nonneg))
        return u, a
    xp = get_xp(u)
    u = u + eta * (c + a - u)
    return u, _soft_xp(xp, u, thr, nonneg)


def prox_step(y, c, a, step, thr, nonneg):
    """``a' = soft_thr(y + step c)`` and the per-sample restart test ``<y - a', a' - a>``."""
    _check_real(y=y, c=c, a=a)
    n = y.shape[0]
    if n == 0:
        xp = get_xp(y)
        return xp.empty_like(y), xp.zeros(0, dtype=xp.float64)
    if _cpu(y, c, a) and y.dtype == c.dtype == a.dtype:
        out = np.empty_like(y)
        dots = np.empty(n, dtype=np.float64)
        _prox_step_kernel(y.reshape(n, -1), c.reshape(n, -1), a.reshape(n, -1), y.dtype.type(step),
                          y.dtype.type(thr), bool(nonneg), out.reshape(n, -1), dots)
        return out, dots
    xp = get_xp(y)
    out = _soft_xp(xp, y + step * c, thr, nonneg)
    dots = xp.sum(((y - out) * (out - a)).reshape(n, -1), axis=1)
    return out, dots


def momentum(a_new, a, beta):
    """``y = a' + beta_n (a' - a)`` with one ``beta`` per sample."""
    _check_real(a_new=a_new, a=a)
    n = a_new.shape[0]
    if n == 0:
        return get_xp(a_new).empty_like(a_new)
    if _cpu(a_new, a, beta) and a_new.dtype == a.dtype:
        y = np.empty_like(a_new)
        _momentum_kernel(a_new.reshape(n, -1), a.reshape(n, -1), beta.astype(a_new.dtype), y.reshape(n, -1))
        return y
    return a_new + beta.astype(a_new.dtype).reshape((n,) + (1,) * (a_new.ndim - 1)) * (a_new - a)


def gap_terms(a, c, nonneg):
    """Per sample (N,) arrays ``||a||_1``, ``<a, c>`` and ``max c`` (``max |c|`` unless ``nonneg``),
    accumulated in float64 on the CPU kernel; one pass over ``a`` and ``c``."""
    _check_real(a=a, c=c)
    n = a.shape[0]
    if n and _cpu(a, c) and a.dtype == c.dtype and a.size:
        l1, ac, worst = (np.empty(n, dtype=np.float64) for _ in range(3))
        _gap_terms_kernel(a.reshape(n, -1), c.reshape(n, -1), bool(nonneg), l1, ac, worst)
        return l1, ac, worst
    xp = get_xp(a)
    af, cf = a.reshape(n, -1), c.reshape(n, -1)
    worst = xp.max(cf, axis=1) if nonneg else xp.max(xp.abs(cf), axis=1)
    return xp.sum(xp.abs(af), axis=1), xp.sum(af * cf, axis=1), worst
