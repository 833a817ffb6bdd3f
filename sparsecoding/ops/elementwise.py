"""One registry of elementwise maps: LCA transfer functions, activations with derivatives, softmax, one-hot.

Transfer functions ``a = T_lambda(u)`` (DESIGN.md §5)::

    soft:              sign(u) max(|u| - lambda, 0)      (prox of lambda ||.||_1)
    non-negative soft: max(u - lambda, 0)                (prox of lambda ||.||_1 + [a >= 0])
    hard:              u * (|u| > lambda)
    non-negative hard: u * (u > lambda)

Activations ``sigma`` and their derivatives (EqProp reference names, DESIGN.md §6;
LPL's relu / linear)::

    my_hard_sig = clip(x/2, 0, 1)     hard_sigmoid = clip(x, 0, 1)    ctrd_hard_sig = clip(x, -1/2, 1/2)
    mysig = 1/(1+exp(-4(x-1/2)))      sigmoid = 1/(1+exp(-x))         tanh, relu = max(x, 0), linear = x

Transfer functions take real ``u`` of any dtype (complex is a ``TypeError``: the
thresholds compare magnitudes with signs) and a scalar ``lambda_ >= 0`` (else a
``ValueError``); an empty ``u`` works.

The logistic functions are written with ``tanh`` (``1/(1+exp(-x)) = (1 + tanh(x/2))/2``),
which cannot overflow for large ``|x|``. Every function takes its array namespace
from its argument (numpy or cupy).
"""
from __future__ import annotations

import numbers
from collections.abc import Hashable

from ..backend import get_xp

__all__ = ["soft_threshold", "nonneg_soft_threshold", "hard_threshold", "nonneg_hard_threshold",
           "TRANSFER_FUNCTIONS", "get_transfer", "sigmoid", "ACTIVATIONS", "get_activation", "softmax", "one_hot"]


# ------------------------------------------------------------------ transfer functions
def _check_transfer(u, lambda_):
    kind = getattr(getattr(u, "dtype", None), "kind", "f")
    if kind == "c":
        raise TypeError(f"u must be real, got complex dtype {u.dtype}")
    if kind not in "biuf":
        raise TypeError(f"u must be a real numeric array, got dtype {u.dtype}")
    if isinstance(lambda_, numbers.Real) and not lambda_ >= 0:  # NaN fails too
        raise ValueError(f"lambda_ must be a number >= 0, got {lambda_!r}")


def soft_threshold(u, lambda_):
    """Proximal map of ``lambda ||.||_1``: ``sign(u) max(|u| - lambda, 0)``."""
    _check_transfer(u, lambda_)
    xp = get_xp(u)
    return xp.sign(u) * xp.maximum(xp.abs(u) - lambda_, 0)


def nonneg_soft_threshold(u, lambda_):
    """Proximal map of ``lambda ||.||_1 + indicator(a >= 0)``: ``max(u - lambda, 0)``."""
    _check_transfer(u, lambda_)
    return get_xp(u).maximum(u - lambda_, 0)


def hard_threshold(u, lambda_):
    """``u * (|u| > lambda)``."""
    _check_transfer(u, lambda_)
    return u * (get_xp(u).abs(u) > lambda_)


def nonneg_hard_threshold(u, lambda_):
    """``u * (u > lambda)``."""
    _check_transfer(u, lambda_)
    return u * (u > lambda_)


TRANSFER_FUNCTIONS = {
    ("soft_threshold", False): soft_threshold,
    ("soft_threshold", True): nonneg_soft_threshold,
    ("hard_threshold", False): hard_threshold,
    ("hard_threshold", True): nonneg_hard_threshold,
}


def get_transfer(transfer_func="soft_threshold", nonneg=False):
    """The transfer function ``f(u, lambda_)`` for a name, or a callable returned as is."""
    if callable(transfer_func):
        return transfer_func
    names = sorted({name for name, _ in TRANSFER_FUNCTIONS})
    if not isinstance(transfer_func, Hashable) or (transfer_func, bool(nonneg)) not in TRANSFER_FUNCTIONS:
        raise ValueError(f"transfer_func must be one of {names} or a callable f(u, lambda_), got {transfer_func!r}")
    return TRANSFER_FUNCTIONS[(transfer_func, bool(nonneg))]


# ------------------------------------------------------------------------ activations
def sigmoid(x):
    """``1 / (1 + exp(-x))``, overflow-free."""
    return 0.5 * (1 + get_xp(x).tanh(0.5 * x))


def _mysig(x):
    return sigmoid(4.0 * (x - 0.5))


def _window(lo, hi, scale=1.0):
    # derivative of a clip: `scale` inside the open interval, 0 outside
    return lambda x: scale * ((x > lo) & (x < hi)).astype(x.dtype)


def _d_logistic(f, gain=1.0):
    def d(x):
        s = f(x)
        return gain * s * (1 - s)
    return d


def _d_tanh(x):
    t = get_xp(x).tanh(x)
    return 1 - t * t


ACTIVATIONS = {
    "my_hard_sig": (lambda x: get_xp(x).clip(0.5 * x, 0, 1), _window(0, 2, 0.5)),
    "hard_sigmoid": (lambda x: get_xp(x).clip(x, 0, 1), _window(0, 1)),
    "ctrd_hard_sig": (lambda x: get_xp(x).clip(x, -0.5, 0.5), _window(-0.5, 0.5)),
    "mysig": (_mysig, _d_logistic(_mysig, 4.0)),
    "sigmoid": (sigmoid, _d_logistic(sigmoid)),
    "tanh": (lambda x: get_xp(x).tanh(x), _d_tanh),
    "relu": (lambda x: get_xp(x).maximum(x, 0), lambda x: (x > 0).astype(x.dtype)),
    "linear": (lambda x: x, lambda x: get_xp(x).ones_like(x)),
}


def get_activation(name, allowed=None):
    """``(sigma, dsigma)`` for a registered name; ``allowed`` limits the names a model accepts."""
    names = sorted(ACTIVATIONS if allowed is None else allowed)
    if not isinstance(name, Hashable) or name not in names:
        raise ValueError(f"activation must be one of {names}, got {name!r}")
    return ACTIVATIONS[name]


# --------------------------------------------------------------- softmax and one-hot
def softmax(z, axis=-1):
    """``exp(z) / sum exp(z)`` along ``axis``, shifted by the maximum (no overflow)."""
    xp = get_xp(z)
    e = xp.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def one_hot(y, n_classes, dtype, xp=None):
    """``(N, n_classes)`` rows with a one at each label ``y (N,)`` (integers in ``[0, n_classes)``)."""
    xp = get_xp(y) if xp is None else xp
    y = xp.asarray(y)
    return (y[:, None] == xp.arange(n_classes)[None]).astype(dtype)
