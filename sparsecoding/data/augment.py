"""Random image augmentations on channels-first batches (N, C, H, W).

Every function takes a ``numpy.random.Generator`` for its randomness and
works on numpy or cupy arrays; parameters are drawn per image.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_xp

__all__ = ["random_crop", "horizontal_flip", "random_resized_crop", "color_jitter", "random_grayscale",
           "lpl_views", "digit_views"]


def _check(x):
    if x.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(x.shape)}")


def random_crop(x, rng, padding=4):
    """Zero-pad by ``padding`` and crop back to the original size at a random offset (per image)."""
    _check(x)
    xp = get_xp(x)
    n, c, h, w = x.shape
    padded = xp.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=x.dtype)
    padded[:, :, padding:padding + h, padding:padding + w] = x
    dy = rng.integers(0, 2 * padding + 1, n)
    dx = rng.integers(0, 2 * padding + 1, n)
    rows = xp.asarray(dy[:, None] + np.arange(h)[None])  # (N, H)
    cols = xp.asarray(dx[:, None] + np.arange(w)[None])  # (N, W)
    idx_n = xp.arange(n)[:, None, None, None]
    idx_c = xp.arange(c)[None, :, None, None]
    return padded[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]


def horizontal_flip(x, rng, p=0.5):
    """Mirror each image left-right with probability ``p``."""
    _check(x)
    xp = get_xp(x)
    flip = xp.asarray(rng.random(x.shape[0]) < p).reshape(-1, 1, 1, 1)
    return xp.where(flip, x[..., ::-1], x)


def random_resized_crop(x, rng, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    """Crop a random area fraction ``scale`` with aspect ``ratio`` and resize back (bilinear)."""
    _check(x)
    xp = get_xp(x)
    n, c, h, w = x.shape
    area = rng.uniform(*scale, n) * h * w
    logr = rng.uniform(np.log(ratio[0]), np.log(ratio[1]), n)
    ar = np.exp(logr)
    ch = np.clip(np.sqrt(area / ar), 1, h)
    cw = np.clip(np.sqrt(area * ar), 1, w)
    y0 = rng.uniform(0, h - ch)
    x0 = rng.uniform(0, w - cw)
    # sampling grid in source pixel coordinates (centres), per image
    gy = y0[:, None] + (np.arange(h)[None] + 0.5) * (ch[:, None] / h) - 0.5
    gx = x0[:, None] + (np.arange(w)[None] + 0.5) * (cw[:, None] / w) - 0.5
    return _bilinear(xp, x, np.clip(gy, 0, h - 1), np.clip(gx, 0, w - 1))


def _bilinear(xp, x, gy, gx):
    n, c, h, w = x.shape
    y0 = np.floor(gy).astype(np.int64)
    x0 = np.floor(gx).astype(np.int64)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy = xp.asarray((gy - y0).astype(x.dtype))[:, None, :, None]
    wx = xp.asarray((gx - x0).astype(x.dtype))[:, None, None, :]
    ni = xp.arange(n)[:, None, None, None]
    ci = xp.arange(c)[None, :, None, None]

    def at(yy, xx):
        return x[ni, ci, xp.asarray(yy)[:, None, :, None], xp.asarray(xx)[:, None, None, :]]

    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


def color_jitter(x, rng, brightness=0.4, contrast=0.4, saturation=0.4, p=0.8):
    """Random brightness, contrast and saturation factors in ``[1 - v, 1 + v]`` (applied with probability p)."""
    _check(x)
    xp = get_xp(x)
    n = x.shape[0]
    apply = (rng.random(n) < p).astype(x.dtype)

    def factor(v):
        return xp.asarray((1 + apply * rng.uniform(-v, v, n)).astype(x.dtype)).reshape(-1, 1, 1, 1)

    out = x * factor(brightness)
    mean = out.mean(axis=(1, 2, 3), keepdims=True)
    out = (out - mean) * factor(contrast) + mean
    if x.shape[1] == 3:
        gray = out.mean(axis=1, keepdims=True)
        out = (out - gray) * factor(saturation) + gray
    keep = xp.asarray(apply == 0).reshape(-1, 1, 1, 1)
    return xp.where(keep, x, xp.clip(out, 0, 1))


def random_grayscale(x, rng, p=0.2):
    """Replace each colour image by its luminance (all channels) with probability ``p``."""
    _check(x)
    xp = get_xp(x)
    if x.shape[1] != 3:
        return x
    lum = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    g = xp.asarray(rng.random(x.shape[0]) < p).reshape(-1, 1, 1, 1)
    return xp.where(g, xp.broadcast_to(lum, x.shape), x)


def lpl_views(x, rng):
    """One augmented view for LPL's consecutive "frames": resized crop, flip, jitter, grayscale."""
    out = random_resized_crop(x, rng)
    out = horizontal_flip(out, rng)
    out = color_jitter(out, rng)
    return random_grayscale(out, rng)


def digit_views(x, rng):
    """Mild views for small digit images: a resized crop of 60-100% of the area, no flip (mirrored
    digits change identity) and no colour change."""
    return random_resized_crop(x, rng, scale=(0.6, 1.0), ratio=(0.8, 1.25))
