import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sparsecoding.backend import to_numpy
from sparsecoding.solvers.operators import ConvDictionary, DenseDictionary, power_iteration


@given(st.integers(1, 3), st.integers(1, 3), st.sampled_from([1, 3, 5]), st.integers(1, 2), st.integers(0, 2**31))
def test_conv_lipschitz_matches_dense_matrix(c, k, ks, stride, seed):
    """Power iteration against the exact top eigenvalue of the explicit matrix of the operator."""
    r = np.random.default_rng(seed)
    phi = r.standard_normal((k, c, ks, ks))
    op = ConvDictionary(phi, (7, 7), stride, "same")
    n_code = int(np.prod(op.code_shape(1)))
    eye = np.eye(n_code).reshape(n_code, *op.code_shape(1)[1:])
    M = op.synthesis(eye).reshape(n_code, -1)  # rows: Phi^T e_i
    exact = np.linalg.eigvalsh(M @ M.T).max()
    assert exact <= op.lipschitz() <= 1.02 * exact + 1e-12


def test_dense_operator_maps(xp):
    r = np.random.default_rng(0)
    phi = r.standard_normal((4, 3))
    op = DenseDictionary(xp.asarray(phi))
    s = r.standard_normal((2, 3))
    np.testing.assert_allclose(to_numpy(op.analysis(xp.asarray(s))), s @ phi.T)
    np.testing.assert_allclose(op.lipschitz(), np.linalg.svd(phi, compute_uv=False)[0] ** 2)


def test_power_iteration_diagonal():
    d = np.array([1.0, 5.0, 2.0])
    lam, v = power_iteration(lambda v: d * v, (3,), np, np.float64, n_iter=200)
    assert abs(lam - 5.0) < 1e-8 and abs(abs(v[1]) - 1) < 1e-6
