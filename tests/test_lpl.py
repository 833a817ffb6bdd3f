"""LPL deltas against central finite differences of the losses (float64)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import central_difference
from sparsecoding.ops.conv import conv
from sparsecoding.plasticity.lpl import ACTIVATIONS, lpl_delta, lpl_delta_conv, lpl_grad_z, lpl_losses

TERMS = {"pred": (1, 0, 0), "hebb": (0, 1, 0), "dec": (0, 0, 1)}


def total(z, z_prev, l1, l2, terms=("pred", "hebb", "dec")):
    lp, lh, ld = lpl_losses(z, z_prev)
    return ("pred" in terms) * lp + ("hebb" in terms) * l1 * lh + ("dec" in terms) * l2 * ld


def losses_reference(z, z_prev, eps=1e-4):
    """Direct loop formulas, independent of the vectorised implementation."""
    b, m = z.shape
    mean = z.mean(0)
    var = np.array([np.sum((z[:, i] - mean[i]) ** 2) / (b - 1) for i in range(m)])
    C = np.array([[np.sum((z[:, i] - mean[i]) * (z[:, k] - mean[k])) / (b - 1) for k in range(m)] for i in range(m)])
    pred = np.sum((z - z_prev) ** 2) / (2 * m * b)
    hebb = -np.mean(np.log(var + eps))
    dec = sum(C[i, k] ** 2 for i in range(m) for k in range(m) if i != k) / (m * m - m)
    return pred, hebb, dec


@given(st.integers(2, 8), st.integers(2, 6), st.integers(0, 2**31))
def test_losses_match_loop_formulas(b, m, seed):
    r = np.random.default_rng(seed)
    z, zp = r.standard_normal((b, m)), r.standard_normal((b, m))
    np.testing.assert_allclose(lpl_losses(z, zp), losses_reference(z, zp), rtol=1e-10)


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid", "linear"])
@pytest.mark.parametrize("term", ["pred", "hebb", "dec", "all"])
@given(b=st.integers(3, 7), m=st.integers(2, 5), n=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_dense_delta_equals_finite_differences(act, term, b, m, n, seed):
    r = np.random.default_rng(seed)
    W, bias, x, zp = r.standard_normal((m, n)), r.standard_normal(m), r.standard_normal((b, n)), r.standard_normal((b, m))
    f, fp = ACTIVATIONS[act]
    terms = ("pred", "hebb", "dec") if term == "all" else (term,)
    if act == "relu":  # keep pre-activations away from the kink
        a = x @ W.T + bias
        bias = bias + np.where(np.abs(a).min(0) < 0.05, 0.2, 0)
    dW, db = lpl_delta(W, bias, x, zp, f, fp, lambda1=1.3, lambda2=7.0, terms=terms)
    loss = lambda W_, b_: total(f(x @ W_.T + b_), zp, 1.3, 7.0, terms)  # noqa: E731
    fdW = -central_difference(lambda W_: loss(W_, bias), W)
    fdb = -central_difference(lambda b_: loss(W, b_), bias)
    np.testing.assert_allclose(dW, fdW, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(db, fdb, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", ["pool", "positions", "mixed"])
@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_conv_delta_equals_finite_differences(mode, act):
    r = np.random.default_rng(1)
    W, bias = 0.5 * r.standard_normal((3, 2, 3, 3)), 0.1 * r.standard_normal(3)
    x = r.standard_normal((4, 2, 5, 5))
    f, fp = ACTIVATIONS[act]
    z_shape = conv(x, W, 1, 1).shape
    zp = r.standard_normal(z_shape if mode == "positions" else (4, 3))

    def loss(W_, b_):
        z = f(conv(x, W_, 1, 1) + b_.reshape(1, -1, 1, 1))
        flat = np.moveaxis(z, 1, -1).reshape(-1, 3)
        if mode == "pool":
            return total(z.mean(axis=(2, 3)), zp, 1.0, 10.0)
        if mode == "mixed":
            return total(z.mean(axis=(2, 3)), zp, 1.0, 10.0, ("pred",)) + total(flat, flat, 1.0, 10.0, ("hebb", "dec"))
        return total(flat, np.moveaxis(zp, 1, -1).reshape(-1, 3), 1.0, 10.0)

    dW, db, _ = lpl_delta_conv(W, bias, x, zp, f, fp, stride=1, padding=1, mode=mode)
    fdW = -central_difference(lambda W_: loss(W_, bias), W)
    np.testing.assert_allclose(dW, fdW, atol=1e-7, rtol=1e-5)
    fdb = -central_difference(lambda b_: loss(W, b_), bias)
    np.testing.assert_allclose(db, fdb, atol=1e-7, rtol=1e-5)


def test_batch_mean_as_constant_gives_same_gradient():
    """Differentiating through the batch mean or treating it as constant agrees (sum_b zc = 0)."""
    r = np.random.default_rng(2)
    z, zp = r.standard_normal((6, 4)), r.standard_normal((6, 4))
    g = lpl_grad_z(z, zp, 1.0, 10.0, terms=("hebb", "dec"))
    mean = z.mean(0)

    def loss_const_mean(zz):
        zc = zz - mean
        var = (zc**2).sum(0) / 5
        C = zc.T @ zc / 5
        return -np.mean(np.log(var + 1e-4)) + 10.0 * (np.sum(C**2) - np.sum(np.diag(C) ** 2)) / 12

    np.testing.assert_allclose(g, central_difference(loss_const_mean, z), atol=1e-7)


def test_predictive_delta_zero_when_frames_equal():
    r = np.random.default_rng(3)
    W, x = r.standard_normal((4, 3)), r.standard_normal((5, 3))
    f, fp = ACTIVATIONS["tanh"]
    z = f(x @ W.T)
    dW, db = lpl_delta(W, np.zeros(4), x, z, f, fp, terms=("pred",))
    assert np.abs(dW).max() == 0 and np.abs(db).max() == 0


def test_small_step_along_each_delta_improves_its_objective():
    r = np.random.default_rng(4)
    W, b, x = 0.3 * r.standard_normal((6, 8)), np.zeros(6), r.standard_normal((32, 8)) @ r.standard_normal((8, 8))
    f, fp = ACTIVATIONS["tanh"]
    zp = f(x @ W.T) + 0.3 * r.standard_normal((32, 6))

    def stats(W_):
        z = f(x @ W_.T)
        zc = z - z.mean(0)
        C = zc.T @ zc / 31
        return np.sum(np.log(np.diag(C) + 1e-4)), np.sum(C**2) - np.sum(np.diag(C) ** 2), np.sum((z - zp) ** 2)

    base = stats(W)
    for term, k, sign in [("hebb", 0, +1), ("dec", 1, -1), ("pred", 2, -1)]:
        dW, _ = lpl_delta(W, b, x, zp, f, fp, terms=(term,))
        after = stats(W + 1e-3 * dW / np.abs(dW).max())
        assert sign * (after[k] - base[k]) > 0, term


def test_decorrelation_normalisation_independent_of_batch_size():
    """Repeating the batch leaves L_hebb and L_dec (nearly) unchanged: they are intensive."""
    r = np.random.default_rng(5)
    z = r.standard_normal((200, 5)) @ r.standard_normal((5, 5))
    z2 = np.concatenate([z, z])
    l1, l2 = lpl_losses(z, z), lpl_losses(z2, z2)
    np.testing.assert_allclose(l1[1:], l2[1:], rtol=1e-2)
    assert l1[0] == 0 and l2[0] == 0


def test_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        lpl_losses(np.ones((1, 3)), np.ones((1, 3)))
    with pytest.raises(ValueError, match="do not match"):
        lpl_delta(np.ones((2, 3)), None, np.ones((4, 5)), np.ones((4, 2)), *ACTIVATIONS["relu"])
    with pytest.raises(ValueError, match="mode"):
        lpl_delta_conv(np.ones((2, 1, 3, 3)), None, np.ones((2, 1, 5, 5)), np.ones((2, 2)), *ACTIVATIONS["tanh"],
                       mode="bogus")


def test_toy_experiment_three_outcomes():
    """LPL stays selective for the slow x feature at every sigma; Hebbian-only follows the
    largest-variance direction y once sigma > 1; predictive-only collapses (weights -> 0)."""
    from sparsecoding.plasticity.lpl import toy_selectivity

    for sigma in (0.5, 2.0, 4.0):
        sel, w_lpl = toy_selectivity(sigma, "lpl")
        assert sel > 0.95
    for sigma in (2.0, 4.0):
        sel, _ = toy_selectivity(sigma, "hebbian")
        assert sel < 0.2
    _, w0 = toy_selectivity(2.0, "predictive", steps=0)
    _, w = toy_selectivity(2.0, "predictive")
    # no term holds the response up: the weights shrink towards zero (collapse)
    assert np.linalg.norm(w) < 0.5 * np.linalg.norm(w0) and np.linalg.norm(w) < 0.01 * np.linalg.norm(w_lpl)


def test_activations_are_entries_of_the_elementwise_registry():
    from sparsecoding.ops import elementwise
    from sparsecoding.plasticity.lpl import LPL_ACTIVATIONS

    assert set(ACTIVATIONS) == set(LPL_ACTIVATIONS) == {"relu", "tanh", "sigmoid", "linear"}
    for name, pair in ACTIVATIONS.items():
        assert pair is elementwise.ACTIVATIONS[name], name
