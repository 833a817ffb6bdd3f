"""Fused solver updates against the plain formulas."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparsecoding.backend import to_numpy
from sparsecoding.ops.fused import gap_terms, lca_step, momentum, prox_step


def soft(v, t, nonneg):
    return np.maximum(v - t, 0) if nonneg else np.sign(v) * np.maximum(np.abs(v) - t, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(n=st.integers(1, 5), m=st.integers(1, 40), seed=st.integers(0, 2**31), nonneg=st.booleans())
def test_fused_updates_match_formulas(xp, engines, dtype, n, m, seed, nonneg):
    r = np.random.default_rng(seed)
    u, c, a = (r.standard_normal((n, m)).astype(dtype) for _ in range(3))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    u2, a2 = lca_step(xp.asarray(u.copy()), xp.asarray(c), xp.asarray(a.copy()), 0.1, 0.3, nonneg)
    u_ref = u + 0.1 * (c + a - u)
    np.testing.assert_allclose(to_numpy(u2), u_ref, atol=tol)
    np.testing.assert_allclose(to_numpy(a2), soft(u_ref, 0.3, nonneg), atol=tol)
    out, dots = prox_step(xp.asarray(u), xp.asarray(c), xp.asarray(a), 0.5, 0.2, nonneg)
    ref = soft(u + 0.5 * c, 0.2, nonneg)
    np.testing.assert_allclose(to_numpy(out), ref, atol=tol)
    np.testing.assert_allclose(to_numpy(dots), ((u - ref) * (ref - a)).sum(1), rtol=1e-4, atol=1e-4)
    beta = r.uniform(0, 1, n)
    np.testing.assert_allclose(to_numpy(momentum(xp.asarray(ref), xp.asarray(a), xp.asarray(beta))),
                               ref + beta[:, None] * (ref - a), atol=tol)
    l1, ac, worst = gap_terms(xp.asarray(a), xp.asarray(c), nonneg)
    np.testing.assert_allclose(to_numpy(l1), np.abs(a).sum(1), rtol=1e-5)
    np.testing.assert_allclose(to_numpy(ac), (a * c).sum(1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(to_numpy(worst), c.max(1) if nonneg else np.abs(c).max(1), rtol=1e-6)
