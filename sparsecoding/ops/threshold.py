"""LCA transfer functions ``a = T_lambda(u)`` (DESIGN.md §5).

soft:              sign(u) max(|u| - lambda, 0)
non-negative soft: max(u - lambda, 0)
hard:              u * (|u| > lambda)
non-negative hard: u * (u > lambda)

``u`` must be real (complex is a ``TypeError``: the thresholds compare
magnitudes with signs); a scalar ``lambda_`` must be a number >= 0
(``ValueError``). Any real dtype and an empty ``u`` work.
"""
from __future__ import annotations

import numbers

from ..backend import get_xp

__all__ = [
    "soft_threshold",
    "nonneg_soft_threshold",
    "hard_threshold",
    "nonneg_hard_threshold",
    "TRANSFER_FUNCTIONS",
    "get_transfer",
]


def _check(u, lambda_):
    kind = getattr(getattr(u, "dtype", None), "kind", "f")
    if kind == "c":
        raise TypeError(f"u must be real, got complex dtype {u.dtype}")
    if kind not in "biuf":
        raise TypeError(f"u must be a real numeric array, got dtype {u.dtype}")
    if isinstance(lambda_, numbers.Real) and not lambda_ >= 0:  # NaN fails too
        raise ValueError(f"lambda_ must be a number >= 0, got {lambda_!r}")


def soft_threshold(u, lambda_):
    """Proximal map of ``lambda ||.||_1``: ``sign(u) max(|u| - lambda, 0)``."""
    _check(u, lambda_)
    xp = get_xp(u)
    return xp.sign(u) * xp.maximum(xp.abs(u) - lambda_, 0)


def nonneg_soft_threshold(u, lambda_):
    """Proximal map of ``lambda ||.||_1 + indicator(a >= 0)``: ``max(u - lambda, 0)``."""
    _check(u, lambda_)
    xp = get_xp(u)
    return xp.maximum(u - lambda_, 0)


def hard_threshold(u, lambda_):
    """``u * (|u| > lambda)``."""
    _check(u, lambda_)
    xp = get_xp(u)
    return u * (xp.abs(u) > lambda_)


def nonneg_hard_threshold(u, lambda_):
    """``u * (u > lambda)``."""
    _check(u, lambda_)
    return u * (u > lambda_)


TRANSFER_FUNCTIONS = {
    ("soft_threshold", False): soft_threshold,
    ("soft_threshold", True): nonneg_soft_threshold,
    ("hard_threshold", False): hard_threshold,
    ("hard_threshold", True): nonneg_hard_threshold,
}


def get_transfer(transfer_func="soft_threshold", nonneg=False):
    """The transfer function ``f(u, lambda_)`` for a name (or a callable, returned as is)."""
    if callable(transfer_func):
        return transfer_func
    key = (transfer_func, bool(nonneg))
    if key not in TRANSFER_FUNCTIONS:
        raise ValueError(
            f"transfer_func must be 'soft_threshold', 'hard_threshold' or a callable, got {transfer_func!r}"
        )
    return TRANSFER_FUNCTIONS[key]
