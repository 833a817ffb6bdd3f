"""Masks and weights for the LCA layers: masked standardisation and the masks of dictionary learning.

The weighted energy of a sample (see :mod:`sparsecoding.solvers.lasso`, "Masks and weights")::

    E(a) = 1/2 ||W . (s - Phi^T a)||^2 + lambda ||a||_1,     W >= 0 broadcastable to s

A 0/1 mask marks missing or untrusted entries (``W = 0``); they influence nothing. The
layers' per-sample standardisation (``input_zero_mean`` / ``input_unit_var``) then uses
statistics weighted by ``W^2`` (:func:`masked_standardize`: the mean is the constant that best
fits the sample in the weighted norm; for a 0/1 mask, the mean and standard deviation of the
observed entries), and sets the masked entries of the result to 0.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_xp
from ..solvers.lasso import check_mask

__all__ = ["masked_standardize", "check_fit_mask", "batch_mask"]


def masked_standardize(x, weight, zero_mean=True, unit_var=True, eps=1e-12, ddof=1):
    """Per-sample zero mean / unit variance of ``x (N, ...)`` from the entries weighted by ``weight^2``:
    :func:`~sparsecoding.data.preprocessing.standardize` (same ``eps`` and ``ddof`` defaults,
    lca-pytorch's) with a mask.

    With ``v = weight^2`` (broadcast to ``x``), per sample: ``V1 = sum v``, mean
    ``m = sum v x / V1``, variance ``sum v (x - m)^2 / (V1 - ddof V2 / V1)`` with ``V2 = sum v^2``
    (reliability weights: for a 0/1 mask this is the ``ddof`` variance of the observed entries,
    for a constant weight the unweighted one). The result is ``(x - m) / (std + eps)`` (as
    configured) where ``weight > 0`` and 0 where ``weight == 0``; a sample with no weight at all
    comes back as zeros (and one with ``V1 <= ddof V2 / V1``, e.g. a single observed entry, is only
    centred). The values of ``x`` where ``weight == 0`` do not enter (exactly).
    """
    xp = get_xp(x)
    axes = tuple(range(1, x.ndim))
    observed = xp.broadcast_to(weight != 0, x.shape)
    x = xp.where(observed, x, 0)
    v = xp.broadcast_to(weight * weight, x.shape).astype(x.dtype, copy=False)
    tiny = np.finfo(x.dtype).tiny
    v1 = xp.sum(v, axis=axes, keepdims=True)
    safe = xp.maximum(v1, tiny)
    if zero_mean:
        x = x - xp.sum(v * x, axis=axes, keepdims=True) / safe
    if unit_var:
        d = x - xp.sum(v * x, axis=axes, keepdims=True) / safe  # around the weighted mean, as np.std
        denom = v1 - ddof * xp.sum(v * v, axis=axes, keepdims=True) / safe
        var = xp.sum(v * d * d, axis=axes, keepdims=True) / xp.maximum(denom, tiny)
        var = xp.where(denom > tiny, var, 0.0)
        x = xp.where(var > 0, x / (xp.sqrt(var) + eps), x)
    return xp.where(observed, x, 0)


def check_fit_mask(mask, X, dtype):
    """The ``mask=`` of dictionary learning, checked once: None, a callable ``batch -> mask``, or an
    array broadcastable to the data ``X (N, ...)`` (with a leading axis of length N: one mask per
    sample, indexed with the batch; otherwise shared by every batch). Returns ``(mask, setting)``:
    the array in ``dtype`` (or the callable) and the checkpoint setting that describes it (None without a mask)."""
    if mask is None:
        return None, None
    if callable(mask):
        return mask, "callable"
    m = check_mask(mask if hasattr(mask, "shape") else np.asarray(mask), X.shape, dtype)
    return m, f"array{list(np.shape(mask))}"


def batch_mask(mask, idx, batch, xp):
    """The mask of one batch: ``mask(batch)`` for a callable, the rows ``idx`` of a per-sample mask,
    else the shared mask (on ``xp``); None without a mask."""
    if mask is None:
        return None
    if callable(mask):
        return mask(batch)
    if mask.shape[0] > 1:  # one mask per sample (check_fit_mask made the rank full)
        return xp.asarray(mask[idx])
    return xp.asarray(mask)
