"""Földiák's bars problem (DESIGN.md §8)."""
from __future__ import annotations

import numpy as np


def bars(n_samples, size=8, p=1 / 8, seed=None, dtype="float64"):
    """Random superpositions of horizontal and vertical bars on a ``size x size`` grid.

    Each of the ``2*size`` bars is on independently with probability ``p``;
    overlapping pixels stay 1 (logical OR).

    Returns
    -------
    X : (n_samples, size*size) array of 0/1
    bar_templates : (2*size, size*size) array, rows then columns
    """
    if n_samples < 0 or size < 1 or not 0 <= p <= 1:
        raise ValueError(f"need n_samples >= 0, size >= 1, 0 <= p <= 1; got {n_samples}, {size}, {p}")
    rng = np.random.default_rng(seed)
    templates = np.zeros((2 * size, size, size))
    for i in range(size):
        templates[i, i, :] = 1
        templates[size + i, :, i] = 1
    templates = templates.reshape(2 * size, -1)
    on = rng.random((n_samples, 2 * size)) < p
    X = np.minimum(on.astype(np.float64) @ templates, 1.0)
    return X.astype(dtype), templates.astype(dtype)
