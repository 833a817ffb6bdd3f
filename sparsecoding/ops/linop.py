"""The linear-operator contract (DESIGN.md §2) and the dense operator.

A linear operator ``A`` maps a batch of inputs ``x (N, *in_shape)`` to
``y (N, *out_shape)``; public shapes are channels-first. What every operator
provides:

* ``forward(x) = A x`` and ``adjoint(y) = A^T y`` with ``<A x, y> = <x, A^T y>``
  (checked by :func:`dottest`, which the tests run over every operator);
* ``weight_grad(x, y)``: ``d<A x, y>/dW`` for operators with weights ``W``;
* ``lipschitz()``: the largest eigenvalue of ``A A^T`` (= ``||A||_2^2``), the
  step bound of gradient methods on ``1/2 ||s - A^T a||^2``;
* ``residual_plan(s)`` and ``forward_residual(plan, a) -> (A (s - A^T a), s - A^T a)``:
  the LASSO solvers' fused step (the operator's analysis of its own residual);
  the default composes ``adjoint`` and ``forward``, operators may fuse it;
  ``forward_residual(plan, a, residual=False)`` skips writing the residual out
  (``(c, None)``) and ``residual(plan, a)`` computes only ``s - A^T a``;
* ``iteration_view()``: the same map with its output (codes) in the layout the
  engine iterates fastest in, fixed when the operator was built, with
  ``to_inner(a)`` / ``to_outer(a)`` converting codes between the operator's public
  layout and the view's (identity where they agree). Solvers iterate on the view
  and hand back public arrays;
* ``frozen()``: a context in which the weights promise not to change (operands
  derived from them are computed once, e.g. an FFT kernel spectrum).

For a dictionary ``Phi`` with atoms as rows, ``forward`` is the analysis
``Phi s`` (the LCA input drive) and ``adjoint`` the synthesis ``Phi^T a``
(the reconstruction).
"""
from __future__ import annotations

import math

import numpy as np

from contextlib import nullcontext

from ..backend import get_xp

__all__ = ["LinearOperator", "DenseOperator", "dottest", "power_iteration"]


def power_iteration(apply_gram, shape, xp, dtype, n_iter=100, seed=0, v0=None, tol=None, check_every=10):
    """Largest eigenvalue of a symmetric positive semi-definite map ``v -> G v``.

    Returns ``(estimate as a Python float, final unit vector)``; ``v0`` warm-starts
    (e.g. the previous vector after a small dictionary update). With ``tol``, ``n_iter`` is a
    maximum: the iteration stops once the estimate grew by at most ``tol`` (relative) over the
    last ``check_every`` iterations (one host read per check; the estimate only grows).
    """
    v = xp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype=dtype) if v0 is None else v0
    v = v / xp.sqrt(xp.sum(v * v))
    lam, last = 0.0, None
    for i in range(1, n_iter + 1):
        w = apply_gram(v)
        lam = xp.sum(v * w)
        v = w / xp.sqrt(xp.sum(w * w))
        if tol is not None and i % check_every == 0:
            value = float(lam)
            if last is not None and value - last <= tol * abs(value):
                break
            last = value
    return float(lam), v


class LinearOperator:
    """Base class of the operator contract; subclasses set ``in_shape``, ``out_shape``, ``dtype``,
    ``xp`` and implement ``forward`` and ``adjoint`` (and ``weight_grad`` where there are weights)."""

    in_shape: tuple
    out_shape: tuple

    def forward(self, x):
        raise NotImplementedError

    def adjoint(self, y):
        raise NotImplementedError

    def weight_grad(self, x, y):
        raise NotImplementedError(f"{type(self).__name__} has no weights")

    def lipschitz(self, n_iter=100, seed=0):
        """Largest eigenvalue of ``A A^T`` by power iteration on ``A^T A`` (same top eigenvalue)."""
        lam, _ = power_iteration(lambda v: self.adjoint(self.forward(v)), (1, *self.in_shape), self.xp, self.dtype,
                                 n_iter=n_iter, seed=seed)
        return lam

    def residual_plan(self, s):
        """``s`` prepared for repeated :meth:`forward_residual` calls (here: ``s`` itself)."""
        return s

    def forward_residual(self, plan, a, residual=True):
        """``(A r, r)`` with ``r = s - A^T a``, ``s`` the planned input (``(A r, None)`` without ``residual``)."""
        r = plan - self.adjoint(a)
        return self.forward(r), (r if residual else None)

    def residual(self, plan, a):
        """``r = s - A^T a`` alone."""
        return plan - self.adjoint(a)

    def iteration_view(self):
        """The operator the solvers iterate with (here: itself; see the module notes)."""
        return self

    def to_inner(self, a):
        """Codes in the operator's public layout, converted to this view's (identity here)."""
        return a

    def to_outer(self, a):
        """Codes in this view's layout, converted to the public one (identity here)."""
        return a

    def frozen(self):
        """Context in which the weights do not change (nothing to cache here)."""
        return nullcontext(self)


