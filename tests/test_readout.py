import numpy as np
import pytest

from conftest import central_difference
from sparsecoding.ops.elementwise import softmax
from sparsecoding.readout import LogisticRegression


def test_gradient_matches_finite_differences():
    r = np.random.default_rng(0)
    X, y = r.standard_normal((20, 4)), r.integers(0, 3, 20)
    m = LogisticRegression(l2=0.1)
    Y = (y[:, None] == np.arange(3)).astype(float)
    W, b = r.standard_normal((3, 4)), r.standard_normal(3)
    _, gW, gb = m._loss_grad(np, X, Y, W, b)
    fd = central_difference(lambda W_: float(m._loss_grad(np, X, Y, W_, b)[0]), W)
    np.testing.assert_allclose(gW, fd, atol=1e-6)
    fdb = central_difference(lambda b_: float(m._loss_grad(np, X, Y, W, b_)[0]), b)
    np.testing.assert_allclose(gb, fdb, atol=1e-6)


def test_separable_classes_are_learned_and_softmax_normalised():
    r = np.random.default_rng(1)
    centers = r.standard_normal((4, 6)) * 5
    y = r.integers(0, 4, 400)
    X = centers[y] + r.standard_normal((400, 6))
    assert LogisticRegression().fit(X, y).score(X, y) > 0.97
    np.testing.assert_allclose(softmax(r.standard_normal((5, 3))).sum(1), 1)
    with pytest.raises(ValueError, match="labels"):
        LogisticRegression().fit(X, y[:10])


@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_both_solvers_learn_and_agree_with_scipy_optimum(solver):
    # "adam" is the solver GPU arrays take ("auto"): run here on numpy, it must reach the same
    # classifier as L-BFGS (the convex problem's unique optimum) on well-separated classes
    r = np.random.default_rng(3)
    centers = r.standard_normal((3, 5)) * 4
    y = r.integers(0, 3, 300)
    X = centers[y] + r.standard_normal((300, 5))
    m = LogisticRegression(l2=0.1, max_iter=2000, solver=solver).fit(X, y)
    ref = LogisticRegression(l2=0.1, max_iter=2000, solver="lbfgs").fit(X, y)
    assert m.score(X, y) > 0.97
    np.testing.assert_allclose(m.coef_, ref.coef_, atol=2e-2 if solver == "adam" else 1e-8)
    with pytest.raises(ValueError, match="solver"):
        LogisticRegression(solver="sgd")


def test_participation_ratio_closed_forms():
    from sparsecoding.readout import participation_ratio

    r = np.random.default_rng(2)
    iso = r.standard_normal((20000, 5))
    assert abs(participation_ratio(iso) - 5) < 0.1  # equal variances: PR = D
    one = np.outer(r.standard_normal(500), r.standard_normal(5))
    assert abs(participation_ratio(one) - 1) < 1e-6  # rank one: PR = 1
    # variances (1, 1, 4): (6)^2 / (1 + 1 + 16) = 2
    F = r.standard_normal((20000, 3)) * np.array([1.0, 1.0, 2.0])
    assert abs(participation_ratio(F) - 2.0) < 0.05
