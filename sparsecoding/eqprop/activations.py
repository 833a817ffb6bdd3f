"""Activation functions of the EqProp networks (names of the EqProp reference code)."""
from __future__ import annotations

from ..backend import get_xp


def my_hard_sig(x):
    """``clip(x / 2, 0, 1)``."""
    return get_xp(x).clip(0.5 * x, 0, 1)


def hard_sigmoid(x):
    """``clip(x, 0, 1)``."""
    return get_xp(x).clip(x, 0, 1)


def ctrd_hard_sig(x):
    """``clip(x, -1/2, 1/2)``."""
    return get_xp(x).clip(x, -0.5, 0.5)


def mysig(x):
    """``1 / (1 + exp(-4 (x - 1/2)))``."""
    return 0.5 * (1 + get_xp(x).tanh(2.0 * (x - 0.5)))


def tanh(x):
    return get_xp(x).tanh(x)


def sigmoid(x):
    return 0.5 * (1 + get_xp(x).tanh(0.5 * x))


def _d_my_hard_sig(x):
    return 0.5 * ((x > 0) & (x < 2)).astype(x.dtype)


def _d_hard_sigmoid(x):
    return ((x > 0) & (x < 1)).astype(x.dtype)


def _d_ctrd_hard_sig(x):
    return ((x > -0.5) & (x < 0.5)).astype(x.dtype)


def _d_mysig(x):
    s = mysig(x)
    return 4.0 * s * (1 - s)


def _d_tanh(x):
    t = get_xp(x).tanh(x)
    return 1 - t * t


def _d_sigmoid(x):
    s = sigmoid(x)
    return s * (1 - s)


ACTIVATIONS = {
    "my_hard_sig": (my_hard_sig, _d_my_hard_sig),
    "hard_sigmoid": (hard_sigmoid, _d_hard_sigmoid),
    "ctrd_hard_sig": (ctrd_hard_sig, _d_ctrd_hard_sig),
    "mysig": (mysig, _d_mysig),
    "tanh": (tanh, _d_tanh),
    "sigmoid": (sigmoid, _d_sigmoid),
}


def get_activation(name):
    """``(sigma, sigma')`` for an activation name; ValueError listing the names otherwise."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]
