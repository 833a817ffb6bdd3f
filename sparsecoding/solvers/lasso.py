"""LASSO solvers: ISTA, FISTA (any dictionary operator) and coordinate descent (dense, numba).

Problem, per sample::

    minimise_a  E(a) = 1/2 ||s - Phi^T a||^2 + lambda ||a||_1     (optionally a >= 0)

The gradient of the smooth part is ``-Phi (s - Phi^T a) = -analysis(residual)``;
the proximal map of the penalty is the (non-negative) soft threshold.
Convergence is checked every ``check_every`` iterations on the relative
change of the total energy (one host synchronisation per check).

Input checks (once, at entry): ``s`` and ``a0`` must be real (complex is a
``TypeError``), finite, and small enough that the squared residuals of the
batch do not overflow the dictionary's dtype (a ``ValueError`` saying so,
rather than a divergence error later); real inputs of another dtype (float16,
integers) are cast to the dictionary's dtype. ``max_iter``, ``check_every``
(integers >= 1), ``tol`` (None or >= 0) and ``step`` (finite, > 0, <= 1/L)
are range-checked. An empty batch (N = 0) returns empty codes of shape
``(0, *op.out_shape)`` with ``n_iter=0``, ``converged=True`` and an empty energy.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numba
import numpy as np

from ..backend import get_xp, to_numpy
from ..ops._jit import njit_cached
from ..ops.fused import momentum, prox_step
from ..ops.threshold import nonneg_soft_threshold, soft_threshold
from ..ops.linop import DenseOperator

__all__ = ["lasso_energy", "ista", "fista", "coordinate_descent", "SolverResult", "check_lambda",
           "check_integer", "check_number", "check_real_array"]


@dataclass
class SolverResult:
    """Codes and diagnostics of a LASSO solve.

    Attributes
    ----------
    codes : array, the solution ``a`` (code shape of the operator)
    n_iter : iterations run
    converged : whether ``tol`` was met
    energy : per-sample energy of ``codes`` (N,)
    history : total energy at each check (host floats)
    """

    codes: object
    n_iter: int
    converged: bool
    energy: object
    history: list = field(default_factory=list)


def check_lambda(lambda_):
    """``lambda_`` as a float; ValueError unless it is a finite number >= 0."""
    return check_number("lambda_", lambda_, 0.0)


def _is_number(value):
    """A real scalar: Python / numpy numbers and 0-d real arrays of any backend, not bools."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Real):
        return True
    dtype = getattr(value, "dtype", None)
    return dtype is not None and getattr(value, "shape", None) == () and np.dtype(dtype).kind in "iuf"


def check_number(name, value, minimum=0.0, *, strict=False, allow_inf=False, allow_none=False):
    """``value`` as a float in ``[minimum, inf)`` (``(minimum, inf)`` with ``strict``).

    ``allow_inf`` admits ``+inf``, ``allow_none`` admits ``None`` (returned as is). A value
    that is not a real number is a TypeError, one out of range (NaN included) a ValueError;
    both messages name the argument and the allowed range.
    """
    if value is None and allow_none:
        return None
    bound = f"{'>' if strict else '>='} {minimum:g}"
    allowed = f"a {'' if allow_inf else 'finite '}number {bound}" + (" (inf allowed)" if allow_inf else "")
    if allow_none:
        allowed += " or None"
    if not _is_number(value):
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    v = float(value)
    if np.isnan(v) or (np.isinf(v) and not (allow_inf and v > 0)) or v < minimum or (strict and v == minimum):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return v


def check_integer(name, value, minimum=1):
    """``value`` as an int >= ``minimum`` (integral floats such as ``1e3`` accepted)."""
    if not _is_number(value):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    v = float(value)
    if not np.isfinite(v) or not v.is_integer() or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def overflow_limit(dtype, size):
    """Largest ``max|x|`` for which ``1/2 sum(r*r)`` over ``size`` values with ``|r| <= 2 max|x|``
    (residuals early in a solve) stays finite in ``dtype``."""
    return float(np.sqrt(np.finfo(dtype).max / (8.0 * max(int(size), 1))))


