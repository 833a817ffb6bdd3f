"""Preprocessing on channels-first arrays: standardisation, whitening, patches, crops."""
from __future__ import annotations

import numpy as np

from ..backend import get_xp


def standardize(x, zero_mean=True, unit_var=True, eps=1e-12, ddof=1):
    """Per-sample zero mean and/or unit variance over all non-batch axes.

    lca-pytorch's ``make_zero_mean`` / ``make_unit_var``: ``x - mean`` and ``x / (std + eps)``
    with the unbiased standard deviation (``ddof=1``, PyTorch's ``Tensor.std``) and
    ``eps=1e-12``, so a standardised sample has ``x.std(ddof=1) == 1``. ``ddof=0`` gives the
    population standard deviation. Unit variance needs more than ``ddof`` values per sample
    (``ValueError`` otherwise; an empty batch passes through).
    """
    axes = tuple(range(1, x.ndim))
    if zero_mean:
        x = x - x.mean(axis=axes, keepdims=True)
    if unit_var:
        n = int(np.prod(x.shape[1:], dtype=np.int64))
        if n <= ddof:
            raise ValueError(f"unit variance with ddof={ddof} needs more than {ddof} value(s) per sample, got "
                             f"samples of shape {tuple(x.shape[1:])} (turn unit variance off: "
                             f"input_unit_var=False / unit_var=False)")
        x = x / (x.std(axis=axes, keepdims=True, ddof=ddof) + eps)
    return x


def zca_whitening_matrix(X, eps=1e-2):
    """ZCA whitening matrix ``W = U diag(1/sqrt(s + eps)) U^T`` of centred rows ``X (N, D)``."""
    xp = get_xp(X)
    Xc = X - X.mean(axis=0, keepdims=True)
    cov = Xc.T @ Xc / max(X.shape[0] - 1, 1)
    s, U = xp.linalg.eigh(cov)
    return (U * (1.0 / xp.sqrt(xp.maximum(s, 0) + eps))) @ U.T


def whiten(X, eps=1e-2):
    """ZCA-whitened, centred copy of ``X (N, D)``: covariance ~ identity (regularised by ``eps``)."""
    W = zca_whitening_matrix(X, eps)
    return (X - X.mean(axis=0, keepdims=True)) @ W


def _check_images(images):
    for im in images:
        if im.ndim != 3:
            raise ValueError(f"images must be (C, H, W) arrays, got shape {tuple(im.shape)}")


def extract_patches(images, size, n, seed=None, flatten=False):
    """``n`` random ``size x size`` patches from a list of (C, H, W) images.

    Returns (n, C, size, size), or (n, C*size*size) with ``flatten``.
    """
    _check_images(images)
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(images), n)
    out = []
    for i in which:
        im = images[i]
        _, h, w = im.shape
        if h < size or w < size:
            raise ValueError(f"patch size {size} is larger than an image of shape {tuple(im.shape)}")
        r, c = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        out.append(im[:, r:r + size, c:c + size])
    xp = get_xp(images[0])
    P = xp.stack(out)
    return P.reshape(n, -1) if flatten else P


def random_crops(images, size, n, seed=None):
    """``n`` random square crops (the CIFAR-like workload uses 32x32 crops of photographs)."""
    return extract_patches(images, size, n, seed)


def natural_patches(n, size=8, seed=None, whitened=True, centred=True, eps=1e-2, color=False):
    """``n`` flattened ``size x size`` patches of scikit-image's photographs.

    ``centred`` removes each patch's mean; ``whitened`` applies ZCA whitening
    (regularised by ``eps`` times the mean eigenvalue) and scales to unit
    overall variance. ``whitened=False, centred=False`` gives the raw patches
    in [0, 1] (the seed notebook's input, a failure mode for Földiák's network).
    """
    from .bundled import natural_images  # noqa: PLC0415

    P = extract_patches(natural_images(color=color), size, n, seed=seed, flatten=True).astype(np.float64)
    if centred:
        P = P - P.mean(axis=1, keepdims=True)
    if whitened:
        cov = np.cov(P.T)
        P = whiten(P, eps=eps * float(np.trace(cov)) / cov.shape[0])
        P = P / P.std()
    return P


def whiten_images(images, f0=0.8):
    """Olshausen & Field's whitening filter on whole images, per channel.

    Multiplies the spectrum by ``R(f) = |f| exp(-(|f| / (f0 f_nyq))^4)``, which
    flattens the ~1/f amplitude spectrum of natural images and rolls off the
    highest frequencies. Returns new (C, H, W) arrays with unit variance.
    """
    _check_images(images)
    out = []
    for im in images:
        im = np.asarray(im, dtype=np.float64)
        _, h, w = im.shape
        fy = np.fft.fftfreq(h)[:, None]
        fx = np.fft.rfftfreq(w)[None, :]
        f = np.sqrt(fy**2 + fx**2)
        R = f * np.exp(-((f / (f0 * 0.5)) ** 4))
        white = np.fft.irfft2(np.fft.rfft2(im - im.mean(axis=(1, 2), keepdims=True)) * R, s=(h, w))
        out.append((white / white.std()).astype(np.float32))
    return out
