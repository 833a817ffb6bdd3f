"""Operator-level properties: Lipschitz constants against explicit matrices, the dense maps, power iteration."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparsecoding.backend import to_numpy
from sparsecoding.ops import ConvOperator, DenseOperator, power_iteration


@pytest.mark.parametrize("code_layout", ["channels_first", "channels_last"])
@given(st.integers(1, 3), st.integers(1, 3), st.sampled_from([1, 3, 5]), st.integers(1, 2), st.integers(0, 2**31))
def test_conv_lipschitz_matches_dense_matrix(engines, code_layout, c, k, ks, stride, seed):
    """Power iteration against the exact top eigenvalue of the explicit matrix of the operator."""
    r = np.random.default_rng(seed)
    phi = r.standard_normal((k, c, ks, ks))
    op = ConvOperator(phi, (7, 7), stride, "same", code_layout=code_layout)
    n_code = int(np.prod(op.out_shape))
    eye = np.eye(n_code).reshape(n_code, *op.out_shape)
    M = op.adjoint(eye).reshape(n_code, -1)  # rows: Phi^T e_i
    exact = np.linalg.eigvalsh(M @ M.T).max()
    assert exact <= op.lipschitz() <= 1.02 * exact + 1e-12
    # the iteration view shares the estimate (the solvers' step is a function of the weights alone)
    assert op.iteration_view().lipschitz() == op.lipschitz()


def test_dense_operator_maps(xp):
    r = np.random.default_rng(0)
    phi = r.standard_normal((4, 3))
    op = DenseOperator(xp.asarray(phi))
    s = r.standard_normal((2, 3))
    np.testing.assert_allclose(to_numpy(op.forward(xp.asarray(s))), s @ phi.T)
    np.testing.assert_allclose(op.lipschitz(), np.linalg.svd(phi, compute_uv=False)[0] ** 2)
    np.testing.assert_allclose(to_numpy(op.gram()), phi @ phi.T)


def test_power_iteration_diagonal():
    d = np.array([1.0, 5.0, 2.0])
    lam, v = power_iteration(lambda v: d * v, (3,), np, np.float64, n_iter=200)
    assert abs(lam - 5.0) < 1e-8 and abs(abs(v[1]) - 1) < 1e-6


def test_lipschitz_follows_update_weights():
    r = np.random.default_rng(1)
    w = r.standard_normal((3, 2, 3, 3))
    op = ConvOperator(w, (6, 6), 1, "same")
    before = op.lipschitz()
    op.update_weights(2 * w)
    assert op.lipschitz() == pytest.approx(4 * before, rel=1e-6)
    assert op.iteration_view().lipschitz() == op.lipschitz()
