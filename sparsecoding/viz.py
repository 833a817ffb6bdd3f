"""Pictures: dictionary tiles and training curves (matplotlib, imported lazily)."""
from __future__ import annotations

import math
import os

import numpy as np

from .backend import to_numpy

__all__ = ["tile_dictionary", "make_feature_grid", "save_dictionary", "save_curves"]


def tile_dictionary(weights, shape=None, pad=1, per_atom=True):
    """Arrange atoms into one image.

    Parameters
    ----------
    weights : (K, C, h, w) conv atoms, or (K, D) dense atoms with ``shape=(C, h, w)`` or ``(h, w)``
    per_atom : scale each atom to [0, 1] symmetrically around 0 (else one scale for all)

    Returns
    -------
    (H, W, 3) or (H, W) float image in [0, 1]

    Raises
    ------
    ValueError for zero atoms (K = 0), a bad shape (``(K, D)`` atoms that do not fill
    ``shape``, or a non-square D without ``shape``) or a negative ``pad``; TypeError for
    complex or non-numeric weights.
    """
    w = to_numpy(weights)
    if w.dtype.kind == "c":
        raise TypeError(f"weights must be real, got complex dtype {w.dtype} (pass weights.real or abs(weights))")
    if w.dtype.kind not in "biuf":
        raise TypeError(f"weights must be a real numeric array, got dtype {w.dtype}")
    w = w.astype(np.float64)
    pad = int(pad)
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if w.ndim in (2, 4) and w.shape[0] == 0:
        raise ValueError(f"weights has no atoms (K = 0, shape {tuple(w.shape)}): nothing to tile")
    if w.ndim == 2:
        if shape is None:
            side = int(round(math.sqrt(w.shape[1])))
            if side * side != w.shape[1]:
                raise ValueError(f"dense atoms of length {w.shape[1]} are not square images: pass shape=(h, w) "
                                 f"or (C, h, w)")
            shape = (side, side)
        shape = tuple(int(v) for v in shape)
        if len(shape) not in (2, 3) or math.prod(shape) != w.shape[1]:
            raise ValueError(f"shape {shape} must be (h, w) or (C, h, w) with {w.shape[1]} values per atom")
        w = w.reshape(w.shape[0], *((1, *shape) if len(shape) == 2 else shape))
    if w.ndim != 4:
        raise ValueError(f"weights must be (K, C, h, w) or (K, D), got shape {tuple(w.shape)}")
    k, c, h, ww = w.shape
    if 0 in (c, h, ww):
        raise ValueError(f"weights has empty atoms (shape {tuple(w.shape)}): nothing to tile")
    if c not in (1, 3):
        w = w[:, :1]
        c = 1
    axes = (1, 2, 3)
    scale = np.abs(w).max(axis=axes, keepdims=True) if per_atom else np.abs(w).max()
    w = 0.5 + 0.5 * w / np.maximum(scale, 1e-12)
    cols = int(math.ceil(math.sqrt(k)))
    rows = int(math.ceil(k / cols))
    img = np.ones((rows * (h + pad) + pad, cols * (ww + pad) + pad, c))
    for i in range(k):
        r, q = divmod(i, cols)
        img[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (ww + pad): pad + q * (ww + pad) + ww] = \
            w[i].transpose(1, 2, 0)
    return img[..., 0] if c == 1 else img


def _make_grid(images, nrow, scale_each, padding=2, pad_value=0.5):
    """torchvision's ``make_grid(images, nrow, padding=2, normalize=True, scale_each, pad_value=0.5)``
    on a host array ``(B, C, H, W)``: single-channel images become three channels; values
    min-max scaled to [0, 1] (over all images, or per image with ``scale_each``; a constant
    range divides by 1e-5); ``min(nrow, B)`` images per row, ``padding`` pixels of ``pad_value``
    around and between them. One image is returned alone, scaled, without padding. Returns
    ``(C', H_grid, W_grid)``."""
    if images.shape[1] == 1:
        images = np.concatenate([images] * 3, axis=1)
    if scale_each:
        low = images.min(axis=(1, 2, 3), keepdims=True)
        high = images.max(axis=(1, 2, 3), keepdims=True)
    else:
        low, high = images.min(), images.max()
    images = (images - low) / np.maximum(high - low, 1e-5)
    b, c, h, w = images.shape
    if b == 1:
        return images[0]
    cols = min(nrow, b)
    rows = int(math.ceil(b / cols))
    grid = np.full((c, (h + padding) * rows + padding, (w + padding) * cols + padding), pad_value, images.dtype)
    for i in range(b):
        r, q = divmod(i, cols)
        y, x = r * (h + padding) + padding, q * (w + padding) + padding
        grid[:, y:y + h, x:x + w] = images[i]
    return grid