def check_real_array(x, name, dtype=None, overflow=True, advice="rescale the inputs or use float64",
                     limit_dtype=None, finite=True):
    """Entry check of a data array: real (complex is a TypeError naming ``name``), finite (with
    ``finite``), and (with ``overflow``) small enough that its energy does not overflow
    ``limit_dtype`` (default ``dtype``; :func:`overflow_limit`). Returns ``x`` cast to ``dtype``
    (when given; a non-float ``dtype`` means float64).

    One reduction and one host synchronisation; meant for entry points, not loops.
    """
    kind = np.dtype(x.dtype).kind
    if kind == "c":
        raise TypeError(
            f"{name} must be real, got complex dtype {x.dtype} (the imaginary part would be dropped; "
            f"pass {name}.real or abs({name}) explicitly)"
        )
    if kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {x.dtype}")
    dtype = np.dtype(x.dtype if dtype is None else dtype)
    if dtype.kind != "f":
        dtype = np.dtype(np.float64)
    if finite and x.size and kind != "b":
        xp = get_xp(x)
        amax = float(xp.max(xp.abs(x)))  # NaN propagates
        if not np.isfinite(amax):
            raise ValueError(f"{name} contains NaN or Inf")
        ldt = dtype if limit_dtype is None else np.dtype(limit_dtype)
        limit = overflow_limit(ldt, x.size)
        if overflow and amax > limit:
            raise ValueError(
                f"values of {name} are too large for {ldt} arithmetic: max |{name}| = {amax:.3g}, and beyond about "
                f"{limit:.3g} the squared residuals of this batch of {x.size} values overflow {ldt} "
                f"(max {np.finfo(ldt).max:.3g}); {advice}"
            )
    return x.astype(dtype, copy=False)


