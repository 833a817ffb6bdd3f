"""LASSO solvers: ISTA, FISTA (any linear operator) and the exact dense route (numba):
the LASSO path (homotopy) per sample, coordinate descent for warm starts (``coordinate_descent``).

Problem, per sample::

    minimise_a  E(a) = 1/2 ||s - Phi^T a||^2 + lambda ||a||_1     (optionally a >= 0)

``Phi^T a`` is the operator's ``adjoint`` (synthesis) and ``Phi s`` its ``forward``
(analysis); the gradient of the smooth part is ``-Phi (s - Phi^T a)``, the operator's
fused ``forward_residual``; the proximal map of the penalty is the (non-negative)
soft threshold. ISTA and FISTA iterate through :func:`sparsecoding.solvers.relax.relax`
on the operator's ``iteration_view`` (the engine's native code layout) and return a
:class:`SolveResult`.

``tol``: the relative duality gap (:func:`duality_gap`). With ``r = s - Phi^T a`` and
``c = Phi r``, the dual point ``theta = beta r`` (``beta`` the largest value <= 1 that
makes it feasible: ``|Phi theta| <= lambda``, or ``Phi theta <= lambda`` for non-negative
codes) certifies ``E(a) - E* <= gap = E(a) - D(theta)``; the solvers stop at the first
check (every ``check_every`` iterations, one host read each) where
``sum_n gap_n <= tol * sum_n E_n(a)``: the codes' energy is then within ``tol`` of the
optimum (relative). The gap is computed from the residual the iteration has anyway (FISTA
takes its dual point from the extrapolated point ``y``, where it computes ``Phi r``, and
the primal value at the codes from their residual: one synthesis per check). A gap within the rounding error of its
own computation (about ``16 eps (1 + ||a||_1 max|Phi s| / E)``, ``eps`` of the dtype)
counts as zero: a ``tol`` below that precision is met at it. With ``lambda = 0`` the
certificate vanishes only with the residual.

Masks and weights (``mask=``): the weighted problem, per sample,

    minimise_a  E_W(a) = 1/2 ||W . (s - Phi^T a)||^2 + lambda ||a||_1

with a weight ``W >= 0`` broadcastable to ``s`` (a 0/1 mask: missing pixels, untrusted
borders). With ``D = diag(W)`` it is the plain LASSO of the data ``s~ = W . s`` and the operator
``A = Phi D`` (:class:`WeightedOperator`: analysis ``A x = Phi (W . x)``, synthesis
``A^T a = W . Phi^T a``), whose residual ``s~ - A^T a = W . (s - Phi^T a) = r~`` is the
weighted residual. Everything above carries over with ``r~`` in place of ``r``:

* gradient ``-A r~ = -Phi (W^2 . r)``, ``r = s - Phi^T a``;
* Lipschitz constant ``||Phi D||^2 <= ||Phi||^2 ||D||^2 = max(W^2) L``: the step is
  ``1/(max(W^2) L)``;
* duality gap. For any ``theta``, ``1/2 ||x||^2 >= <x, theta> - 1/2 ||theta||^2``, so with
  ``x = s~ - A^T a``: ``E_W(a) >= <s~, theta> - 1/2 ||theta||^2 + lambda ||a||_1 - <a, A theta>``,
  and where ``|A theta| <= lambda`` (``A theta <= lambda`` for ``a >= 0``)
  ``lambda ||a||_1 >= <a, A theta>``, hence ``E_W(a) >= D(theta) = <s~, theta> - 1/2 ||theta||^2``
  for every such ``theta``, in particular ``E_W* >= D(theta)``. The dual point is the scaled
  weighted residual ``theta = beta r~``, feasible for ``beta = min(1, lambda / max|Phi (W^2 . r)|)``
  (``A theta = beta Phi (W^2 . r)``; ``max`` of the positive part for ``a >= 0``), and with
  ``<s~, r~> = ||r~||^2 + <a, A r~>`` the certificate is

      E_W(a) - E_W* <= gap = 1/2 (1 - beta)^2 ||r~||^2 + lambda ||a||_1 - beta <a, Phi (W^2 . r)>,

  :func:`duality_gap` with ``r = r~`` and ``c = Phi (W^2 . r)``. ``tol`` bounds it relative to
  ``E_W(a)`` as before.

With a 0/1 mask the masked entries are zero in ``s~`` and ``r~``: they contribute nothing to the
energy, its gradient, the dual value or the gap, and ``s`` there influences no iterate (the codes
are bit-identical whatever finite values ``s`` holds at masked positions). A weight of ones gives
the unmasked solve (bit-identical for :class:`DenseOperator`, whose residual is computed the same
way; within the solver tolerance for operators with a fused residual). The weighted solve
computes the residual and its analysis as two calls (no fused residual), plus two elementwise
products per step. :func:`coordinate_descent` takes ``mask=`` too (the Gram matrix of
``Phi D``, one per distinct sample weight).

Input checks (once, at entry): ``s`` and ``a0`` must be real (complex is a
``TypeError``), finite, and small enough that the squared residuals of the
batch do not overflow the operator's dtype (a ``ValueError`` saying so,
rather than a divergence error later); real inputs of another dtype (float16,
integers) are cast to the operator's dtype. ``max_iter``, ``check_every``
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
from ..ops._geometry import check_real
from ..ops._jit import njit_cached
from ..ops.fused import gap_terms, momentum, prox_step
from ..ops.linop import DenseOperator, LinearOperator
from ..ops.parallel import blas_single_thread
from ..ops.elementwise import nonneg_soft_threshold, soft_threshold
from .relax import RelaxResult, relax

__all__ = ["lasso_energy", "ista", "fista", "coordinate_descent", "SolveResult", "SolverResult", "duality_gap",
           "check_lambda", "check_integer", "check_number", "check_real_array", "check_mask", "WeightedOperator"]


@dataclass
class SolveResult(RelaxResult):
    """The relaxation result of a sparse-coding solve (LASSO solvers, the LCA).

    Attributes
    ----------
    state : the solver's final state (the codes for ISTA/FISTA/CD; the potentials for the LCA)
    n_iter : iterations run
    converged : whether ``tol`` was met at a check
    history : ``(iteration, relative duality gap)`` at each check (host floats)
    codes : array, the solution ``a`` in the operator's public layout
    energy : per-sample energy of ``codes`` (N,)
    energy_history : total energy at each check (host floats, aligned with ``history``)
    """

    codes: object = None
    energy: object = None
    energy_history: list = field(default_factory=list)


SolverResult = SolveResult  # the earlier name


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
    check_real(x, name)
    kind = np.dtype(x.dtype).kind
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


def check_mask(mask, shape, dtype, xp=None, name="mask"):
    """A data weight / mask as an array of ``dtype`` broadcastable to inputs of ``shape``.

    ``mask``: None (returned as is), or an array (bool, integer or float; host or device) of
    weights ``W >= 0`` whose shape broadcasts to ``shape`` without enlarging it (e.g. ``(N, C, H, W)``,
    ``(1, C, H, W)``, ``(H, W)`` for inputs ``(N, C, H, W)``; ``(D,)`` or ``(N, D)`` for ``(N, D)``).
    Returned with leading unit axes added to the full rank, on the namespace ``xp`` (default: the
    mask's). TypeError for complex or non-numeric masks; ValueError naming ``name`` for a shape
    that does not broadcast, NaN/Inf or negative values. One reduction and host read (entry use).
    """
    if mask is None:
        return None
    xp = get_xp(mask) if xp is None else xp
    mask = xp.asarray(mask)
    check_real(mask, name)
    shape = tuple(shape)
    try:
        full = np.broadcast_shapes(tuple(mask.shape), shape)
    except ValueError:
        full = None
    if full != shape or mask.ndim > len(shape):
        raise ValueError(f"{name} of shape {tuple(mask.shape)} does not broadcast to the inputs' shape {shape}")
    mask = mask.reshape((1,) * (len(shape) - mask.ndim) + tuple(mask.shape)).astype(dtype, copy=False)
    if mask.size:
        lo, hi = float(xp.min(mask)), float(xp.max(mask))
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0):
            raise ValueError(f"{name} must hold finite weights >= 0 (0 where the data are missing), "
                             f"got values in [{lo:g}, {hi:g}]")
    return mask


class WeightedOperator(LinearOperator):
    """The operator of the weighted problem: ``A = Phi D``, ``D = diag(W)`` (see the module notes).

    ``forward(x) = op.forward(W . x)`` (analysis), ``adjoint(a) = W . op.adjoint(a)`` (synthesis),
    so the LASSO of the data ``W . s`` and this operator is the weighted problem
    ``1/2 ||W . (s - Phi^T a)||^2 + lambda ||a||_1``: its residual is the weighted residual
    ``W . (s - Phi^T a)`` and ``forward_residual`` gives ``(Phi (W^2 . r), W . r)``.
    ``lipschitz()`` is the bound ``max(W^2) L`` (``L`` the operator's). ``weight`` is an array
    broadcastable to the inputs (:func:`check_mask`), kept by reference; the iteration view,
    ``to_inner`` / ``to_outer`` and ``frozen`` are the wrapped operator's.
    """

    def __init__(self, op, weight):
        self.op, self.weight = op, weight
        self.xp, self.dtype, self.in_shape, self.out_shape = op.xp, op.dtype, op.in_shape, op.out_shape
        self._wmax2 = None
        self._view = None

    def forward(self, x):
        return self.op.forward(self.weight * x)

    def adjoint(self, y):
        return self.weight * self.op.adjoint(y)

    def weight_grad(self, x, y):
        return self.op.weight_grad(self.weight * x, y)

    def max_weight2(self):
        """``max(W^2)`` as a Python float (one host read, cached)."""
        if self._wmax2 is None:
            w = self.weight
            self._wmax2 = float(self.xp.max(w * w)) if w.size else 0.0
        return self._wmax2

    def lipschitz(self, *args, **kwargs):
        """``max(W^2) L``: a bound of the largest eigenvalue of ``A A^T`` (``L`` of the wrapped operator)."""
        wmax2 = self.max_weight2()
        return wmax2 * self.op.lipschitz(*args, **kwargs) if wmax2 > 0 else 0.0

    def iteration_view(self):
        inner = self.op.iteration_view()
        if inner is self.op:
            return self
        if self._view is None or self._view.op is not inner:
            self._view = WeightedOperator(inner, self.weight)
            self._view._wmax2 = self._wmax2
        return self._view

    def to_inner(self, a):
        return self.op.to_inner(a)

    def to_outer(self, a):
        return self.op.to_outer(a)

    def frozen(self):
        return self.op.frozen()


def _weighted(op, s, mask):
    """``(A, W . s, W)`` for the weighted problem (``mask`` checked), or ``(op, s, None)`` without a mask."""
    if mask is None:
        return op, s, None
    w = check_mask(mask, s.shape, s.dtype, get_xp(s))
    return WeightedOperator(op, w), w * s, w


def _per_sample_sum(xp, a):
    n = a.shape[0]
    return xp.sum(a.reshape(n, a.size // n if n else 0), axis=1)


def duality_gap(a, c, r, lambda_, nonneg, drive=None):
    """Per-sample energy ``P(a)`` and duality gap ``P(a) - D(theta) >= P(a) - P*`` from the residual.

    ``r = s - Phi^T a`` and ``c = Phi r`` at the codes ``a``. The dual point is
    ``theta = beta r`` with ``beta`` the value nearest to 1 that keeps it feasible
    (``|Phi theta + d| <= lambda``; ``Phi theta + d <= lambda`` for non-negative codes), and

        gap = 1/2 (1 - beta)^2 ||r||^2 + lambda ||a||_1 - <d, a> - beta <a, c>

    (``<s, r> = ||r||^2 + <a, c>`` removes the cancellation against ``||s||^2``, so the gap
    keeps its relative accuracy near the optimum). ``drive`` is an optional additive drive
    ``d`` (the LCA's ``drive_scaling``: the problem ``P(a) - <d, a>``). Returns two device
    arrays of shape (N,); no host synchronisation.
    """
    return _duality_gap(a, c, r, lambda_, nonneg, drive)[:2]


def _duality_gap(a, c, r, lambda_, nonneg, drive=None, dual=None):
    """:func:`duality_gap` and the per-sample ``||a||_1``. ``dual=(y, c_y, r_y)`` takes the dual point
    from the residual at another point ``y`` (FISTA's extrapolated point, whose ``c_y`` the
    iteration computes anyway; ``c`` is then not needed):
    ``D = beta <s, r_y> - beta^2 ||r_y||^2 / 2`` with ``<s, r_y> = ||r_y||^2 + <y, c_y>``."""
    xp = get_xp(a)
    n = a.shape[0]
    rf = r.reshape(n, -1)
    r2 = xp.sum(rf * rf, axis=1)
    if dual is None:
        y, cy, r2y = a, c, r2
        l1, ac, worst = gap_terms(a, c, nonneg)
    else:
        y, cy, ry = dual
        _, ac, worst = gap_terms(y, cy, nonneg)  # ac = <y, c_y> here
        l1 = xp.sum(xp.abs(a).reshape(n, -1), axis=1)
        r2y = xp.sum((ry * ry).reshape(n, -1), axis=1)
    tiny = xp.finfo(r2.dtype).tiny
    cf = cy.reshape(n, -1)
    if drive is None:
        beta = xp.minimum(1.0, lambda_ / xp.maximum(worst, tiny))
        da = 0.0
        infeasible = None
    else:
        df = drive.reshape(n, -1)
        da = xp.sum(a.reshape(n, -1) * df, axis=1)
        # per coordinate: beta c_i <= lambda - d_i (and >= -lambda - d_i when signed)
        with np.errstate(divide="ignore", invalid="ignore"):
            up = (lambda_ - df) / cf
            lo_ = (-lambda_ - df) / cf
        inf = xp.inf
        pos, neg = cf > 0, cf < 0
        hi = xp.min(xp.where(pos, up, xp.where(neg & (not nonneg), lo_, inf)), axis=1)
        lo = xp.max(xp.where(neg, up, xp.where(pos & (not nonneg), lo_, -inf)), axis=1)
        beta = xp.minimum(xp.maximum(1.0, lo), hi)
        # no feasible scaling (|d_i| > lambda where c_i = 0, or empty interval): no certificate
        zero_bad = (cf == 0) & ((df > lambda_) | ((df < -lambda_) if not nonneg else False))
        infeasible = (lo > hi) | xp.any(zero_bad, axis=1)
        beta = xp.where(xp.isfinite(beta), beta, 1.0)
    primal = 0.5 * r2 + lambda_ * l1 - da
    if dual is None:
        gap = 0.5 * (1.0 - beta) ** 2 * r2 + lambda_ * l1 - da - beta * ac
    else:
        gap = 0.5 * (r2 - r2y) + 0.5 * (1.0 - beta) ** 2 * r2y + lambda_ * l1 - da - beta * ac
    if infeasible is not None:
        gap = xp.where(infeasible, xp.abs(primal), gap)
    return primal, gap, l1


#: A relative gap within this many times its rounding estimate counts as zero (see _GapMonitor).
GAP_ROUNDING = 16.0


class _GapMonitor:
    """The solvers' monitored value: the total relative duality gap, NaN once the energy exploded
    (more than 1e6 times its start), so the runner's one divergence check catches it. Keeps the
    total energy of every check as a device scalar (read once, at the end).

    Rounding: ``c = Phi r`` carries errors of about ``eps max|Phi s|``, which move the gap by about
    ``eps ||a||_1 max|Phi s|``; a relative gap below ``GAP_ROUNDING * eps (1 + ||a||_1 max|Phi s| / E)``
    is reported as 0 (converged for any ``tol``): nothing smaller can be certified in the dtype
    (measured floors on the test problems: 1-4 times the estimate).
    """

    def __init__(self, xp, primal0, lambda_, nonneg, drive=None, scale=None):
        self.xp, self.lam, self.nonneg, self.drive = xp, lambda_, nonneg, drive
        self.limit = 1e6 * xp.maximum(xp.sum(primal0), 1.0)
        self.scale = scale  # max |Phi s| (device scalar) for the rounding estimate
        self.energies = []

    def value(self, a, c, r, dual=None):
        """The relative duality gap of the codes ``a`` (``c = Phi r``, ``r`` the residual; ``dual``: see
        :func:`_duality_gap`)."""
        xp = self.xp
        primal, gap, l1 = _duality_gap(a, c, r, self.lam, self.nonneg, self.drive, dual)
        ptot = xp.sum(primal)
        size = xp.maximum(xp.abs(ptot), xp.finfo(ptot.dtype).tiny)
        rel = xp.sum(gap) / size
        if self.scale is not None:
            eps = xp.finfo(a.dtype).eps  # the arithmetic's precision (the sums may be wider)
            floor = GAP_ROUNDING * eps * (1.0 + xp.sum(l1) * self.scale / size)
            rel = xp.where(rel <= floor, 0.0, rel)
        return self.guard(ptot, rel)

    def guard(self, ptot, value):
        """Record the total energy ``ptot``; ``value``, or NaN once the energy exploded or is not finite."""
        self.energies.append(ptot)
        return self.xp.where(ptot <= self.limit, value, self.xp.nan)

    def energy(self, a, r):
        """Total energy ``1/2 ||r||^2 + lambda ||a||_1 - <d, a>`` (device scalar)."""
        xp = self.xp
        e = 0.5 * xp.sum(r * r) + self.lam * xp.sum(xp.abs(a))
        return e if self.drive is None else e - xp.sum(a * self.drive)

    def energy_history(self):
        if not self.energies:
            return []
        return [float(v) for v in self.xp.stack(self.energies).tolist()]  # one host read

    def last_energy(self):
        return float(self.energies[-1]) if self.energies else float("nan")


def lasso_energy(op, s, a, lambda_, plan=None, mask=None):
    """Per-sample energy ``1/2 ||s - Phi^T a||^2 + lambda ||a||_1``, shape (N,).

    ``plan``: ``op.residual_plan(s)`` where a solver has one (the residual is then fused).
    ``mask``: a weight ``W`` broadcastable to ``s``: the weighted energy
    ``1/2 ||W . (s - Phi^T a)||^2 + lambda ||a||_1`` (``plan`` is then not used).
    """
    xp = get_xp(s, a)
    if mask is not None:
        w = check_mask(mask, s.shape, s.dtype, xp)
        r = w * (s - op.adjoint(a))
        return 0.5 * _per_sample_sum(xp, r * r) + lambda_ * _per_sample_sum(xp, xp.abs(a))
    r = s - op.adjoint(a) if plan is None else op.residual(plan, a)
    return 0.5 * _per_sample_sum(xp, r * r) + lambda_ * _per_sample_sum(xp, xp.abs(a))


def _prox(nonneg):
    return nonneg_soft_threshold if nonneg else soft_threshold


def _check_inputs(op, s, a0):
    """Shapes, dtypes, finiteness and magnitude of ``s`` and ``a0``; returns them in the working dtype
    (``s``'s own float32/float64, else the dictionary's)."""
    if not hasattr(s, "shape"):  # a list or another array-like: on the operator's namespace
        s = op.xp.asarray(s)
    if a0 is not None and not hasattr(a0, "shape"):
        a0 = op.xp.asarray(a0)
    if s.ndim != 1 + len(op.in_shape):
        raise ValueError(f"s must be a batch of samples, shape (N, {', '.join(map(str, op.in_shape))}) for this "
                         f"dictionary, got shape {tuple(s.shape)}" + (" (one sample: s[None])" if tuple(s.shape) ==
                                                                      tuple(op.in_shape) else ""))
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
    codes = xp.zeros((0, *op.out_shape), dtype=s.dtype)
    return SolveResult(codes, 0, True, [], codes=codes, energy=xp.zeros(0, dtype=s.dtype))


def _check_loop(max_iter, tol, check_every=1):
    check_integer("max_iter", max_iter, 1)
    check_integer("check_every", check_every, 1)
    return check_number("tol", tol, 0.0, allow_none=True)


def _divergence_message(what, it, e, s, remedy):
    """The cause of a non-finite / exploding energy: the inputs overflowing the dtype, else the step."""
    xp = get_xp(s)
    if not np.isfinite(float(0.5 * xp.sum(s * s))):
        return (f"{what} energy overflowed {s.dtype} at iteration {it} (energy {e:.3g}): the inputs are too "
                f"large for {s.dtype} arithmetic (max |s| = {float(xp.max(xp.abs(s))):.3g}); rescale them or "
                f"use float64")
    return f"{what} diverged at iteration {it} (energy {e:.3g}); {remedy}"


def ista(op, s, lambda_, nonneg=False, max_iter=1000, tol=1e-6, a0=None, step=None, check_every=10, mask=None):
    """Iterative shrinkage-thresholding: ``a <- T_{lambda/L}(a + (1/L) Phi (s - Phi^T a))``
    (with ``mask``: ``a <- T_{lambda/L}(a + (1/L) Phi (W^2 . (s - Phi^T a)))``, ``L`` the weighted bound).

    Parameters and result as for :func:`fista`.
    """
    return _proximal_gradient(op, s, lambda_, nonneg, max_iter, tol, a0, step, check_every, accelerate=False,
                              mask=mask)


def fista(op, s, lambda_, nonneg=False, max_iter=1000, tol=1e-6, a0=None, step=None, check_every=10, mask=None):
    """FISTA (Beck & Teboulle 2009) with gradient-based adaptive restart (O'Donoghue & Candes 2015).

    Parameters
    ----------
    op : LinearOperator (DenseOperator, ConvOperator, ...)
    s : array, inputs of the operator's input shape
    lambda_ : float >= 0
    nonneg : bool, constrain ``a >= 0``
    max_iter : int
    tol : float or None, stop at the first check where the relative duality gap (a certificate of
        the relative distance of the energy to the optimum; see the module notes) is <= ``tol``
    a0 : optional warm start
    step : optional step size, finite and in ``(0, 1/L]``; default ``1/L`` (``L`` from the operator)
    check_every : int >= 1, iterations between convergence checks
    mask : optional data weight ``W >= 0`` (or 0/1 mask) broadcastable to ``s``: minimise
        ``1/2 ||W . (s - Phi^T a)||^2 + lambda ||a||_1`` (module notes: the step bound is
        ``1/(max(W^2) L)``, ``tol`` the weighted duality gap, masked entries of ``s`` are ignored)

    Returns
    -------
    SolveResult (``codes``, ``energy`` (the weighted energy with ``mask``), ``n_iter``, ``converged``,
    ``history`` of the relative gap and ``energy_history`` at the checks); for an empty batch (N = 0) empty codes of shape ``(0, *op.out_shape)``,
    ``n_iter=0``, ``converged=True``, an empty energy and history.

    Raises
    ------
    TypeError for complex ``s`` / ``a0``; ValueError for NaN/Inf or overflowing inputs and for
    out-of-range ``lambda_``, ``max_iter``, ``tol``, ``step``, ``check_every``;
    FloatingPointError if the energy diverges.
    """
    return _proximal_gradient(op, s, lambda_, nonneg, max_iter, tol, a0, step, check_every, accelerate=True,
                              mask=mask)


class _PGState:
    """ISTA/FISTA state: codes ``a``, extrapolated point ``y`` (ISTA: ``y = a``), momentum scalar ``t``,
    ``c = Phi (s - Phi^T y)`` and the residual ``r = s - Phi^T y`` (on check steps)."""

    __slots__ = ("a", "y", "t", "c", "r")

    def __init__(self, a, y, t, c=None, r=None):
        self.a, self.y, self.t, self.c, self.r = a, y, t, c, r


def _proximal_gradient(op, s, lambda_, nonneg, max_iter, tol, a0, step, check_every, accelerate, mask=None):
    lam = check_lambda(lambda_)
    tol = _check_loop(max_iter, tol, check_every)
    if step is not None:
        step = check_number("step", step, 0.0, strict=True)
    s, a0 = _check_inputs(op, s, a0)
    op, s, _ = _weighted(op, s, mask)  # the weighted problem as a plain LASSO (module notes)
    if s.shape[0] == 0:
        return _empty_result(op, s)
    xp = get_xp(s)
    L = op.lipschitz()
    if step is None:
        step = 1.0 / L if L > 0 else 1.0
    elif step > 1.0 / L * 1.0001:
        raise ValueError(f"step {step} exceeds 1/L = {1.0 / L}: the iteration may diverge (step must be in (0, 1/L])")
    prox = _prox(nonneg)
    view = op.iteration_view()  # codes in the engine's native layout
    a = xp.zeros((s.shape[0], *view.out_shape), dtype=s.dtype) if a0 is None else view.to_inner(a0.astype(s.dtype))
    with view.frozen():
        plan = view.residual_plan(s)
        c0, r0 = view.forward_residual(plan, a)
        primal0, _ = duality_gap(a, c0, r0, lam, nonneg)
        b = c0 if a0 is None else view.forward(s)  # Phi s, the scale of the gap's rounding
        mon = _GapMonitor(xp, primal0, lam, nonneg, scale=xp.max(xp.abs(b)))
        count = [0]

        def fista_step(st):
            # st.c = Phi (s - Phi^T y), minus the gradient at y, computed at the end of the previous step
            count[0] += 1
            a_new, dots = prox_step(st.y, st.c, st.a, step, step * lam, nonneg)
            # restart momentum for samples where it points uphill: <y - a_new, a_new - a> > 0
            t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * st.t * st.t))
            beta = xp.where(dots > 0, 0.0, (st.t - 1.0) / t_new)
            y = momentum(a_new, st.a, beta)
            c, r = view.forward_residual(plan, y, residual=count[0] % check_every == 0)
            return _PGState(a_new, y, t_new, c, r)

        def ista_step(st):
            count[0] += 1
            a_new = prox(st.a + step * st.c, step * lam)
            c, r = view.forward_residual(plan, a_new, residual=count[0] % check_every == 0)
            return _PGState(a_new, a_new, 1.0, c, r)

        def monitor(st, previous):
            if not accelerate:
                return mon.value(st.a, st.c, st.r)
            # FISTA: the primal value at a needs its residual (no Phi r); the dual point is y's residual
            return mon.value(st.a, None, view.residual(plan, st.a), dual=(st.y, st.c, st.r))

        def explain(t, value):
            return _divergence_message("solver", t, mon.last_energy(), s, "reduce the step")

        state = _PGState(a, a, 1.0, c0, r0)
        res = relax(fista_step if accelerate else ista_step, state, max_iter, tol=tol, check_every=check_every,
                    monitor=monitor, what="the solver", explain=explain)
        a = res.state.a
        energy = lasso_energy(view, s, a, lam, plan)
    codes = view.to_outer(a)
    return SolveResult(codes, res.n_iter, res.converged, res.history, codes=codes, energy=energy,
                       energy_history=mon.energy_history())


@numba.njit(inline="always")
def coordinate_minimiser(v, lam, nonneg, norm):  # pragma: no cover - compiled
    """The minimiser over one coordinate: ``T_lambda(v) / norm`` with ``v = c_p + norm a_p`` (``c`` the
    correlation with the residual, ``norm`` the coordinate's squared atom norm, > 0)."""
    if nonneg:
        return max(v - lam, 0.0) / norm
    if v > lam:
        return (v - lam) / norm
    if v < -lam:
        return (v + lam) / norm
    return 0.0


@numba.njit
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
        new = coordinate_minimiser(r[p] + gpp * a[p], lam, nonneg, gpp)  # z = b_p - sum_{q != p} G_pq a_q
        d = new - a[p]
        if d != 0.0:
            row = G[p]  # G is symmetric: the contiguous row is the column
            for q in range(k):
                r[q] -= row[q] * d
            a[p] = new
            max_change = max(max_change, abs(d))
        max_a = max(max_a, abs(new))
    return max_change, max_a


@numba.njit(fastmath={"reassoc", "contract"})
def _chol_append(G, L, act, n, j):  # pragma: no cover - compiled
    """Row ``n`` of the Cholesky factor of ``G[act, act]`` when atom ``j`` joins ``act[:n]``.

    Returns False (nothing usable written) when the new pivot is below ``1e-10 G_jj``: atom ``j`` is
    (numerically) in the span of the active atoms, the restricted Gram matrix singular."""
    s = 0.0
    new = L[n]
    for i in range(n):
        row = L[i]
        v = 0.0
        for q in range(i):
            v += row[q] * new[q]
        v = (G[act[i], j] - v) / row[i]
        new[i] = v
        s += v * v
    d2 = G[j, j] - s
    if not d2 > 1e-10 * G[j, j]:
        return False
    L[n, n] = np.sqrt(d2)
    return True


@numba.njit
def _chol_delete(L, n, k):  # pragma: no cover - compiled
    """The Cholesky factor of ``A`` without its row and column ``k`` (``L``: ``n x n``, ``A = L L^T``),
    in place, ``O((n - k)^2)``: the rows below ``k`` move up, a lower Hessenberg matrix, and Givens
    rotations of neighbouring columns (``L Q Q^T L^T = A``) make it triangular again."""
    for i in range(k, n - 1):
        for j in range(i + 2):
            L[i, j] = L[i + 1, j]
    for i in range(k, n - 1):
        x, y = L[i, i], L[i, i + 1]
        r = np.hypot(x, y)
        cs, sn = x / r, y / r
        for q in range(i, n - 1):
            x, y = L[q, i], L[q, i + 1]
            L[q, i] = cs * x + sn * y
            L[q, i + 1] = cs * y - sn * x



# The path keeps the explicit inverse of the active Gram block instead of its Cholesky factor: the
# direction is then a matrix-vector product (independent row sums that vectorise) where the factor
# needs a forward and a backward substitution (a chain of dependent divisions and short dot products).
# Measured on the bench workload (1,024 patches, 256 random atoms, one thread, 2-core EPYC Zen 4): 7-8%
# less time per path with the inverse alone (54.4 -> 50.6 ms at lambda 0.5 a >= 0, 185 -> 171 ms at
# 0.1), the same steps and codes to 1e-11. Its rounding drifts with the updates (no orthogonal
# rotations), and on coherent dictionaries it does not heal: 128 Gaussian bumps of width 4 on 64
# samples, after join / leave cycles at cond(G_SS) ~ 1e7, |Gi G_SS - I| reached 3e-2 and an atom was
# refused as dependent (1-3 samples of 200 left to coordinate descent, unconverged). So the inverse
# path is the fast first try; a sample whose certificate it does not meet runs the path again with the
# Cholesky factor (Givens downdates on leaving, stable), before coordinate descent.
@numba.njit(fastmath={"reassoc", "contract"})
def _inv_append(G, Gi, act, n, j, u):  # pragma: no cover - compiled
    """``Gi`` (the inverse of ``G[act[:n], act[:n]]``, rows of an ``m x m`` array) extended by atom ``j``:
    with ``g = G[act, j]`` and ``u = Gi g``, the Schur complement ``sigma = G_jj - g.u``, the new inverse
    is ``[[Gi + u u^T / sigma, -u / sigma], [-u^T / sigma, 1 / sigma]]``, ``O(n^2)``.

    Returns False (nothing usable written) when ``sigma < 1e-10 G_jj``: atom ``j`` is (numerically) in
    the span of the active atoms (the Cholesky pivot test, ``sigma`` being the squared pivot)."""
    g = Gi[n]  # the new row holds g until it is written last
    grow = G[j]  # G is symmetric: G[act[q], j] = G[j, act[q]]
    for q in range(n):
        g[q] = grow[act[q]]
    _symv(Gi, n, g, u)
    s = 0.0
    for i in range(n):
        s += g[i] * u[i]
    sigma = G[j, j] - s
    if not sigma > 1e-10 * G[j, j]:
        return False
    inv = 1.0 / sigma
    for i in range(n):
        row = Gi[i]
        ui = u[i] * inv
        for q in range(n):
            row[q] += ui * u[q]
        row[n] = -ui
    for q in range(n):
        g[q] = -u[q] * inv
    Gi[n, n] = inv
    return True


@numba.njit(fastmath={"reassoc", "contract"})
def _inv_delete(Gi, n, k, u):  # pragma: no cover - compiled
    """``Gi`` (``n x n``, the inverse of a symmetric ``A``) made the inverse of ``A`` without its row and
    column ``k``, in place and compacted: ``Gi_-k,-k - Gi_-k,k Gi_k,-k / Gi_kk`` (the Schur complement
    of the inverse), ``O(n^2)``."""
    piv = 1.0 / Gi[k, k]
    for q in range(n):
        u[q] = Gi[k, q]
    for i in range(n):
        if i == k:
            continue
        f = Gi[i, k] * piv
        src = Gi[i]
        dst = Gi[i if i < k else i - 1]
        for q in range(k):
            dst[q] = src[q] - f * u[q]
        for q in range(k + 1, n):
            dst[q - 1] = src[q] - f * u[q]


@numba.njit(fastmath={"reassoc", "contract"})
def _symv(Gi, n, z, out):  # pragma: no cover - compiled
    """``out[:n] = Gi[:n, :n] z[:n]`` by rows (each a contiguous dot product)."""
    for i in range(n):
        row = Gi[i]
        v = 0.0
        for q in range(n):
            v += row[q] * z[q]
        out[i] = v


@numba.njit(fastmath={"reassoc", "contract"})
def _gram_direction(G, act, d, n, w):  # pragma: no cover - compiled
    """``w = G[:, act[:n]] d[:n]`` as the sum of rows ``d_i G[act_i]``, four rows a pass: a quarter of the
    loads and stores of ``w`` (0.42 -> 0.29 us at 12 active atoms of 256, 1.48 -> 0.95 us at 40; the
    path's largest cost)."""
    k = w.shape[0]
    i = 0
    if n >= 4:
        d0, d1, d2, d3 = d[0], d[1], d[2], d[3]
        r0, r1, r2, r3 = G[act[0]], G[act[1]], G[act[2]], G[act[3]]
        for q in range(k):
            w[q] = d0 * r0[q] + d1 * r1[q] + d2 * r2[q] + d3 * r3[q]
        i = 4
    else:
        for q in range(k):
            w[q] = 0.0
    while i + 4 <= n:
        d0, d1, d2, d3 = d[i], d[i + 1], d[i + 2], d[i + 3]
        r0, r1, r2, r3 = G[act[i]], G[act[i + 1]], G[act[i + 2]], G[act[i + 3]]
        for q in range(k):
            w[q] += d0 * r0[q] + d1 * r1[q] + d2 * r2[q] + d3 * r3[q]
        i += 4
    while i < n:
        di = d[i]
        row = G[act[i]]
        for q in range(k):
            w[q] += di * row[q]
        i += 1


@numba.njit(fastmath={"reassoc", "contract"})
def _chol_solve(L, n, z, out):  # pragma: no cover - compiled
    """``out[:n] = (L L^T)^{-1} z[:n]``: forward substitution by rows, backward by rows of ``L`` too
    (``L^T x = y`` as ``x_i = y_i / L_ii``, then ``y_j -= L_ij x_i`` for ``j < i``: contiguous, no
    strided column reads). Reassociated sums so the dot products vectorise: the solve was 35% of a
    path step before (n ~ 15-40 active atoms)."""
    for i in range(n):
        v = 0.0
        row = L[i]
        for j in range(i):
            v += row[j] * out[j]
        out[i] = (z[i] - v) / row[i]
    for i in range(n - 1, -1, -1):
        row = L[i]
        x = out[i] / row[i]
        out[i] = x
        for j in range(i):
            out[j] -= row[j] * x


@numba.njit
def _gram_gap(a, b, c, ss, lam, nonneg):  # pragma: no cover - compiled
    """Energy, duality gap and ``||a||_1`` of one sample from the Gram form (module notes).

    ``c = b - G a = Phi r`` and ``||r||^2 = ||s||^2 - <a, b> - <a, c>`` (``ss = ||s||^2``); the
    gap is :func:`duality_gap`'s ``1/2 (1 - beta)^2 ||r||^2 + lambda ||a||_1 - beta <a, c>``,
    whose leading terms do not cancel against ``||s||^2`` (the cancellation in ``||r||^2`` is
    multiplied by ``(1 - beta)^2``, which vanishes at the optimum)."""
    l1 = 0.0
    ab = 0.0
    ac = 0.0
    worst = 0.0
    for p in range(a.shape[0]):
        ap = a[p]
        cp = c[p]
        l1 += abs(ap)
        ab += ap * b[p]
        ac += ap * cp
        v = cp if nonneg else abs(cp)
        if v > worst:
            worst = v
    r2 = max(ss - ab - ac, 0.0)
    beta = 1.0 if worst <= lam else lam / worst
    primal = 0.5 * r2 + lam * l1
    gap = 0.5 * (1.0 - beta) ** 2 * r2 + lam * l1 - beta * ac
    return primal, max(gap, 0.0), l1


@numba.njit
def _gap_met(a, b, c, ss, bmax, lam, nonneg, tol):  # pragma: no cover - compiled
    """(relative gap, whether it is <= ``tol`` or within its rounding estimate)."""
    primal, gap, l1 = _gram_gap(a, b, c, ss, lam, nonneg)
    size = max(primal, 1e-300)
    rel = gap / size
    # c carries errors of about eps (|b| + ||a||_1) per entry (unit-diagonal G): the gap's rounding
    floor = GAP_ROUNDING * 2.220446049250313e-16 * (1.0 + l1 * (bmax + l1) / size)
    return rel, rel <= tol or rel <= floor


@numba.njit
def _recompute_c(G, b, a, c):  # pragma: no cover - compiled
    """``c = b - G a`` from scratch (after an exact solve, or to clear the drift of rank-one updates)."""
    k = b.shape[0]
    for q in range(k):
        c[q] = b[q]
    for p in range(k):
        ap = a[p]
        if ap != 0.0:
            row = G[p]
            for q in range(k):
                c[q] -= ap * row[q]


# reassociation / contraction / reciprocal division: 4-7% less time per path (99 -> 96 ms at lambda 0.5,
# 245 -> 229 ms at 0.1, one thread, the bench workload); the path's decisions stay those of float64
# comparisons, and the final support solve and the certificate do not depend on them. Tried and left
# out: float32 G for the direction w (84 vs 93 ms, 10%, at the price of 1e-7 errors in the join order),
# a branch-free vectorised scan with divisions (no gain: division-bound). The inverse of the active Gram
# block, the direction four rows of G a pass and the flags ``ok`` (inactive, nonzero atom) in one array
# for the scan, old and new interleaved (one thread; two): 61.9 -> 49.9 ms (28.9 -> 23.5) at lambda 0.5
# a >= 0, 91.7 -> 77.2 (41.5 -> 33.8) at 0.5 signed, 207.8 -> 173.7 (94.0 -> 80.1) at 0.1; same steps.
@numba.njit(fastmath={"reassoc", "contract", "arcp"})
def _homotopy(G, b, a, c, w, d, z, u, F, act, free, lam, nonneg, m, max_steps, inverse):  # pragma: no cover - compiled
    """The LASSO path (homotopy / LARS-lasso, Osborne et al. 2000, Efron et al. 2004) of one sample,
    from ``t = max|b|`` (code 0) down to ``t = lambda``, in Gram form.

    On the path the active atoms ``S`` keep ``c_S = t z_S`` (``z`` the signs; all +1 for ``a >= 0``)
    and the others ``|c_j| <= t`` (``c_j <= t``); as ``t`` falls by ``gamma`` the codes move by
    ``gamma d``, ``G_SS d = z_S``, and ``c`` by ``-gamma w``, ``w = G[:, S] d``. The step ends where an
    inactive correlation reaches the level (the atom joins), an active code reaches 0 (it leaves) or
    ``t = lambda``. ``F`` (m, m) follows each join and leave: with ``inverse`` it is ``G_SS^{-1}``,
    updated by rank-one formulas (:func:`_inv_append`, :func:`_inv_delete`; fast, but its rounding can
    drift on coherent atoms), otherwise the Cholesky factor of ``G_SS`` (:func:`_chol_append`,
    :func:`_chol_delete`; stable). At the end the codes are solved once more,
    ``a_S = G_SS^{-1} (b_S - lambda z_S)`` (with ``inverse``, plus one step of iterative refinement),
    and ``c = b - G a`` recomputed. Per step: ``O(|S| K)`` for ``w`` (contiguous rows of ``G``) and
    ``O(|S|^2)`` for the direction and the update. ``free`` (K,: the atoms that may join) and ``u``
    (K,) are work arrays.

    Returns (steps, ok); ok False (the point reached is a valid code, not the optimum) when the
    restricted Gram matrix became singular (an atom in the span of the active ones, more than
    ``m`` active) or ``max_steps`` ran out. ``a`` must be zero on entry.
    """
    k = b.shape[0]
    t = 0.0
    jmax = -1
    for j in range(k):
        c[j] = b[j]
        free[j] = G[j, j] > 0.0  # may join: inactive and not a zero atom
        v = b[j] if nonneg else abs(b[j])
        if v > t and G[j, j] > 0.0:
            t = v
            jmax = j
    if t <= lam:
        return 0, True
    if not (_inv_append(G, F, act, 0, jmax, u) if inverse else _chol_append(G, F, act, 0, jmax)):
        return 0, False
    act[0] = jmax
    free[jmax] = False
    n = 1
    dropped = -1
    steps = 0
    while True:
        steps += 1
        if steps > max_steps:
            _recompute_c(G, b, a, c)
            return steps, False
        for i in range(n):
            z[i] = 1.0 if nonneg or c[act[i]] >= 0.0 else -1.0
        if inverse:
            _symv(F, n, z, d)
        else:
            _chol_solve(F, n, z, d)
        _gram_direction(G, act, d, n, w)
        gamma = t - lam
        kind = 0
        who = -1
        for i in range(n):  # an active code reaching zero
            ap = a[act[i]]
            if ap != 0.0 and d[i] != 0.0:
                g = -ap / d[i]
                if 0.0 < g < gamma:
                    gamma, kind, who = g, 2, i
        for j in range(k):  # an inactive correlation reaching the level t - gamma
            # (t - c_j) / (1 - w_j) < gamma tested as a product: one division per new minimum only
            cj = c[j]
            wj = w[j]
            num = t - cj
            den = 1.0 - wj
            if num < gamma * den and den > 0.0 and free[j] and j != dropped:
                gamma, kind, who = max(num / den, 0.0), 1, j
            if not nonneg:
                num = t + cj
                den = 1.0 + wj
                if num < gamma * den and den > 0.0 and free[j] and j != dropped:
                    gamma, kind, who = max(num / den, 0.0), 1, j
        for i in range(n):
            a[act[i]] += gamma * d[i]
        for q in range(k):
            c[q] -= gamma * w[q]
        t -= gamma
        if kind == 0:
            break
        if kind == 1:
            if n >= m or not (_inv_append(G, F, act, n, who, u) if inverse else _chol_append(G, F, act, n, who)):
                _recompute_c(G, b, a, c)
                return steps, False
            act[n] = who
            free[who] = False
            n += 1
            dropped = -1
        else:
            p = act[who]
            a[p] = 0.0
            free[p] = True
            if inverse:
                _inv_delete(F, n, who, u)
            for i in range(who, n - 1):
                act[i] = act[i + 1]
            n -= 1
            dropped = p
            if not inverse:
                _chol_delete(F, n + 1, who)
            if n == 0:  # cannot happen for t > lambda (c would vanish); kept for safety
                _recompute_c(G, b, a, c)
                return steps, False
    # the solve on the final support and signs (clears the drift of the rank-one updates of c and a); with
    # the inverse refined once, d = F z, then d += F (z - G_SS d) (a small drift of F; the certificate decides)
    for i in range(n):
        p = act[i]
        zi = 1.0 if nonneg or a[p] > 0.0 or (a[p] == 0.0 and c[p] >= 0.0) else -1.0
        z[i] = b[p] - lam * zi
        w[i] = zi
    if inverse:
        _symv(F, n, z, d)
        for i in range(n):
            row = G[act[i]]
            v = z[i]
            for q in range(n):
                v -= row[act[q]] * d[q]
            u[i] = v
        _symv(F, n, u, z)
        for i in range(n):
            d[i] += z[i]
    else:
        _chol_solve(F, n, z, d)
    consistent = True
    for i in range(n):
        if d[i] * w[i] < 0.0:
            consistent = False
    if consistent:
        for i in range(n):
            a[act[i]] = d[i]
    _recompute_c(G, b, a, c)
    return steps, True


@numba.njit
def _polish(G, b, a, c, z, d, L, act, lam, nonneg, m):  # pragma: no cover - compiled
    """The exact minimiser on the support and signs of ``a``, ``G_SS^{-1} (b_S - lambda sign(a_S))``,
    taken when it keeps the signs (then it is the minimum of the energy on that orthant face, which
    ``a`` belongs to, so the energy does not rise); ``c`` recomputed. Returns whether it was taken."""
    k = b.shape[0]
    n = 0
    for p in range(k):
        if a[p] != 0.0:
            if n >= m:
                return False
            act[n] = p
            n += 1
    if n == 0:
        return False
    for i in range(n):
        if not _chol_append(G, L, act, i, act[i]):
            return False
    for i in range(n):
        z[i] = b[act[i]] - lam * (1.0 if a[act[i]] > 0.0 else -1.0)
    _chol_solve(L, n, z, d)
    for i in range(n):
        if d[i] * a[act[i]] <= 0.0:
            return False
    for i in range(n):
        a[act[i]] = d[i]
    _recompute_c(G, b, a, c)
    return True


@numba.njit
def _dense_sample(G, B, SS, A, phi, S, lam, nonneg, warm, max_iter, tol, m, n_iter_out, gap_out, met_out, energy_out, i):  # pragma: no cover - compiled
    """One sample of :func:`_dense_kernel`. Kept out of the parallel loop, and its helpers not inlined at
    numba's IR level: the parfor pass and IR inlining re-type a large body many times (compile time of the
    kernel measured 26 s before, 12 s after, 2-core AMD EPYC under load; its run time unchanged within the
    noise on the dense LASSO workload)."""
    k = B.shape[1]
    a = A[i]
    b = B[i]
    c = np.empty(k)
    w = np.empty(k)
    d = np.empty(k)
    z = np.empty(k)
    L = np.empty((m, m))  # the Cholesky factor (or the path's inverse) of the active Gram block
    act = np.empty(k, dtype=np.int64)
    free = np.empty(k, dtype=np.bool_)
    u = np.empty(k)
    bmax = 0.0
    for p in range(k):
        bmax = max(bmax, abs(b[p]))
    steps = 0
    met = False
    if warm:  # the warm start as it is, or solved exactly on its support and signs, if certified
        _recompute_c(G, b, a, c)
        rel, met = _gap_met(a, b, c, SS[i], bmax, lam, nonneg, tol)
        if not met and _polish(G, b, a, c, z, d, L, act, lam, nonneg, m):
            rel, met = _gap_met(a, b, c, SS[i], bmax, lam, nonneg, tol)
        if not met:
            for p in range(k):
                a[p] = 0.0
    if not met:  # the path with the inverse of the active Gram block; again with its Cholesky factor if need be
        steps, _ = _homotopy(G, b, a, c, w, d, z, u, L, act, free, lam, nonneg, m, 4 * k + 16, True)
        rel, met = _gap_met(a, b, c, SS[i], bmax, lam, nonneg, tol)
        if not met:
            for p in range(k):
                a[p] = 0.0
            more, _ = _homotopy(G, b, a, c, w, d, z, u, L, act, free, lam, nonneg, m, 4 * k + 16, False)
            steps += more
            rel, met = _gap_met(a, b, c, SS[i], bmax, lam, nonneg, tol)
    # coordinate descent where the path met a singular restricted Gram matrix (degenerate
    # dictionaries): a full sweep, the certificate, sweeps over the active set until they
    # settle, an exact solve on the support found, the certificate
    everything = np.arange(k)
    sweeps = 0
    while not met and sweeps < max_iter:
        sweeps += 1
        _cd_sweep(G, c, a, lam, nonneg, everything, k)
        rel, met = _gap_met(a, b, c, SS[i], bmax, lam, nonneg, tol)
        if met:
            break
        n_act = 0
        for p in range(k):
            if a[p] != 0.0:
                act[n_act] = p
                n_act += 1
        while sweeps < max_iter:
            sweeps += 1
            change, amax = _cd_sweep(G, c, a, lam, nonneg, act, n_act)
            if change <= 1e-3 * max(amax, 1e-300):
                break
        if _polish(G, b, a, c, z, d, L, act, lam, nonneg, m):
            rel, met = _gap_met(a, b, c, SS[i], bmax, lam, nonneg, tol)
    n_iter_out[i] = steps + sweeps
    gap_out[i] = rel
    met_out[i] = met
    # the energy from the residual itself, r = s - sum_p a_p phi_p over the few nonzero codes (exact in
    # float64; the Gram form's ||s||^2 - <a, b> - <a, c> cancels where the residual is small)
    r = S[i].copy()
    l1 = 0.0
    for p in range(k):
        ap = a[p]
        if ap != 0.0:
            l1 += abs(ap)
            row = phi[p]
            for q in range(r.shape[0]):
                r[q] -= ap * row[q]
    energy_out[i] = 0.5 * np.dot(r, r) + lam * l1


@njit_cached(parallel=True)
def _dense_kernel(G, B, SS, A, phi, S, lam, nonneg, warm, max_iter, tol, m, n_iter_out, gap_out, met_out,
                  energy_out):  # pragma: no cover
    for i in numba.prange(B.shape[0]):
        _dense_sample(G, B, SS, A, phi, S, lam, nonneg, warm, max_iter, tol, m, n_iter_out, gap_out, met_out,
                      energy_out, i)


def coordinate_descent(op, s, lambda_, nonneg=False, max_iter=1000, tol=1e-8, a0=None, mask=None):
    """The exact dense route: the LASSO path (homotopy) per sample on the Gram form, coordinate
    descent where the path cannot finish; one sample per thread (numba, CPU).

    Minimises ``1/2 a^T G a - b^T a + lambda |a|_1`` (``+ 1/2 ||s||^2``: the LASSO energy) with
    ``G = Phi Phi^T``, ``b = Phi s`` (one GEMM each for the batch). Each sample follows the LASSO
    path from ``lambda = max|Phi s|`` (code 0) down to ``lambda_`` (:func:`_homotopy`, ``O(|S| K)`` per
    path step, ``|S|`` the active atoms), first with rank-one updates of the inverse of the active Gram
    block (fast), and, where its certificate falls short (its rounding drifts on coherent atoms), again
    with the Cholesky factor (exact up to rounding). A sample is done once its relative duality gap (the
    certificate of :func:`duality_gap`, from ``c = b - G a``) is <= ``tol`` (a gap within its rounding
    estimate counts as zero); the path's end meets any ``tol`` but on degenerate dictionaries (an atom
    (numerically) in the span of the active ones: duplicates, more than ``D`` active, restricted Gram
    blocks with condition numbers beyond about 1e10), where cyclic coordinate descent,
    ``a_p <- T_lambda(b_p - sum_{q != p} G_pq a_q) / G_pp``, takes over from the point reached (full
    sweeps, sweeps over the active set, then the exact solve on the support found) for at most
    ``max_iter`` sweeps.

    ``a0`` (a warm start: the previous batch's codes, a FISTA answer) is a shortcut: if its gap, or
    that of the exact solve on its support and signs (``G_SS^{-1} (b_S - lambda sign(a0_S))``), meets
    ``tol`` it is returned; otherwise the sample follows the path as without it. Measured on the
    bench's 1,024 patches (loaded machine): from the optimum 48-53 ms, from a FISTA answer at gap
    1e-5 55 / 96 ms (lambda 0.5 / 0.1), against 211 / 477 ms for the path; coordinate descent from
    those FISTA answers, tried first, was slower than the path and did not reach a 1e-8 gap in 1,000
    sweeps on that coherent dictionary. With ``nonneg`` ``a0`` is first clipped at 0.

    The arithmetic is float64 whatever the dtype of ``s``; the codes come back in it. ``n_iter``
    is the largest per-sample count of path steps plus sweeps; ``converged`` whether every sample
    met ``tol``; ``history`` the one check, ``[(n_iter, sum of gap_n / sum of E_n)]``. Input checks
    and the empty-batch result as for :func:`fista` (``max_iter`` >= 1, ``tol`` >= 0 or None for 0).
    ``mask``: the weighted problem (:func:`fista`), on ``G = Phi D^2 Phi^T``, ``b = Phi (W^2 . s)``:
    one Gram matrix for a weight shared by the batch, one per sample otherwise.

    Measured against SPAMS's LARS and scikit-learn (bench/peers/lasso.py: 1,024 8x8 natural-image
    patches, 256 random unit atoms, float64, to equal energy, medians of 3 interleaved, 2-core Xeon
    with AVX-512, loaded: float32 GEMM 17-62 GFLOP/s; two runs): lambda 0.5 1.65x / 2.25x SPAMS
    (319 / 172 ms), 6.0x / 7.2x scikit-learn lasso_cd, 28x lasso_lars; lambda 0.1 1.09x / 1.33x
    SPAMS, 11x / 16x lasso_cd; lambda 0.5, a >= 0: 2.0x / 1.21x SPAMS. The previous cyclic coordinate
    descent (coordinate-change stop) took 0.40-0.74 s at lambda 0.5 and hit 1,000 sweeps without
    reaching the optimum (energy excess 6e-7-6e-4 relative). Those figures are of the Cholesky path;
    with the inverse-updating path, the direction four rows of ``G`` a pass and the energies from the
    kernel (2-core EPYC Zen 4, 2026-12-02; the kernel alone 1.17-1.24x faster, same steps): lambda 0.5
    a >= 0 32.7 vs 45.5 ms (1.39x; 39.4 vs 38.5 ms before the change), lambda 0.5 41.2 vs 48.5 ms
    (1.18x), lambda 0.1 92.2 vs 104 ms (1.13x); bench.peers (the current figures, with the peers' too)
    1.17-1.18x at all three.

    ``energy`` is computed in the kernel from each sample's residual in float64 (exact for the
    returned codes when ``s`` is float64); for other dtypes it is :func:`lasso_energy` of the codes
    rounded to the dtype.
    """
    if not isinstance(op, DenseOperator):
        raise TypeError("coordinate_descent needs a DenseOperator (dense (K, D) atoms)")
    lam = check_lambda(lambda_)
    tol = _check_loop(max_iter, tol)
    if tol is None:
        tol = 0.0
    s, a0 = _check_inputs(op, s, a0)
    w = check_mask(mask, s.shape, s.dtype, get_xp(s))
    if s.shape[0] == 0:
        return _empty_result(op, s)
    xp = get_xp(s)
    phi = np.asarray(to_numpy(op.W), dtype=np.float64)
    if not np.isfinite(phi).all():
        raise ValueError("the dictionary op.W contains NaN or Inf")
    S = np.ascontiguousarray(to_numpy(s), dtype=np.float64)  # (no copy for float64 data)
    n, k = S.shape[0], phi.shape[0]
    A = np.zeros((n, k)) if a0 is None else np.array(to_numpy(a0), dtype=np.float64)
    if nonneg and a0 is not None:
        np.maximum(A, 0.0, out=A)  # a feasible warm start (its projection) for the certificate
    m = min(k, phi.shape[1])  # at most D atoms have a nonsingular restricted Gram matrix
    n_iter = np.zeros(n, dtype=np.int64)
    rel = np.zeros(n)
    met = np.zeros(n, dtype=np.bool_)
    e = np.zeros(n)
    if w is None:
        groups = [(slice(None), phi, S)]
    else:
        W = to_numpy(w).astype(np.float64)
        sl = [slice(None)] if W.shape[0] == 1 else [slice(i, i + 1) for i in range(n)]
        groups = [(g, phi * W[g][0], S[g] * W[g]) for g in sl]  # the Gram matrix of Phi D per weight
    for g, pw, sw in groups:
        Ag = np.ascontiguousarray(A[g])
        ng, rg, mg = np.zeros(Ag.shape[0], dtype=np.int64), np.zeros(Ag.shape[0]), np.zeros(Ag.shape[0], np.bool_)
        eg = np.zeros(Ag.shape[0])
        pw, sw = np.ascontiguousarray(pw), np.ascontiguousarray(sw)
        # G and b with single-threaded BLAS: after a threaded call OpenBLAS's idle
        # threads spin on the cores the path's numba threads need (bench workload, 1,024 x 64 patches, 256
        # atoms, 2-core EPYC Zen 4: 88.8 ms a call with threaded BLAS here, 61.7 ms without, the kernel
        # alone 52.6 ms; the products take well under a millisecond on one thread)
        with blas_single_thread():
            G, B = pw @ pw.T, sw @ pw.T
        _dense_kernel(G, B, np.einsum("nd,nd->n", sw, sw), Ag, pw, sw, lam, bool(nonneg), a0 is not None,
                      int(max_iter), float(tol), m, ng, rg, mg, eg)
        A[g], n_iter[g], rel[g], met[g], e[g] = Ag, ng, rg, mg, eg
    codes = xp.asarray(A.astype(s.dtype, copy=False))
    if s.dtype == np.float64:  # the kernel's energies are those of these codes (2.4 of 38 ms a call otherwise)
        energy = xp.asarray(e)
    else:  # those of the codes rounded to the dtype, in it
        with blas_single_thread():  # (a threaded product here leaves spinning threads for the next call's kernel)
            energy = lasso_energy(op, s, codes, lam, mask=w)
        e = to_numpy(energy).astype(np.float64)
    total = float(np.sum(rel * e) / max(float(np.sum(e)), 1e-300))
    return SolveResult(codes, int(n_iter.max()), bool(met.all()), [(int(n_iter.max()), total)], codes=codes,
                       energy=energy)
