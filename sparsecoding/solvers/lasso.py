"""LASSO solvers: ISTA, FISTA (any dictionary operator) and coordinate descent (dense, numba).

Problem, per sample::

    minimise_a  E(a) = 1/2 ||s - Phi^T a||^2 + lambda ||a||_1     (optionally a >= 0)

The gradient of the smooth part is ``-Phi (s - Phi^T a) = -analysis(residual)``;
the proximal map of the penalty is the (non-negative) soft threshold.
Convergence is checked every ``check_every`` iterations on the relative
change of the total energy (one host synchronisation per check).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..backend import get_xp, to_numpy
from ..ops._jit import njit_cached
from ..ops.fused import momentum, prox_step
from ..ops.threshold import nonneg_soft_threshold, soft_threshold
from .operators import DenseDictionary

__all__ = ["lasso_energy", "ista", "fista", "coordinate_descent", "SolverResult", "check_lambda"]


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
    lam = float(lambda_)
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lambda_ must be a finite number >= 0, got {lambda_!r}")
    return lam


def _per_sample_sum(xp, a):
    return xp.sum(a.reshape(a.shape[0], -1), axis=1)


def lasso_energy(op, s, a, lambda_, plan=None):
    """Per-sample energy ``1/2 ||s - Phi^T a||^2 + lambda ||a||_1``, shape (N,).

    ``plan``: ``op.residual_plan(s)`` where a solver has one (the residual is then fused).
    """
    xp = get_xp(s, a)
    r = s - op.synthesis(a) if plan is None else op.residual(plan, a, xp.empty_like(s))
    return 0.5 * _per_sample_sum(xp, r * r) + lambda_ * _per_sample_sum(xp, xp.abs(a))


def _prox(nonneg):
    return nonneg_soft_threshold if nonneg else soft_threshold


def _check_inputs(op, s, a0):
    xp = get_xp(s)
    expect = op.input_shape(s.shape[0])
    if tuple(s.shape) != tuple(expect):
        raise ValueError(f"s must have shape {expect} for this dictionary, got {tuple(s.shape)}")
    if not bool(xp.isfinite(s).all()):
        raise ValueError("s contains NaN or Inf")
    if a0 is not None and tuple(a0.shape) != tuple(op.code_shape(s.shape[0])):
        raise ValueError(f"a0 must have shape {op.code_shape(s.shape[0])}, got {tuple(a0.shape)}")


def _converged(history, tol):
    if tol is None or len(history) < 2:
        return False
    prev, cur = history[-2], history[-1]
    return abs(prev - cur) <= tol * max(abs(cur), 1e-30)


def _diverged(value, first):
    return not np.isfinite(value) or value > 1e6 * max(first, 1.0)


def ista(op, s, lambda_, nonneg=False, max_iter=1000, tol=1e-6, a0=None, step=None, check_every=10):
    """Iterative shrinkage-thresholding: ``a <- T_{lambda/L}(a + (1/L) Phi (s - Phi^T a))``."""
    return _proximal_gradient(op, s, lambda_, nonneg, max_iter, tol, a0, step, check_every, accelerate=False)


def fista(op, s, lambda_, nonneg=False, max_iter=1000, tol=1e-6, a0=None, step=None, check_every=10):
    """FISTA (Beck & Teboulle 2009) with gradient-based adaptive restart (O'Donoghue & Candes 2015).

    Parameters
    ----------
    op : DenseDictionary or ConvDictionary
    s : array, inputs of the operator's input shape
    lambda_ : float >= 0
    nonneg : bool, constrain ``a >= 0``
    max_iter : int
    tol : float or None, stop when the relative change of the total energy
        between two checks is below ``tol``
    a0 : optional warm start
    step : optional step size, default ``1/L`` (``L`` from the operator)
    check_every : iterations between convergence checks

    Returns
    -------
    SolverResult
    """
    return _proximal_gradient(op, s, lambda_, nonneg, max_iter, tol, a0, step, check_every, accelerate=True)


def _proximal_gradient(op, s, lambda_, nonneg, max_iter, tol, a0, step, check_every, accelerate):
    lam = check_lambda(lambda_)
    _check_inputs(op, s, a0)
    xp = get_xp(s)
    L = op.lipschitz()
    if step is None:
        step = 1.0 / L if L > 0 else 1.0
    elif step > 1.0 / L * 1.0001:
        raise ValueError(f"step {step} exceeds 1/L = {1.0 / L}: the iteration may diverge")
    prox = _prox(nonneg)
    a = xp.zeros(op.code_shape(s.shape[0]), dtype=s.dtype) if a0 is None else a0.astype(s.dtype, copy=True)
    y = a
    t = 1.0
    plan = op.residual_plan(s)
    history = [float(xp.sum(lasso_energy(op, s, a, lam, plan)))]
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        c = op.residual_analysis(plan, y)  # Phi (s - Phi^T y): minus the gradient at y
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
                raise FloatingPointError(f"solver diverged at iteration {it} (energy {e}); reduce the step")
            if _converged(history, tol):
                converged = True
                break
    return SolverResult(a, it, converged, lasso_energy(op, s, a, lam, plan), history)


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
    (e.g. from FISTA, to polish its answer).
    """
    if not isinstance(op, DenseDictionary):
        raise TypeError("coordinate_descent needs a DenseDictionary (dense (K, D) atoms)")
    lam = check_lambda(lambda_)
    _check_inputs(op, s, a0)
    xp = get_xp(s)
    phi = to_numpy(op.phi).astype(np.float64)
    G = phi @ phi.T
    B = to_numpy(s).astype(np.float64) @ phi.T
    A = np.zeros_like(B) if a0 is None else to_numpy(a0).astype(np.float64).copy()
    n_iter = np.zeros(B.shape[0], dtype=np.int64)
    _cd_kernel(G, B, A, lam, bool(nonneg), int(max_iter), float(tol), n_iter)
    codes = xp.asarray(A.astype(s.dtype))
    return SolverResult(codes, int(n_iter.max()), bool((n_iter < max_iter).all()), lasso_energy(op, s, codes, lam))
