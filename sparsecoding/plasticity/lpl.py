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
On the numba engines, for the registry activations and 2-D layers with stride 1 and
padding ``k // 2`` (LPLConvNet's), :func:`lpl_delta_conv` runs the per-core,
cache-sized, channels-last passes of :mod:`sparsecoding.plasticity._lpl_cpu`
(statistics in one pass with one symmetric GEMM per chunk, the delta in one kernel,
no full im2col array); elsewhere the generic array code below.

Bad input (DESIGN.md §10): the public functions refuse arrays with NaN or Inf,
mismatched shapes, a batch of fewer than 2 samples, ``lambda1``/``lambda2``/
``weight_decay`` that are not finite and >= 0, ``eps`` that is not finite and > 0,
and unknown ``terms`` or ``mode``, with a ValueError naming the argument. A delta
that comes out non-finite from finite input (overflow: the weights grew too large,
a diverging run) raises ``FloatingPointError``; :func:`toy_selectivity` checks its
weights after every step the same way, before writing them.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_xp
from ..ops.conv import ConvOperator, conv_output_shape
from ..ops.elementwise import ACTIVATIONS as _REGISTRY
from ..optim import _check_finite, _check_int, _check_number

__all__ = ["lpl_losses", "lpl_delta", "lpl_delta_conv", "lpl_grad_z", "ACTIVATIONS"]

TERMS = ("pred", "hebb", "dec")
MODES = ("pool", "positions", "mixed")


def _check_coefficients(lambda1, lambda2, eps, weight_decay=0.0):
    return (_check_number(lambda1, "lambda1", low=0), _check_number(lambda2, "lambda2", low=0),
            _check_number(eps, "eps", low=0, low_open=True), _check_number(weight_decay, "weight_decay", low=0))


def _check_terms(terms):
    if isinstance(terms, str):
        terms = (terms,)
    terms = tuple(terms)
    bad = [t for t in terms if t not in TERMS]
    if bad or not terms:
        raise ValueError(f"terms must be a non-empty subset of {TERMS}, got {terms!r}")
    return terms


def _check_array(xp, a, name, ndim=None):
    if not hasattr(a, "shape"):
        raise ValueError(f"{name} must be an array, got {type(a).__name__}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(a.shape)}")
    _check_finite(xp, a, name)


def _check_z(z, z_prev):
    xp = get_xp(z)
    if getattr(z, "ndim", None) != 2 or getattr(z_prev, "shape", None) != z.shape:
        raise ValueError(f"z and z_prev must both have shape (B, M), got {tuple(getattr(z, 'shape', ()))} and "
                         f"{tuple(getattr(z_prev, 'shape', ()))}")
    _check_finite(xp, z, "z")
    _check_finite(xp, z_prev, "z_prev")
    return xp


def _check_output(xp, arrays, what):
    """FloatingPointError if a delta computed from finite input is not finite (overflow: diverging weights)."""
    for name, a in arrays:
        if a is not None and not bool(xp.isfinite(a).all()):
            raise FloatingPointError(
                f"{what} produced a non-finite {name} from finite input: the pre-activations or features "
                f"overflowed (the weights grew too large: a diverging run, lower the learning rate)")


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
    _check_z(z, z_prev)
    eps = _check_number(eps, "eps", low=0, low_open=True)
    return _losses(z, z_prev, eps)


def _losses(z, z_prev, eps):
    xp = get_xp(z)
    b, m = z.shape
    zc, cov, var = _stats(xp, z, eps)
    l_pred = 0.5 * xp.sum((z - z_prev) ** 2) / (m * b)
    l_hebb = -xp.sum(xp.log(var + eps)) / m
    off = cov - xp.diag(var)
    l_dec = xp.sum(off * off) / (m * m - m) if m > 1 else xp.zeros((), dtype=z.dtype)
    return l_pred, l_hebb, l_dec


def lpl_grad_z(z, z_prev, lambda1=1.0, lambda2=10.0, eps=1e-4, terms=("pred", "hebb", "dec")):
    """Gradient of ``L_pred + lambda1 L_hebb + lambda2 L_dec`` with respect to ``z`` (B, M)."""
    _check_z(z, z_prev)
    lambda1, lambda2, eps, _ = _check_coefficients(lambda1, lambda2, eps)
    return _grad_z(z, z_prev, lambda1, lambda2, eps, _check_terms(terms))


def _grad_z(z, z_prev, lambda1, lambda2, eps, terms):
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