def _per_sample_sum(xp, a):
    n = a.shape[0]
    return xp.sum(a.reshape(n, a.size // n if n else 0), axis=1)


def lasso_energy(op, s, a, lambda_, plan=None):
    """Per-sample energy ``1/2 ||s - Phi^T a||^2 + lambda ||a||_1``, shape (N,).

    ``plan``: ``op.residual_plan(s)`` where a solver has one (the residual is then fused).
    """
    xp = get_xp(s, a)
    r = s - op.adjoint(a) if plan is None else op.residual(plan, a)
    return 0.5 * _per_sample_sum(xp, r * r) + lambda_ * _per_sample_sum(xp, xp.abs(a))


def _prox(nonneg):
    return nonneg_soft_threshold if nonneg else soft_threshold


def _check_inputs(op, s, a0):
    """Shapes, dtypes, finiteness and magnitude of ``s`` and ``a0``; returns them in the working dtype
    (``s``'s own float32/float64, else the dictionary's)."""
    expect = (s.shape[0], *op.in_shape)
    if tuple(s.shape) != tuple(expect):
        raise ValueError(f"s must have shape {expect} for this dictionary, got {tuple(s.shape)}")
    dtype = s.dtype if s.dtype in (np.float32, np.float64) else op.dtype
    narrow = min(np.dtype(dtype), np.dtype(op.dtype), key=lambda d: d.itemsize)  # the arithmetic's dtype
    s = check_real_array(s, "s", dtype, limit_dtype=narrow)
    if a0 is not None:
        if tuple(a0.shape) != (s.shape[0], *op.out_shape):
            raise ValueError(f"a0 must have shape {(s.shape[0], *op.out_shape)}, got {tuple(a0.shape)}")
        a0 = check_real_array(a0, "a0", dtype, limit_dtype=narrow)
    return s, a0


def _empty_result(op, s):
    """The documented result for an empty batch: no iterations, nothing to converge."""
    xp = get_xp(s)
    return SolverResult(xp.zeros((0, *op.out_shape), dtype=s.dtype), 0, True, xp.zeros(0, dtype=s.dtype), [])


def _check_loop(max_iter, tol, check_every=1):
    check_integer("max_iter", max_iter, 1)
    check_integer("check_every", check_every, 1)
    return check_number("tol", tol, 0.0, allow_none=True)


def _converged(history, tol):
    if tol is None or len(history) < 2:
        return False
    prev, cur = history[-2], history[-1]
    return abs(prev - cur) <= tol * max(abs(cur), 1e-30)


def _diverged(value, first):
    return not np.isfinite(value) or value > 1e6 * max(first, 1.0)


def _divergence_message(what, it, e, s, remedy):
    """The cause of a non-finite / exploding energy: the inputs overflowing the dtype, else the step."""
    xp = get_xp(s)
    if not np.isfinite(float(0.5 * xp.sum(s * s))):
        return (f"{what} energy overflowed {s.dtype} at iteration {it} (energy {e:.3g}): the inputs are too "
                f"large for {s.dtype} arithmetic (max |s| = {float(xp.max(xp.abs(s))):.3g}); rescale them or "
                f"use float64")
    return f"{what} diverged at iteration {it} (energy {e:.3g}); {remedy}"


def ista(op, s, lambda_, nonneg=False, max_iter=1000, tol=1e-6, a0=None, step=None, check_every=10):
    """Iterative shrinkage-thresholding: ``a <- T_{lambda/L}(a + (1/L) Phi (s - Phi^T a))``.

    Parameters and result as for :func:`fista`.
    """
    return _proximal_gradient(op, s, lambda_, nonneg, max_iter, tol, a0, step, check_every, accelerate=False)


def fista(op, s, lambda_, nonneg=False, max_iter=1000, tol=1e-6, a0=None, step=None, check_every=10):
    """FISTA (Beck & Teboulle 2009) with gradient-based adaptive restart (O'Donoghue & Candes 2015).

    Parameters
    ----------
    op : LinearOperator (DenseOperator, ConvOperator, ...)
    s : array, inputs of the operator's input shape
    lambda_ : float >= 0
    nonneg : bool, constrain ``a >= 0``
    max_iter : int
    tol : float or None, stop when the relative change of the total energy
        between two checks is below ``tol``
    a0 : optional warm start
    step : optional step size, finite and in ``(0, 1/L]``; default ``1/L`` (``L`` from the operator)
    check_every : int >= 1, iterations between convergence checks

    Returns
    -------
    SolverResult; for an empty batch (N = 0) empty codes of shape ``(0, *op.out_shape)``,
    ``n_iter=0``, ``converged=True``, an empty energy and history.

    Raises
    ------
    TypeError for complex ``s`` / ``a0``; ValueError for NaN/Inf or overflowing inputs and for
    out-of-range ``lambda_``, ``max_iter``, ``tol``, ``step``, ``check_every``;
    FloatingPointError if the energy diverges.
    """
    return _proximal_gradient(op, s, lambda_, nonneg, max_iter, tol, a0, step, check_every, accelerate=True)


def _proximal_gradient(op, s, lambda_, nonneg, max_iter, tol, a0, step, check_every, accelerate):
    lam = check_lambda(lambda_)
    tol = _check_loop(max_iter, tol, check_every)
    if step is not None:
        step = check_number("step", step, 0.0, strict=True)
    s, a0 = _check_inputs(op, s, a0)
    if s.shape[0] == 0:
        return _empty_result(op, s)
    xp = get_xp(s)
    L = op.lipschitz()
    if step is None:
        step = 1.0 / L if L > 0 else 1.0
    elif step > 1.0 / L * 1.0001:
        raise ValueError(f"step {step} exceeds 1/L = {1.0 / L}: the iteration may diverge (step must be in (0, 1/L])")
    prox = _prox(nonneg)
    outer, op = op, op.iteration_view()
    a = xp.zeros((s.shape[0], *op.out_shape), dtype=s.dtype) if a0 is None else op.to_inner(a0.astype(s.dtype, copy=True))
    y = a
    t = 1.0
    plan = op.residual_plan(s)
    history = [float(xp.sum(lasso_energy(op, s, a, lam, plan)))]
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        c = op.forward_residual(plan, y, residual=False)[0]  # Phi (s - Phi^T y): minus the gradient at y
        if accelerate:
            a_new, dots = prox_step(y, c, a, step, step * lam, nonneg)
            # restart momentum for samples where it points uphill: <y - a_new, a_new - a> > 0
            t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
            beta = xp.where(dots > 0, 0.0, (t - 1.0) / t_new)
            y = momentum(a_new, a, beta)
            t = t_new
        else:
            a_new = prox(y + step * c, step * lam)
            y = a_new
        a = a_new
        if it % check_every == 0 or it == max_iter:
            e = float(xp.sum(lasso_energy(op, s, a, lam, plan)))
            history.append(e)
            if _diverged(e, history[0]):
                raise FloatingPointError(_divergence_message("solver", it, e, s, "reduce the step"))
            if _converged(history, tol):
                converged = True
                break
    return SolverResult(op.to_outer(a), it, converged, lasso_energy(op, s, a, lam, plan), history)


@numba.njit(inline="always")
def _cd_sweep(G, r, a, lam, nonneg, coords, n_coords):  # pragma: no cover - compiled
    """One cyclic pass over ``coords[:n_coords]``; returns (largest change, largest |a|)."""
    k = a.shape[0]
    max_change = 0.0
    max_a = 0.0
    for c in range(n_coords):
        p = coords[c]
        gpp = G[p, p]
        if gpp <= 0.0:
            continue
        z = r[p] + gpp * a[p]  # b_p - sum_{q != p} G_pq a_q
        if nonneg:
            new = max(z - lam, 0.0) / gpp
        elif z > lam:
            new = (z - lam) / gpp
        elif z < -lam:
            new = (z + lam) / gpp
        else:
            new = 0.0
        d = new - a[p]
        if d != 0.0:
            row = G[p]  # G is symmetric: the contiguous row is the column
            for q in range(k):
                r[q] -= row[q] * d
            a[p] = new
            max_change = max(max_change, abs(d))
        max_a = max(max_a, abs(new))
    return max_change, max_a


@njit_cached(parallel=True)
def _cd_kernel(G, B, A, lam, nonneg, max_iter, tol, n_iter_out):  # pragma: no cover - compiled
    n, k = B.shape
    for i in numba.prange(n):
        a = A[i]
        r = B[i].copy()  # r = b - G a
        for p in range(k):
            if a[p] != 0.0:
                for q in range(k):
                    r[q] -= G[p, q] * a[p]
        everything = np.arange(k)
        active = np.empty(k, dtype=np.int64)
        it = 0
        while it < max_iter:
            # full sweep, then sweeps over the active set until it settles (glmnet's strategy)
            it += 1
            change, amax = _cd_sweep(G, r, a, lam, nonneg, everything, k)
            if change <= tol * max(amax, 1e-30):
                break
            n_active = 0
            for p in range(k):
                if a[p] != 0.0:
                    active[n_active] = p
                    n_active += 1
            while it < max_iter:
                it += 1
                change, amax = _cd_sweep(G, r, a, lam, nonneg, active, n_active)
                if change <= tol * max(amax, 1e-30):
                    break
        n_iter_out[i] = it


def coordinate_descent(op, s, lambda_, nonneg=False, max_iter=1000, tol=1e-8, a0=None):
    """Cyclic coordinate descent on the Gram form, one sample per thread (numba, CPU).

    Minimises ``1/2 a^T G a - b^T a + lambda |a|_1`` with ``G = Phi Phi^T``,
    ``b = Phi s``: ``a_p <- T_lambda(b_p - sum_{q != p} G_pq a_q) / G_pp``.
    Full sweeps alternate with sweeps over the active set; a sample stops when a
    full sweep changes no coordinate by more than ``tol * max|a|``. ``a0`` warm-starts
    (e.g. from FISTA, to polish its answer). Input checks and the empty-batch result
    as for :func:`fista` (``max_iter`` >= 1, ``tol`` >= 0).
    """
    if not isinstance(op, DenseOperator):
        raise TypeError("coordinate_descent needs a DenseOperator (dense (K, D) atoms)")
    lam = check_lambda(lambda_)
    tol = _check_loop(max_iter, tol)
    if tol is None:
        tol = 0.0
    s, a0 = _check_inputs(op, s, a0)
    if s.shape[0] == 0:
        return _empty_result(op, s)
    xp = get_xp(s)
    phi = to_numpy(op.W).astype(np.float64)
    G = phi @ phi.T
    B = to_numpy(s).astype(np.float64) @ phi.T
    A = np.zeros_like(B) if a0 is None else to_numpy(a0).astype(np.float64).copy()
    n_iter = np.zeros(B.shape[0], dtype=np.int64)
    _cd_kernel(G, B, A, lam, bool(nonneg), int(max_iter), float(tol), n_iter)
    codes = xp.asarray(A.astype(s.dtype))
    return SolverResult(codes, int(n_iter.max()), bool((n_iter < max_iter).all()), lasso_energy(op, s, codes, lam))
