"""Latent predictive learning (Halvagal & Zenke 2023), DESIGN.md §7.

For a layer ``a = x W^T + b``, ``z = f(a)`` on a batch of ``B`` samples and
``M`` units, with ``zc = z - mean_batch(z)``::

    L_pred = 1/(2MB) sum (z(t) - SG[z(t-1)])^2
    L_hebb = -(1/M) sum_i log(var_i + eps),      var_i = sum_b zc_bi^2 / (B - 1)
    L_dec  = 1/(M^2 - M) sum_{i != k} C_ik^2,    C = zc^T zc / (B - 1)

Closed-form derivatives with respect to ``z`` (the batch-mean terms vanish
because ``sum_b zc_bi = 0``)::

    dL_pred/dz_bi = (z_bi - z_prev_bi) / (MB)
    dL_hebb/dz_bi = -2 zc_bi / (M (B - 1) (var_i + eps))
    dL_dec/dz_bi  =  4 sum_{k != i} C_ik zc_bk / ((B - 1) M (M - 1))

so minus the gradient of ``L_pred + lambda1 L_hebb + lambda2 L_dec`` is the
DESIGN.md rule ``1/(MB) sum_b [-(z - z_prev) + lambda1 alpha zc/(var+eps)
- lambda2 beta sum_k C zc] f'(a) x`` with ``alpha = 2B/(B-1)`` and
``beta = 4B/((B-1)(M-1))``.

Convolutional layers: ``mode="pool"`` applies the losses to globally
average-pooled features, ``mode="positions"`` treats every position as a sample.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_xp
from ..ops.conv import ConvOperator

__all__ = ["lpl_losses", "lpl_delta", "lpl_delta_conv", "lpl_grad_z", "ACTIVATIONS"]


def _stats(xp, z, eps):
    b = z.shape[0]
    if b < 2:
        raise ValueError(f"LPL needs a batch of at least 2 samples for the batch variance, got {b}")
    zc = z - z.mean(axis=0, keepdims=True)
    cov = zc.T @ zc / (b - 1)
    var = xp.diagonal(cov)
    return zc, cov, var


def lpl_losses(z, z_prev, eps=1e-4):
    """``(L_pred, L_hebb, L_dec)`` for features ``z`` (B, M) and the previous frame's ``z_prev``."""
    xp = get_xp(z)
    if z.ndim != 2 or z_prev.shape != z.shape:
        raise ValueError(f"z and z_prev must both have shape (B, M), got {tuple(z.shape)} and {tuple(z_prev.shape)}")
    b, m = z.shape
    zc, cov, var = _stats(xp, z, eps)
    l_pred = 0.5 * xp.sum((z - z_prev) ** 2) / (m * b)
    l_hebb = -xp.sum(xp.log(var + eps)) / m
    off = cov - xp.diag(var)
    l_dec = xp.sum(off * off) / (m * m - m) if m > 1 else xp.zeros((), dtype=z.dtype)
    return l_pred, l_hebb, l_dec


def lpl_grad_z(z, z_prev, lambda1=1.0, lambda2=10.0, eps=1e-4, terms=("pred", "hebb", "dec")):
    """Gradient of ``L_pred + lambda1 L_hebb + lambda2 L_dec`` with respect to ``z`` (B, M)."""
    xp = get_xp(z)
    b, m = z.shape
    zc, cov, var = _stats(xp, z, eps)
    g = xp.zeros_like(z)
    if "pred" in terms:
        g = g + (z - z_prev) / (m * b)
    if "hebb" in terms and lambda1:
        g = g - lambda1 * 2.0 * zc / (m * (b - 1) * (var + eps))
    if "dec" in terms and lambda2 and m > 1:
        off = cov - xp.diag(var)
        g = g + lambda2 * 4.0 * (zc @ off) / ((b - 1) * m * (m - 1))
    return g


def _relu(a):
    return get_xp(a).maximum(a, 0)


def _relu_prime(a):
    return (a > 0).astype(a.dtype)


def _tanh_prime(a):
    t = get_xp(a).tanh(a)
    return 1 - t * t


def _sigmoid(a):
    return 0.5 * (1 + get_xp(a).tanh(0.5 * a))


def _sigmoid_prime(a):
    s = _sigmoid(a)
    return s * (1 - s)


ACTIVATIONS = {
    "relu": (_relu, _relu_prime),
    "tanh": (lambda a: get_xp(a).tanh(a), _tanh_prime),
    "sigmoid": (_sigmoid, _sigmoid_prime),
    "linear": (lambda a: a, lambda a: get_xp(a).ones_like(a)),
}


def lpl_delta(W, b, x, z_prev, f, fprime, lambda1=1.0, lambda2=10.0, eps=1e-4, weight_decay=0.0,
              terms=("pred", "hebb", "dec")):
    """Minus the gradient of ``L_pred + lambda1 L_hebb + lambda2 L_dec`` for ``z = f(x W^T + b)``.

    Parameters
    ----------
    W : (M, N), b : (M,) or None, x : (B, N), z_prev : (B, M) the previous frame's output
    f, fprime : activation and its derivative (see ``ACTIVATIONS``)
    weight_decay : adds ``-weight_decay * W`` to ``dW``

    Returns
    -------
    (dW (M, N), db (M,) or None)
    """
    if x.ndim != 2 or W.ndim != 2 or x.shape[1] != W.shape[1]:
        raise ValueError(f"x (B, N) and W (M, N) do not match: {tuple(x.shape)}, {tuple(W.shape)}")
    a = x @ W.T + (0 if b is None else b)
    z = f(a)
    delta = -lpl_grad_z(z, z_prev, lambda1, lambda2, eps, terms) * fprime(a)  # (B, M)
    dW = delta.T @ x - weight_decay * W
    db = None if b is None else delta.sum(axis=0)
    return dW, db


