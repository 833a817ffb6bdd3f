"""Synthetic convolutional sparse-coding data with a known dictionary (ground truth for recovery tests)."""
from __future__ import annotations

import numpy as np

__all__ = ["sparse_conv_data"]


def _tuple(value, d, name):
    if isinstance(value, (int, np.integer)):
        value = (int(value),) * d
    value = tuple(int(v) for v in value)
    if len(value) != d or any(v < 1 for v in value):
        raise ValueError(f"{name} must be a positive int or a {d}-tuple of positive ints, got {value!r}")
    return value


def sparse_conv_data(n_samples, signal_shape=64, *, n_atoms=4, n_channels=1, kernel_size=9, density=0.02,
                     amplitude=(0.5, 1.5), nonneg=True, noise=0.01, dictionary=None, smooth=0.0, seed=None,
                     dtype="float64"):
    """Sparse codes convolved with a known dictionary, plus white noise.

    ``X[n] = sum_k conv_transpose(z[n, k], D[k]) + noise * e[n]``, i.e. every active code
    coefficient ``z[n, k, p]`` adds the atom ``D[k]`` (C channels, ``kernel_size``) scaled by
    ``z[n, k, p]`` at offset ``p`` of the signal. Codes live on the "valid" grid
    (``signal_shape - kernel_size + 1`` positions per dimension) so every atom lies fully inside
    the signal. Each code coefficient is active independently with probability ``density``;
    active amplitudes are uniform in ``amplitude`` (with a random sign unless ``nonneg``).

    Parameters
    ----------
    n_samples : int
    signal_shape : int or tuple (its length sets the dimension, 1-3)
    n_atoms, n_channels, kernel_size : the dictionary's shape ``(n_atoms, n_channels, *kernel_size)``
        (ignored when ``dictionary`` is given)
    density : probability that a code coefficient is active
    amplitude : (low, high) range of the active amplitudes
    nonneg : non-negative codes (else random signs)
    noise : standard deviation of the additive Gaussian noise
    dictionary : optional ground truth ``(K, C, *k)``; atoms are normalised to unit L2 norm
    smooth : a generated dictionary's atoms are Gaussian noise, smoothed by a Gaussian of this
        width (in samples; 0: no smoothing), then tapered by a Hann window (small values at the
        edges of the support)
    seed : seed or ``numpy.random.Generator``
    dtype : of the returned arrays

    Returns
    -------
    X : (n_samples, C, *signal_shape)
    dictionary : (K, C, *kernel_size), unit-norm atoms
    codes : (n_samples, K, *(signal_shape - kernel_size + 1))
    """
    from ..ops.conv import conv_transpose  # noqa: PLC0415  (data does not need ops at import)

    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    d = 1 if isinstance(signal_shape, (int, np.integer)) else len(signal_shape)
    if d not in (1, 2, 3):
        raise ValueError(f"signal_shape must have 1 to 3 dimensions, got {signal_shape!r}")
    signal_shape = _tuple(signal_shape, d, "signal_shape")
    if not 0.0 <= float(density) <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density!r}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    lo, hi = (float(v) for v in amplitude)
    if not 0 <= lo <= hi:
        raise ValueError(f"amplitude must be (low, high) with 0 <= low <= high, got {amplitude!r}")
    if dictionary is None:
        kernel = _tuple(kernel_size, d, "kernel_size")
        D = rng.standard_normal((int(n_atoms), int(n_channels), *kernel))
        if smooth > 0:
            from scipy.ndimage import gaussian_filter  # noqa: PLC0415
            D = gaussian_filter(D, sigma=(0, 0) + (float(smooth),) * d, mode="constant")
        for ax, k in enumerate(kernel):
            shape = [1] * (2 + d)
            shape[2 + ax] = k
            D = D * np.hanning(k + 2)[1:-1].reshape(shape)  # taper: shifted copies differ at the edges less
    else:
        D = np.array(dictionary, dtype=np.float64)
        if D.ndim != d + 2:
            raise ValueError(f"dictionary must have shape (K, C, *kernel) with {d} kernel dimensions, got {D.shape}")
        kernel = D.shape[2:]
    norms = np.sqrt((D.reshape(D.shape[0], -1) ** 2).sum(1))
    if np.any(norms == 0):
        raise ValueError("dictionary atoms must be non-zero")
    D = D / norms.reshape((-1,) + (1,) * (D.ndim - 1))
    grid = tuple(L - k + 1 for L, k in zip(signal_shape, kernel))
    if any(g < 1 for g in grid):
        raise ValueError(f"signal_shape {signal_shape} is smaller than the kernel {tuple(kernel)}")
    z = rng.random((n_samples, D.shape[0], *grid)) < density
    amp = rng.uniform(lo, hi, size=z.shape)
    if not nonneg:
        amp *= rng.choice(np.array([-1.0, 1.0]), size=z.shape)
    codes = np.where(z, amp, 0.0)
    X = conv_transpose(codes, D)
    if noise > 0:
        X = X + noise * rng.standard_normal(X.shape)
    return X.astype(dtype), D.astype(dtype), codes.astype(dtype)
