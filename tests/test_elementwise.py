"""The elementwise registry: derivatives against central differences, closed forms, validation."""
import math

import numpy as np
import pytest

from sparsecoding.ops.elementwise import ACTIVATIONS, get_activation, get_transfer, one_hot, softmax

REFERENCE = {  # written independently of the module, from DESIGN.md §6
    "my_hard_sig": lambda v: min(max(v / 2, 0.0), 1.0),
    "hard_sigmoid": lambda v: min(max(v, 0.0), 1.0),
    "ctrd_hard_sig": lambda v: min(max(v, -0.5), 0.5),
    "mysig": lambda v: 1 / (1 + math.exp(-4 * (v - 0.5))),
    "sigmoid": lambda v: 1 / (1 + math.exp(-v)),
    "tanh": math.tanh,
    "relu": lambda v: max(v, 0.0),
    "linear": lambda v: v,
}
KINKS = [-0.5, 0.0, 0.5, 1.0, 2.0]


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_values_and_derivatives(name):
    f, df = get_activation(name)
    x = np.linspace(-3, 3, 241)
    x = x[np.min(np.abs(x[:, None] - np.array(KINKS)[None]), axis=1) > 1e-3]  # no kinks
    ref = np.array([REFERENCE[name](v) for v in x])
    np.testing.assert_allclose(f(x), ref, rtol=1e-12, atol=1e-12)
    eps = 1e-6
    fd = np.array([(REFERENCE[name](v + eps) - REFERENCE[name](v - eps)) / (2 * eps) for v in x])
    np.testing.assert_allclose(df(x), fd, rtol=1e-6, atol=1e-7)


def test_logistic_functions_do_not_overflow():
    f, df = get_activation("sigmoid")
    with np.errstate(all="raise"):
        np.testing.assert_array_equal(f(np.array([-1e4, 1e4])), [0.0, 1.0])
        np.testing.assert_array_equal(df(np.array([-1e4, 1e4])), [0.0, 0.0])


@pytest.mark.parametrize("name,nonneg,ref", [
    ("soft_threshold", False, lambda u, l: np.sign(u) * max(abs(u) - l, 0)),
    ("soft_threshold", True, lambda u, l: max(u - l, 0)),
    ("hard_threshold", False, lambda u, l: u if abs(u) > l else 0.0),
    ("hard_threshold", True, lambda u, l: u if u > l else 0.0)])
def test_transfer_functions(name, nonneg, ref):
    u = np.linspace(-2, 2, 81)
    np.testing.assert_allclose(get_transfer(name, nonneg)(u, 0.3), [ref(v, 0.3) for v in u], atol=1e-15)


@pytest.mark.parametrize("bad", [["soft_threshold"], np.zeros(2), "soft", 3])
def test_unknown_or_unhashable_names(bad):
    with pytest.raises(ValueError, match="transfer_func must be one of"):
        get_transfer(bad)
    with pytest.raises(ValueError, match="activation must be one of"):
        get_activation(bad)
    with pytest.raises(ValueError, match=r"\['relu', 'tanh'\]"):
        get_activation("sigmoid", allowed=("relu", "tanh"))


def test_softmax_and_one_hot():
    z = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, -1000.0]])
    e = np.exp(z[0] - 3.0)
    np.testing.assert_allclose(softmax(z)[0], e / e.sum(), rtol=1e-14)
    np.testing.assert_allclose(softmax(z)[1], [0.5, 0.5, 0.0], atol=1e-300)
    np.testing.assert_array_equal(one_hot(np.array([2, 0]), 3, np.float32), [[0, 0, 1], [1, 0, 0]])
