"""Linear dictionary operators for the LASSO problems (DESIGN.md §5).

Every solver sees a dictionary through two maps:

* ``analysis(s)``  = ``Phi s``   (input drive; dense: ``s @ Phi.T``; conv: ``conv(s, Phi)``)
* ``synthesis(a)`` = ``Phi^T a`` (reconstruction; dense: ``a @ Phi``; conv: ``conv_transpose(a, Phi)``)
* ``residual_analysis(plan, a)`` = ``Phi (s - Phi^T a)`` with ``plan = residual_plan(s)``:
  the LCA drive and minus the gradient of the smooth part (fused on the CPU for convolutions)

and the Lipschitz constant ``L = ||Phi||_2^2``, the largest eigenvalue of
``Phi Phi^T`` (power iteration for convolutions).

An operator's dtype is its dictionary's: ``phi`` must be float32 or float64
(a ``TypeError`` naming ``phi`` otherwise, complex included; cast a float16
dictionary with ``phi.astype(np.float32)``). The maps accept an empty batch
(N = 0) and return empty arrays of the matching shape.
"""
from __future__ import annotations

import copy

import numpy as np

from ..backend import get_xp, to_numpy
from ..ops.conv import ConvOperator

__all__ = ["DenseDictionary", "ConvDictionary", "power_iteration"]


def _check_phi(phi):
    dtype = getattr(phi, "dtype", None)
    if dtype is None or dtype not in (np.float32, np.float64):
        raise TypeError(
            f"phi must be a float32 or float64 array, got {dtype if dtype is not None else type(phi).__name__}"
            + ("; cast it first, e.g. phi.astype(np.float32)" if dtype is not None and dtype.kind in "biuf" else "")
        )


def power_iteration(apply_gram, shape, xp, dtype, n_iter=100, seed=0, v0=None):
    """Largest eigenvalue of a symmetric PSD map by power iteration.

    Parameters
    ----------
    apply_gram : callable, v -> G v
    shape : shape of ``v``
    v0 : optional warm start (e.g. the previous estimate's vector after a
        small dictionary update)

    Returns
    -------
    (eigenvalue estimate as a Python float, final unit vector)
    """
    if v0 is None:
        v = xp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype=dtype)
    else:
        v = v0
    v = v / xp.sqrt(xp.sum(v * v))
    lam = 0.0
    for _ in range(n_iter):
        w = apply_gram(v)
        lam = xp.sum(v * w)
        v = w / xp.sqrt(xp.sum(w * w))
    return float(lam), v


class DenseDictionary:
    """Fully connected dictionary ``Phi`` of shape (K, D), atoms as rows.

    ``analysis``: (N, D) -> (N, K); ``synthesis``: (N, K) -> (N, D).
    """

    def __init__(self, phi):
        _check_phi(phi)
        if phi.ndim != 2:
            raise ValueError(f"dense dictionary must have shape (K, D), got shape {tuple(phi.shape)}")
        self.phi = phi
        self.xp = get_xp(phi)
        self.n_atoms, self.n_features = phi.shape
        self._L = None

    def set_weights(self, phi):
        """Use new atoms of the same shape (the Lipschitz constant is recomputed on demand)."""
        _check_phi(phi)
        if tuple(phi.shape) != (self.n_atoms, self.n_features):
            raise ValueError(f"phi must keep shape {(self.n_atoms, self.n_features)}, got {tuple(phi.shape)}")
        self.phi = phi
        self._L = None

    def analysis(self, s):
        return s @ self.phi.T

    def synthesis(self, a):
        return a @ self.phi

    def residual_plan(self, s):
        """``s`` prepared for :meth:`residual_analysis` (for a solve's duration)."""
        return {"s": s}

    def residual(self, plan, a, resid):
        """Write ``s - Phi^T a`` into ``resid``."""
        resid[...] = plan["s"] - self.synthesis(a)
        return resid

    def residual_analysis(self, plan, a, resid=None):
        """``Phi (s - Phi^T a)``; with ``resid`` the residual ``s - Phi^T a`` is also written there."""
        r = plan["s"] - self.synthesis(a)
        if resid is not None:
            resid[...] = r
        return self.analysis(r)

    def code_shape(self, n):
        return (n, self.n_atoms)

    def forward(self, s):
        return self.analysis(s)

    def adjoint(self, a):
        return self.synthesis(a)

    def input_shape(self, n):
        return (n, self.n_features)

    def gram(self):
        """``Phi Phi^T`` (K, K)."""
        return self.phi @ self.phi.T

    def lipschitz(self):
        """``||Phi||_2^2`` exactly (largest singular value squared, on the host)."""
        if self._L is None:
            self._L = float(np.linalg.norm(to_numpy(self.phi).astype(np.float64), 2) ** 2)
        return self._L