LPL_ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear")
# the activations LPL takes, with their derivatives: entries of the library's one elementwise registry
ACTIVATIONS = {name: _REGISTRY[name] for name in LPL_ACTIVATIONS}


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

    Raises ValueError for bad input (named) and FloatingPointError when the delta
    overflows from finite input.
    """
    xp = get_xp(W, x)
    for name, a in (("W", W), ("x", x)):
        if not hasattr(a, "ndim"):
            raise ValueError(f"{name} must be an array, got {type(a).__name__}")
    if x.ndim != 2 or W.ndim != 2 or x.shape[1] != W.shape[1]:
        raise ValueError(f"x (B, N) and W (M, N) do not match: {tuple(x.shape)}, {tuple(W.shape)}")
    if getattr(z_prev, "shape", None) != (x.shape[0], W.shape[0]):
        raise ValueError(f"z_prev must have shape (B, M) = {(x.shape[0], W.shape[0])}, "
                         f"got {tuple(getattr(z_prev, 'shape', ()))}")
    if b is not None and getattr(b, "shape", None) != (W.shape[0],):
        raise ValueError(f"b must have shape ({W.shape[0]},), got {tuple(getattr(b, 'shape', ()))}")
    if x.shape[0] < 2:
        raise ValueError(f"x needs a batch of at least 2 samples (LPL's batch variance), got {x.shape[0]}")
    if not (callable(f) and callable(fprime)):
        raise ValueError("f and fprime must be callables (see lpl.ACTIVATIONS)")
    for name, a in (("W", W), ("b", b), ("x", x), ("z_prev", z_prev)):
        if a is not None:
            _check_finite(xp, a, name)
    lambda1, lambda2, eps, weight_decay = _check_coefficients(lambda1, lambda2, eps, weight_decay)
    terms = _check_terms(terms)
    a = x @ W.T + (0 if b is None else b)
    z = f(a)
    delta = -_grad_z(z, z_prev, lambda1, lambda2, eps, terms) * fprime(a)  # (B, M)
    dW = delta.T @ x - weight_decay * W
    db = None if b is None else delta.sum(axis=0)
    _check_output(xp, (("dW", dW), ("db", db)), "lpl_delta")
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

    Returns (dW (M, C, *k), db (M,) or None, z). Raises ValueError for bad input (named)
    and FloatingPointError when the delta overflows from finite input.
    """
    xp = get_xp(W, x)
    if mode not in MODES:
        raise ValueError(f"mode must be 'pool', 'positions' or 'mixed', got {mode!r}")
    _check_array(xp, W, "W")
    _check_array(xp, x, "x")
    if W.ndim < 3 or x.ndim != W.ndim or x.shape[1] != W.shape[1]:
        raise ValueError(f"x (B, C, *spatial) and W (M, C, *kernel) do not match: {tuple(x.shape)}, "
                         f"{tuple(W.shape)}")
    if b is not None:
        _check_array(xp, b, "b", ndim=1)
        if b.shape[0] != W.shape[0]:
            raise ValueError(f"b must have shape ({W.shape[0]},), got {tuple(b.shape)}")
    _check_array(xp, z_prev, "z_prev")
    if mode != "positions" and tuple(z_prev.shape) != (x.shape[0], W.shape[0]):
        raise ValueError(f"z_prev must have shape (B, M) = {(x.shape[0], W.shape[0])} in mode {mode!r}, "
                         f"got {tuple(z_prev.shape)}")
    if a is not None:
        _check_array(xp, a, "a")
    if not (callable(f) and callable(fprime)):
        raise ValueError("f and fprime must be callables (see lpl.ACTIVATIONS)")
    lambda1, lambda2, eps, weight_decay = _check_coefficients(lambda1, lambda2, eps, weight_decay)
    terms = _check_terms(terms)
    z_shape = (x.shape[0], W.shape[0], *conv_output_shape(x.shape[2:], W.shape[2:], stride, padding))
    if mode == "positions" and tuple(z_prev.shape) != z_shape:
        raise ValueError(f"z_prev must have the shape of z {z_shape} in mode 'positions', got {tuple(z_prev.shape)}")
    if a is not None and tuple(a.shape) != z_shape:
        raise ValueError(f"a must have the shape of the pre-activation {z_shape}, got {tuple(a.shape)}")
    pooled = mode == "pool" or (mode == "mixed" and "pred" in terms)
    if (x.shape[0] if pooled else x.shape[0] * int(np.prod(z_shape[2:]))) < 2:
        raise ValueError(f"x needs a batch of at least 2 samples (LPL's batch variance), got {x.shape[0]}")
    dW, db, z = _delta_conv(W, b, x, z_prev, f, fprime, stride, padding, mode, lambda1, lambda2, eps, weight_decay,
                            terms, op, a)
    _check_output(xp, (("dW", dW), ("db", db)), "lpl_delta_conv")
    return dW, db, z


def _fused_activation(xp, f, fprime):
    """The :mod:`._lpl_cpu` code of the registry activation ``(f, fprime)`` on the numba engines, else None."""
    from ..backend import capabilities  # noqa: PLC0415
    from ._lpl_cpu import ACT_CODES  # noqa: PLC0415

    if not capabilities(xp).numba:
        return None
    return next((code for name, code in ACT_CODES.items() if ACTIVATIONS[name] == (f, fprime)), None)


