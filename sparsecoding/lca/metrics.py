"""lca-pytorch's metric functions (``lcapt.metric``) on numpy / cupy arrays.

Shapes are the layers' public ones: codes ``(N, K, *spatial)`` (dense ``(N, K)``), inputs and
reconstructions ``(N, C, *spatial)``. Per-sample norms are averaged over the batch:

- :func:`compute_frac_active`: fraction of nonzero entries of ``acts`` (a Python float);
- :func:`compute_l1_sparsity`: ``lambda_ * mean_n ||a_n||_1`` (0-d array of the input dtype);
- :func:`compute_l2_error`: ``1/2 mean_n ||s_n - recon_n||^2`` (0-d array of the input dtype);
- :func:`compute_times_active_by_feature`: per feature ``k`` the number of nonzero entries of
  ``acts[:, k]`` over the batch and positions, shape ``(K, 1, ..., 1)`` with ``acts.ndim`` axes
  (the shape that broadcasts against the conv weights ``(K, C, *kernel)`` in the dictionary step).

The sums stay on the arrays' device: no host read except in :func:`compute_frac_active`, which
returns a float as lca-pytorch's does (``.item()``). The layers' tracked metrics
(``track_metrics=True``) are these quantities at every iteration.
"""
from __future__ import annotations

from ..backend import get_xp

__all__ = ["compute_frac_active", "compute_l1_sparsity", "compute_l2_error", "compute_times_active_by_feature"]


def _array(x, name, min_ndim=1):
    xp = get_xp(x)
    x = xp.asarray(x)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} axes (batch first), got shape {tuple(x.shape)}")
    return xp, x


def _float(xp, x):
    return x if x.dtype.kind == "f" else x.astype(xp.float64)


def compute_frac_active(acts):
    """Fraction of the entries of ``acts`` that are nonzero, as a Python float (0.0 for an empty array)."""
    xp, acts = _array(acts, "acts")
    return float(xp.count_nonzero(acts)) / acts.size if acts.size else 0.0


def compute_l1_sparsity(acts, lambda_):
    """``lambda_ * mean over the batch of ||a_n||_1`` (0-d array of the dtype of ``acts``)."""
    xp, acts = _array(acts, "acts")
    acts = _float(xp, acts)
    n = acts.shape[0]
    if n == 0:
        return xp.zeros((), dtype=acts.dtype)
    per_sample = xp.sum(xp.abs(acts.reshape(n, -1)), axis=1)
    return (lambda_ * xp.mean(per_sample)).astype(acts.dtype)


def compute_l2_error(inputs, recons):
    """``1/2 mean over the batch of ||s_n - recon_n||^2`` (0-d array of the dtype of ``inputs``)."""
    xp, inputs = _array(inputs, "inputs")
    _, recons = _array(recons, "recons")
    if tuple(inputs.shape) != tuple(recons.shape):
        raise ValueError(f"inputs and recons must have the same shape, got {tuple(inputs.shape)} and "
                         f"{tuple(recons.shape)}")
    err = _float(xp, inputs - recons)
    n = err.shape[0]
    if n == 0:
        return xp.zeros((), dtype=err.dtype)
    return (0.5 * xp.mean(xp.sum((err * err).reshape(n, -1), axis=1))).astype(err.dtype)


def compute_times_active_by_feature(acts):
    """Number of nonzero entries per feature (axis 1), summed over the batch and the positions.

    Returns a float array of shape ``(K, 1, ..., 1)`` with ``acts.ndim`` axes (``(K, 1)`` for dense
    codes ``(N, K)``), as lca-pytorch's function.
    """
    xp, acts = _array(acts, "acts", min_ndim=2)
    axes = (0,) + tuple(range(2, acts.ndim))
    dtype = acts.dtype if acts.dtype.kind == "f" else xp.float32
    counts = xp.sum((acts != 0).astype(dtype), axis=axes)
    return counts.reshape((acts.shape[1],) + (1,) * (acts.ndim - 1))
