"""Small real data sets that ship inside installed packages (no download)."""
from __future__ import annotations

import numpy as np

COLOR_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")
GRAY_PHOTOS = ("camera", "grass", "gravel", "brick", "moon")


def _need(module, extra="data"):
    raise ImportError(f"this data set is read from the files of {module}; install it with "
                      f"pip install 'sparsecoding[{extra}]'")


def load_digits(dtype="float32"):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes).

    Returns
    -------
    X : (1797, 1, 8, 8) array in [0, 1], channels-first
    y : (1797,) int64 labels
    """
    try:
        from sklearn.datasets import load_digits as _load  # noqa: PLC0415
    except ImportError:
        _need("scikit-learn")
    d = _load()
    X = (d.images / 16.0).astype(dtype)[:, None]
    return X, d.target.astype(np.int64)


def digits_split(n_train, seed=0, dtype="float32"):
    """The digits split into ``n_train`` training images and the rest for testing (seeded permutation).

    Returns ``(X_train, y_train, X_test, y_test)``.
    """
    X, y = load_digits(dtype)
    if not 0 < n_train < len(X):
        raise ValueError(f"n_train must be between 1 and {len(X) - 1}, got {n_train}")
    perm = np.random.default_rng(seed).permutation(len(X))
    tr, te = perm[:n_train], perm[n_train:]
    return X[tr], y[tr], X[te], y[te]


def natural_images(color=True, names=None, dtype="float32", downsample=1):
    """scikit-image's bundled photographs as float arrays in [0, 1].

    Parameters
    ----------
    color : True for RGB photographs (channels-first (3, H, W)), False for grayscale (1, H, W)
    names : optional subset of the names in ``COLOR_PHOTOS`` / ``GRAY_PHOTOS``
    downsample : integer factor of block averaging (4 turns the ~500-pixel photographs
        into scenes whose 32x32 crops have CIFAR-like content)

    Returns
    -------
    list of arrays (C, H, W)
    """
    try:
        import skimage.data as skd  # noqa: PLC0415
    except ImportError:
        _need("scikit-image")
    names = names or (COLOR_PHOTOS if color else GRAY_PHOTOS)
    out = []
    for name in names:
        if name == "motorcycle":
            img = skd.stereo_motorcycle()[0]
        else:
            if not hasattr(skd, name):
                raise ValueError(f"unknown bundled image {name!r}")
            img = getattr(skd, name)()
        img = np.asarray(img, dtype=np.float64)
        img = img / (255.0 if img.max() > 1 else 1.0)
        if img.ndim == 2:
            img = img[None] if not color else np.repeat(img[None], 3, axis=0)
        else:
            img = img[..., :3].transpose(2, 0, 1)
            if not color:
                img = img.mean(axis=0, keepdims=True)
        if downsample > 1:
            c, h, w = img.shape
            h, w = h // downsample * downsample, w // downsample * downsample
            img = img[:, :h, :w].reshape(c, h // downsample, downsample, w // downsample, downsample).mean(axis=(2, 4))
        out.append(img.astype(dtype))
    return out