def _fused_geometry(W, x, stride, padding):
    """2-D, stride 1, odd kernels with padding ``k // 2`` (the layers of LPLConvNet), float weights."""
    from ..ops._geometry import as_tuple, resolve_padding  # noqa: PLC0415

    if W.ndim != 4 or x.ndim != 4 or W.dtype.kind != "f" or any(k % 2 == 0 for k in W.shape[2:]):
        return False
    try:
        same = resolve_padding(padding, W.shape[2:]) == tuple(k // 2 for k in W.shape[2:])
        return same and as_tuple(stride, 2, "stride", 1) == (1, 1)
    except (TypeError, ValueError):
        return False


def _delta_conv(W, b, x, z_prev, f, fprime, stride, padding, mode, lambda1, lambda2, eps, weight_decay, terms, op,
                a):
    """:func:`lpl_delta_conv` without the argument checks (callers that checked their input)."""
    xp = get_xp(x)
    act = _fused_activation(xp, f, fprime)
    if act is not None and _fused_geometry(W, x, stride, padding):
        # the per-core, cache-sized, channels-last CPU path (_lpl_cpu); it recomputes the
        # pre-activation in its cache-sized chunks rather than reading a given ``a``
        from ._lpl_cpu import single_delta  # noqa: PLC0415

        return single_delta(x, W, b, z_prev, act, mode, lambda1, lambda2, eps, weight_decay, terms)
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
        g = _grad_z(feats, z_prev, lambda1, lambda2, eps, terms)
        npos = int(np.prod(z.shape[2:]))
        gz = xp.broadcast_to((g / npos).reshape(n, m, *([1] * (z.ndim - 2))), z.shape)
    elif mode == "positions":
        flat = xp.moveaxis(z, 1, -1).reshape(-1, m)
        prev = xp.moveaxis(z_prev, 1, -1).reshape(-1, m)
        g = _grad_z(flat, prev, lambda1, lambda2, eps, terms)
        gz = xp.moveaxis(g.reshape(n, *z.shape[2:], m), -1, 1)
    elif mode == "mixed":
        # predictive term on pooled features (views correspond as wholes, not position by position),
        # Hebbian and decorrelation terms with every position as a sample
        npos = int(np.prod(z.shape[2:]))
        gz = xp.zeros_like(z)
        if "pred" in terms:
            feats = z.reshape(n, m, -1).mean(axis=2)
            g = _grad_z(feats, z_prev, lambda1, lambda2, eps, ("pred",))
            gz = gz + (g / npos).reshape(n, m, *([1] * (z.ndim - 2)))
        local = tuple(t for t in terms if t != "pred")
        if local:
            flat = xp.moveaxis(z, 1, -1).reshape(-1, m)
            g = _grad_z(flat, flat, lambda1, lambda2, eps, local)
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
    (1: the neuron encodes the slow feature x; 0: it follows y). A step that would make
    ``w`` non-finite (too large ``lr``) raises FloatingPointError.
    """
    variants = {"lpl": ("pred", "hebb"), "hebbian": ("hebb",), "predictive": ("pred",)}
    if variant not in variants:
        raise ValueError(f"variant must be one of {sorted(variants)}, got {variant!r}")
    terms = variants[variant]
    sigma_y = _check_number(sigma_y, "sigma_y", low=0)
    steps = _check_int(steps, "steps", minimum=0)
    batch = _check_int(batch, "batch", minimum=2)
    lr = _check_number(lr, "lr", low=0)
    lambda1 = _check_number(lambda1, "lambda1", low=0)
    noise_x = _check_number(noise_x, "noise_x", low=0)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((1, 2)) * 0.5
    f, fp = ACTIVATIONS["linear"]
    for step in range(steps):
        c = rng.choice([-1.0, 1.0], size=batch)
        x1 = np.stack([c + noise_x * rng.standard_normal(batch), sigma_y * rng.standard_normal(batch)], 1)
        x2 = np.stack([c + noise_x * rng.standard_normal(batch), sigma_y * rng.standard_normal(batch)], 1)
        z1 = x1 @ w.T
        a = x2 @ w.T
        dW = (-_grad_z(f(a), z1, lambda1, 0.0, 1e-4, terms) * fp(a)).T @ x2
        w_new = w + lr * dW
        if not np.isfinite(w_new).all():
            raise FloatingPointError(f"the weights became non-finite at step {step + 1} with lr={lr:g}: "
                                     "lower the learning rate")
        w = w_new
    wx, wy = abs(w[0, 0]), abs(w[0, 1])
    return wx / (wx + wy + 1e-300), w[0]