class ConvDictionary:
    """Convolutional dictionary ``Phi`` of shape (K, C, *k) for inputs of spatial shape ``in_shape``.

    ``analysis``: (N, C, *L) -> (N, K, *O); ``synthesis``: (N, K, *O) -> (N, C, *L),
    with the exact PyTorch conv / conv_transpose semantics (so the energy is
    the exact cropped objective at the borders for any padding). With
    ``layout="channels_last"`` codes are (N, *O, K): the solvers' inner
    layout on the CPU im2col engine, where it saves two transposes a step.
    """

    def __init__(self, phi, in_shape, stride=1, padding="same", method="auto", layout="channels_first"):
        if layout not in ("channels_first", "channels_last"):
            raise ValueError(f"layout must be 'channels_first' or 'channels_last', got {layout!r}")
        _check_phi(phi)
        self.op = ConvOperator(phi, in_shape, stride, padding, method)
        self.op_cl = ConvOperator(phi, in_shape, stride, padding, method, code_layout="channels_last")
        self.channels_last = layout == "channels_last"
        self.phi = phi
        self.xp = self.op.xp
        g = self.op.geometry
        self.n_atoms, self.n_channels = g.n_out, g.n_in
        self.in_shape, self.out_shape = g.in_shape, g.out_shape
        self._L = None

    def set_weights(self, phi):
        """Use new atoms of the same shape: the plan is updated, the Lipschitz constant recomputed on demand."""
        _check_phi(phi)
        self.op.update_weights(phi)
        self.op_cl.update_weights(phi)
        self.phi = phi
        self._L = None

    def residual_plan(self, s):
        """``s`` prepared for :meth:`residual_analysis` (for a solve's duration: the plan holds a
        padded copy, so a later in-place change of ``s`` needs a new plan)."""
        return self._o.residual_plan(s)

    @property
    def _o(self):
        return self.op_cl if self.channels_last else self.op

    def residual(self, plan, a, resid):
        """Write ``s - Phi^T a`` into ``resid`` (fused per core on the CPU with channels-last codes)."""
        resid[...] = self._o.residual(plan, a)
        return resid

    def residual_analysis(self, plan, a, resid=None):
        """``Phi (s - Phi^T a)`` (fused per core on the CPU with channels-last codes); with ``resid``
        the residual ``s - Phi^T a`` is also written there."""
        c, r = self._o.forward_residual(plan, a, resid is not None)
        if resid is not None:
            resid[...] = r
        return c

    def analysis(self, s):
        return self._o.forward(s)

    def synthesis(self, a):
        return self._o.adjoint(a)

    def forward(self, s):
        return self.analysis(s)

    def adjoint(self, a):
        return self.synthesis(a)

    def code_shape(self, n):
        if self.channels_last:
            return (n, *self.out_shape, self.n_atoms)
        return (n, self.n_atoms, *self.out_shape)

    def input_shape(self, n):
        return (n, self.n_channels, *self.in_shape)

    def with_layout(self, layout):
        """The same operator (shared plan and Lipschitz estimate) with codes in another layout."""
        other = copy.copy(self)
        other.channels_last = layout == "channels_last"
        return other

    def lipschitz(self, n_iter=60):
        """Largest eigenvalue of ``Phi Phi^T`` on the code space (power iteration, +1% margin).

        Always from the same seeded start vector, so the estimate (and the FISTA step) is a
        function of the weights alone and resumed training reproduces an uninterrupted run.
        """
        if self._L is None:
            lam, _ = power_iteration(lambda v: self.analysis(self.synthesis(v)), self.code_shape(1), self.xp,
                                     self.phi.dtype, n_iter)
            self._L = 1.01 * lam
        return self._L