def lpl_delta_conv(W, b, x, z_prev, f, fprime, stride=1, padding=1, mode="pool", lambda1=1.0, lambda2=10.0,
                   eps=1e-4, weight_decay=0.0, terms=("pred", "hebb", "dec"), op=None, a=None):
    """LPL delta for a conv layer ``z = f(conv(x, W) + b)``.

    ``mode="pool"``: the losses act on the global average of ``z`` over positions
    (``z_prev`` then has shape (B, M)); ``mode="positions"``: every position is a
    sample (``z_prev`` has the shape of ``z``, (B, M, *O)); ``mode="mixed"``: the
    predictive loss on pooled features (``z_prev`` (B, M)) and the Hebbian and
    decorrelation losses with positions as samples.

    ``a`` may pass the pre-activation ``conv(x, W) + b`` when the caller has it.

    Returns (dW (M, C, *k), db (M,) or None, z).
    """
    xp = get_xp(x)
    if op is None:
        op = ConvOperator(W, x.shape[2:], stride, padding)
    if a is None:
        a = op.forward(x)
        if b is not None:
            a = a + b.reshape((1, -1) + (1,) * (a.ndim - 2))
    z = f(a)
    n, m = z.shape[:2]
    if mode == "pool":
        feats = z.reshape(n, m, -1).mean(axis=2)
        g = lpl_grad_z(feats, z_prev, lambda1, lambda2, eps, terms)
        npos = int(np.prod(z.shape[2:]))
        gz = xp.broadcast_to((g / npos).reshape(n, m, *([1] * (z.ndim - 2))), z.shape)
    elif mode == "positions":
        flat = xp.moveaxis(z, 1, -1).reshape(-1, m)
        prev = xp.moveaxis(z_prev, 1, -1).reshape(-1, m)
        g = lpl_grad_z(flat, prev, lambda1, lambda2, eps, terms)
        gz = xp.moveaxis(g.reshape(n, *z.shape[2:], m), -1, 1)
    elif mode == "mixed":
        # predictive term on pooled features (views correspond as wholes, not position by position),
        # Hebbian and decorrelation terms with every position as a sample
        npos = int(np.prod(z.shape[2:]))
        gz = xp.zeros_like(z)
        if "pred" in terms:
            feats = z.reshape(n, m, -1).mean(axis=2)
            g = lpl_grad_z(feats, z_prev, lambda1, lambda2, eps, ("pred",))
            gz = gz + (g / npos).reshape(n, m, *([1] * (z.ndim - 2)))
        local = tuple(t for t in terms if t != "pred")
        if local:
            flat = xp.moveaxis(z, 1, -1).reshape(-1, m)
            g = lpl_grad_z(flat, flat, lambda1, lambda2, eps, local)
            gz = gz + xp.moveaxis(g.reshape(n, *z.shape[2:], m), -1, 1)
    else:
        raise ValueError(f"mode must be 'pool', 'positions' or 'mixed', got {mode!r}")
    delta = -gz * fprime(a)
    dW = op.weight_grad(x, xp.ascontiguousarray(delta)) - weight_decay * W
    db = None if b is None else delta.sum(axis=tuple(i for i in range(delta.ndim) if i != 1))
    return dW, db, z


def toy_selectivity(sigma_y, variant="lpl", steps=1000, batch=64, lr=0.1, lambda1=1.0, noise_x=0.1, seed=0):
    """The two-dimensional toy experiment: one linear neuron ``z = w . x``.

    Inputs come in consecutive pairs: the x-component is a cluster centre
    ``+-1`` kept between the two frames plus noise ``noise_x``; the y-component
    is fresh Gaussian noise of standard deviation ``sigma_y`` in every frame.
    ``variant`` is "lpl" (predictive + Hebbian), "hebbian" or "predictive".

    Returns ``(selectivity, w)`` with ``selectivity = |w_x| / (|w_x| + |w_y|)``
    (1: the neuron encodes the slow feature x; 0: it follows y).
    """
    terms = {"lpl": ("pred", "hebb"), "hebbian": ("hebb",), "predictive": ("pred",)}[variant]
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((1, 2)) * 0.5
    f, fp = ACTIVATIONS["linear"]
    for _ in range(steps):
        c = rng.choice([-1.0, 1.0], size=batch)
        x1 = np.stack([c + noise_x * rng.standard_normal(batch), sigma_y * rng.standard_normal(batch)], 1)
        x2 = np.stack([c + noise_x * rng.standard_normal(batch), sigma_y * rng.standard_normal(batch)], 1)
        z1 = x1 @ w.T
        dW, _ = lpl_delta(w, None, x2, z1, f, fp, lambda1=lambda1, lambda2=0.0, terms=terms)
        w = w + lr * dW
    wx, wy = abs(w[0, 0]), abs(w[0, 1])
    return wx / (wx + wy + 1e-300), w[0]