def make_feature_grid(weights, scale_each=False):
    """lca-pytorch's ``lcapt.analysis.make_feature_grid``: the dictionary as one picture.

    ``int(sqrt(K))`` features per row, 2 pixels of 0.5 around and between them, values min-max
    scaled to [0, 1] over the whole dictionary (per feature with ``scale_each``); single-channel
    features are repeated to three channels first (torchvision's ``make_grid``):

    - dense ``(K, D)`` and 1-D ``(K, 1, L)``: the weights themselves, ``(K, D)`` / ``(K, L)``, unscaled;
    - 1-D ``(K, C, L)`` with ``C > 1``: each feature a ``C x L`` gray image; ``(H_grid, W_grid)``;
    - 2-D ``(K, C, H, W)``: ``(H_grid, W_grid, C')`` with ``C' = 3`` for ``C == 1``, else ``C``;
    - 3-D ``(K, C, T, H, W)``: the 2-D grid of ``weights[:, :, 0]`` when ``T == 1``, else one grid per
      time step stacked, ``(T, H_grid, W_grid, C')`` (each step scaled on its own).

    With ``rows = ceil(K / cols)``, ``cols = min(int(sqrt(K)), K)``: ``H_grid = rows (h + 2) + 2``,
    ``W_grid = cols (w + 2) + 2``. A single feature (K = 1) comes back alone, scaled, unpadded.
    Returns a host (numpy) array of the weights' float dtype. ``ValueError`` for other ranks or
    K = 0 (lca-pytorch: ``RuntimeError``); ``TypeError`` for complex or non-numeric weights.
    See :func:`tile_dictionary` for this library's own layout (symmetric scaling around 0).
    """
    w = to_numpy(weights)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"weights must be a real numeric array, got dtype {w.dtype}")
    w = w.astype(w.dtype if w.dtype.kind == "f" else np.float64, copy=True)
    if w.ndim not in (2, 3, 4, 5):
        raise ValueError(f"weights given to make_feature_grid must be 2-D, 3-D, 4-D or 5-D (K, ...), "
                         f"got shape {tuple(w.shape)}")
    if w.shape[0] == 0 or 0 in w.shape:
        raise ValueError(f"weights has no features or empty features (shape {tuple(w.shape)}): nothing to show")
    nrow = int(math.sqrt(w.shape[0]))
    if w.ndim == 2:
        return w
    if w.ndim == 3:
        if w.shape[1] == 1:
            return w[:, 0]
        return _make_grid(w[:, None], nrow, scale_each)[0]
    if w.ndim == 4:
        return _make_grid(w, nrow, scale_each).transpose(1, 2, 0)
    if w.shape[2] == 1:
        return _make_grid(w[:, :, 0], nrow, scale_each).transpose(1, 2, 0)
    return np.stack([_make_grid(w[:, :, t], nrow, scale_each) for t in range(w.shape[2])]).transpose(0, 2, 3, 1)


def _makedirs(path):
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)


def save_dictionary(weights, path, shape=None, title=None, scale=8):
    """Save the tiled dictionary as a PNG (nearest-neighbour upscaled by ``scale``)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    img = tile_dictionary(weights, shape)
    fig = plt.figure(figsize=(img.shape[1] * scale / 100, img.shape[0] * scale / 100 + (0.3 if title else 0)), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1 if not title else 0.93])
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest", vmin=0, vmax=1)
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    _makedirs(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def save_curves(curves, path, xlabel="step", ylabel="", title=None, logy=False):
    """Save a line plot of ``curves`` (name -> sequence of values); ValueError when there is no curve."""
    if not curves:
        raise ValueError("curves is empty: nothing to plot")
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in curves.items():
        ax.plot(np.asarray(values), label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    _makedirs(path)
    fig.savefig(path)
    plt.close(fig)
    return path