class DenseOperator(LinearOperator):
    """``x -> x W^T`` for a weight matrix ``W (K, D)`` (atoms / output units as rows).

    ``forward``: (N, D) -> (N, K); ``adjoint``: (N, K) -> (N, D); ``weight_grad(x, y) = y^T x``
    (K, D), the derivative of ``<x W^T, y>`` in ``W``. ``W`` is used as given (in-place
    changes are seen at the next call); float32 or float64.
    """

    def __init__(self, W):
        self._check_weights(W)
        if W.ndim != 2:
            raise ValueError(f"W must have shape (K, D), got shape {tuple(W.shape)}")
        self.W, self.xp, self.dtype = W, get_xp(W), W.dtype
        self.out_shape, self.in_shape = (W.shape[0],), (W.shape[1],)

    @staticmethod
    def _check_weights(W):
        dtype = getattr(W, "dtype", None)
        if dtype is None or dtype not in (np.float32, np.float64):
            raise TypeError(
                f"W must be a float32 or float64 array, got {dtype if dtype is not None else type(W).__name__}"
                + ("; cast it first, e.g. W.astype(np.float32)" if dtype is not None and dtype.kind in "biuf" else ""))

    def update_weights(self, W):
        """Use a new weight matrix of the same shape (in-place changes of ``W`` need no call)."""
        self._check_weights(W)
        if tuple(W.shape) != (self.out_shape[0], self.in_shape[0]):
            raise ValueError(f"W must keep shape {(self.out_shape[0], self.in_shape[0])}, got {tuple(W.shape)}")
        self.W = W

    def gram(self):
        """``W W^T`` (K, K): the precomputed lateral term of the dense LCA."""
        return self.W @ self.W.T

    def _check(self, a, shape, name):
        if a.ndim != 2 or tuple(a.shape[1:]) != shape:
            raise ValueError(f"{name} must have shape (N, {shape[0]}), got shape {tuple(a.shape)}")

    def forward(self, x):
        self._check(x, self.in_shape, "x")
        return x @ self.W.T

    def adjoint(self, y):
        self._check(y, self.out_shape, "y")
        return y @ self.W

    def forward_residual(self, plan, a, residual=True):
        r = plan - a @ self.W
        return r @ self.W.T, (r if residual else None)

    def residual(self, plan, a):
        return plan - a @ self.W

    def weight_grad(self, x, y):
        self._check(x, self.in_shape, "x")
        self._check(y, self.out_shape, "y")
        return y.T @ x

    def lipschitz(self, n_iter=None, seed=0):
        """``||W||_2^2`` exactly (largest singular value, from the smaller Gram matrix)."""
        W = self.W.astype(np.float64)
        G = W @ W.T if W.shape[0] <= W.shape[1] else W.T @ W
        if not bool(self.xp.isfinite(G).all()):  # (eigvalsh would fail with "Eigenvalues did not converge")
            raise ValueError("the weights W contain NaN or Inf (or values too large to square)")
        return float(self.xp.linalg.eigvalsh(G)[-1])


def dottest(op, n=2, seed=0, rtol=None):
    """Check ``<A x, y> == <x, A^T y>`` on random ``x``, ``y``; returns the two sides.

    Raises ``AssertionError`` when they differ by more than ``rtol`` relative to their size
    (default: 1e-10 for float64 operators, 1e-4 for float32).
    """
    xp = op.xp
    rng = np.random.default_rng(seed)
    x = xp.asarray(rng.standard_normal((n, *op.in_shape)), dtype=op.dtype)
    y = xp.asarray(rng.standard_normal((n, *op.out_shape)), dtype=op.dtype)
    lhs = float(xp.sum((op.forward(x) * y).astype(np.float64)))
    rhs = float(xp.sum((x * op.adjoint(y)).astype(np.float64)))
    if rtol is None:
        rtol = 1e-10 if np.dtype(op.dtype) == np.float64 else 1e-4
    scale = max(abs(lhs), abs(rhs), math.sqrt(math.prod(op.in_shape) * math.prod(op.out_shape)) * n * 1e-30)
    if abs(lhs - rhs) > rtol * scale:
        raise AssertionError(f"{type(op).__name__} fails the dot test: <A x, y> = {lhs!r}, <x, A^T y> = {rhs!r} "
                             f"(relative difference {abs(lhs - rhs) / scale:.3g} > {rtol:g})")
    return lhs, rhs
