"""The operator contract: dense operator against explicit sums, the dot test and its failures."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import central_difference
from sparsecoding.ops.linop import DenseOperator, LinearOperator, dottest, power_iteration


@given(k=st.integers(1, 7), d=st.integers(1, 9), n=st.integers(0, 4), seed=st.integers(0, 2**31))
def test_dense_operator_matches_explicit_sums(k, d, n, seed):
    r = np.random.default_rng(seed)
    W, x, y = r.standard_normal((k, d)), r.standard_normal((n, d)), r.standard_normal((n, k))
    op = DenseOperator(W)
    np.testing.assert_allclose(op.forward(x), np.einsum("kd,nd->nk", W, x), atol=1e-12)
    np.testing.assert_allclose(op.adjoint(y), np.einsum("kd,nk->nd", W, y), atol=1e-12)
    dottest(op, seed=seed)
    assert op.lipschitz() == pytest.approx(np.linalg.norm(W, 2) ** 2, rel=1e-10)


def test_weight_grad_is_the_derivative_of_the_pairing():
    r = np.random.default_rng(0)
    W, x, y = r.standard_normal((3, 4)), r.standard_normal((5, 4)), r.standard_normal((5, 3))
    fd = central_difference(lambda w: float(np.sum(DenseOperator(w).forward(x) * y)), W)
    np.testing.assert_allclose(DenseOperator(W).weight_grad(x, y), fd, rtol=1e-7, atol=1e-8)


def test_default_forward_residual_and_lipschitz_by_power_iteration():
    r = np.random.default_rng(1)
    W = r.standard_normal((6, 4))

    class Plain(LinearOperator):  # only forward/adjoint: every other method is the contract's default
        in_shape, out_shape, dtype, xp = (4,), (6,), np.float64, np

        def forward(self, x):
            return x @ W.T

        def adjoint(self, y):
            return y @ W

    op, s, a = Plain(), r.standard_normal((2, 4)), r.standard_normal((2, 6))
    c, res = op.forward_residual(op.residual_plan(s), a)
    np.testing.assert_allclose(res, s - a @ W, atol=1e-12)
    np.testing.assert_allclose(c, (s - a @ W) @ W.T, atol=1e-12)
    assert op.lipschitz(n_iter=500) == pytest.approx(np.linalg.norm(W, 2) ** 2, rel=1e-6)
    lam, v = power_iteration(lambda v: v @ (W.T @ W), (1, 4), np, np.float64, n_iter=500)
    assert lam == pytest.approx(np.linalg.eigvalsh(W.T @ W)[-1], rel=1e-6)


def test_dottest_catches_a_wrong_adjoint():
    W = np.random.default_rng(2).standard_normal((3, 5))

    class Broken(DenseOperator):
        def adjoint(self, y):
            return 1.001 * (y @ self.W)

    with pytest.raises(AssertionError, match="fails the dot test"):
        dottest(Broken(W))


@pytest.mark.parametrize("W,err,match", [(np.zeros((2, 3), np.int64), TypeError, "float32 or float64"),
                                         (np.zeros((2, 3), np.complex128), TypeError, "float32 or float64"),
                                         (np.zeros(3), ValueError, r"shape \(K, D\)")])
def test_dense_operator_bad_weights(W, err, match):
    with pytest.raises(err, match=match):
        DenseOperator(W)


def test_dense_operator_bad_input_shape():
    op = DenseOperator(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3\)"):
        op.forward(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"y must have shape \(N, 2\)"):
        op.adjoint(np.zeros((4, 3)))


def _every_operator():
    """(id, factory) for every operator, engine family, method, pool and layout."""
    from sparsecoding.ops import AvgPool, ConvOperator, MaxPool

    r = np.random.default_rng(7)
    cases = [("dense", lambda: DenseOperator(r.standard_normal((5, 7))))]
    layouts = [("channels_first", "channels_first"), ("channels_first", "channels_last"),
               ("channels_last", "channels_last"), ("channels_last", "channels_first")]
    for family in ("native", "generic"):
        for method in ("im2col", "fft"):
            for layout, code_layout in layouts:
                for d, shape, stride, pad in [(1, (11,), 2, 1), (2, (7, 6), (2, 1), "same"), (3, (5, 4, 5), 1, 0)]:
                    w = r.standard_normal((3, 2, *([3] * d)))
                    cases.append((f"conv{d}d-{method}-{family}-{layout}-{code_layout}", family,
                                  lambda w=w, shape=shape, stride=stride, pad=pad, method=method, layout=layout,
                                  code_layout=code_layout: ConvOperator(w, shape, stride, pad, method=method,
                                                                        layout=layout, code_layout=code_layout)))
        for pool in (MaxPool, AvgPool):
            for layout in ("channels_first", "channels_last"):
                for spatial, k, s in [((9,), 2, None), ((6, 7), 3, 2), ((4, 5, 4), 2, 1)]:
                    cases.append((f"{pool.__name__}{len(spatial)}d-{family}-{layout}", family,
                                  lambda pool=pool, spatial=spatial, k=k, s=s, layout=layout:
                                  pool(2, spatial, k, s, layout=layout, dtype=np.float64)))
    return [c if len(c) == 3 else (c[0], "native", c[1]) for c in cases]


@pytest.mark.parametrize("name,family,make", _every_operator(), ids=[c[0] for c in _every_operator()])
def test_dottest_every_operator_engine_pool_and_layout(name, family, make):
    from sparsecoding.backend import use_engines

    with use_engines(family):
        op = make()
    if hasattr(op, "engine"):
        assert op.engine.endswith(family)
    lhs, rhs = dottest(op, n=3)
    assert lhs == pytest.approx(rhs, rel=1e-10)
    view = op.iteration_view()  # the solvers' view: the same map with codes in the engine's layout
    dottest(view, n=2)
    a = np.random.default_rng(0).standard_normal((2, *op.out_shape))
    np.testing.assert_allclose(view.to_outer(view.to_inner(a)), a)
