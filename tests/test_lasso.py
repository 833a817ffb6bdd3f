"""LASSO solvers against each other and against the optimality conditions."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from conftest import duality_gap, kkt_violation_at
from sparsecoding.backend import to_numpy
from sparsecoding.ops import ConvOperator, DenseOperator
from sparsecoding.solvers import coordinate_descent, fista, ista, lasso_energy


def kkt_violation(op, s, a, lam, nonneg):
    """Largest violation of the LASSO optimality conditions at a (0 at the optimum)."""
    return kkt_violation_at(to_numpy(a), to_numpy(op.forward(s - op.adjoint(a))), lam, nonneg)


@st.composite
def dense_problems(draw):
    k, d, n = draw(st.integers(2, 16)), draw(st.integers(2, 10)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31))
    r = np.random.default_rng(seed)
    phi = r.standard_normal((k, d))
    phi /= np.linalg.norm(phi, axis=1, keepdims=True)
    # nearly duplicate atoms (coherence -> 1) make every solver's convergence arbitrarily slow
    coherence = np.abs(phi @ phi.T - np.eye(k)).max()
    assume(coherence < 0.995)
    s = r.standard_normal((n, d))
    lam = draw(st.floats(0.05, 0.8))
    return phi, s, lam, draw(st.booleans())


@st.composite
def conv_problems(draw):
    dims = draw(st.integers(1, 2))
    k = draw(st.sampled_from([1, 3, 5]))
    stride = draw(st.integers(1, 2))
    size = draw(st.integers(k + 1, 12 if dims == 1 else 8))
    c, kk, n = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 2))
    r = np.random.default_rng(draw(st.integers(0, 2**31)))
    phi = r.standard_normal((kk, c, *([k] * dims)))
    phi /= np.sqrt((phi**2).reshape(kk, -1).sum(1)).reshape(-1, *([1] * (dims + 1)))
    flat = phi.reshape(kk, -1)
    assume(np.abs(flat @ flat.T - np.eye(kk)).max() < 0.995)  # no nearly duplicate atoms
    s = r.standard_normal((n, c, *([size] * dims)))
    pad = draw(st.sampled_from(["same", "valid"]))
    return ConvOperator(phi, s.shape[2:], stride, pad), s, draw(st.floats(0.05, 0.8)), draw(st.booleans())


@given(dense_problems())
def test_dense_solvers_agree_and_satisfy_kkt(prob):
    phi, s, lam, nonneg = prob
    op = DenseOperator(phi)
    ref = coordinate_descent(op, s, lam, nonneg=nonneg, max_iter=20000, tol=1e-13)
    assert kkt_violation(op, s, ref.codes, lam, nonneg) < 1e-7
    e_ref = to_numpy(ref.energy)
    for solver in (ista, fista):
        res = solver(op, s, lam, nonneg=nonneg, max_iter=50000, tol=1e-15, check_every=50)
        np.testing.assert_allclose(to_numpy(res.energy), e_ref, rtol=1e-7, atol=1e-9)
        assert kkt_violation(op, s, res.codes, lam, nonneg) < 1e-4
    if phi.shape[0] <= phi.shape[1]:  # full column rank: strictly convex, the code is unique
        res = fista(op, s, lam, nonneg=nonneg, max_iter=50000, tol=1e-15)
        np.testing.assert_allclose(to_numpy(res.codes), to_numpy(ref.codes), atol=1e-5)


@given(conv_problems())
def test_conv_fista_and_ista_reach_the_minimum_certified_by_duality(engines, prob):
    op, s, lam, nonneg = prob
    f = fista(op, s, lam, nonneg=nonneg, max_iter=20000, tol=1e-15)
    i = ista(op, s, lam, nonneg=nonneg, max_iter=50000, tol=1e-15, check_every=50)
    ef, ei = to_numpy(f.energy), to_numpy(i.energy)
    gf, gi = duality_gap(op, s, f.codes, lam, nonneg), duality_gap(op, s, i.codes, lam, nonneg)
    assert np.all(gf >= -1e-9) and np.all(gi >= -1e-9)  # weak duality: the certificate is valid
    assert np.all(gf <= 1e-7 * np.maximum(ef, 1))  # FISTA at the minimum
    assert np.all(gi <= 1e-4 * np.maximum(ei, 1))  # ISTA (O(1/k)) close to it
    assert np.all(ef <= ei + 1e-9 * np.maximum(ei, 1))
    assert kkt_violation(op, s, f.codes, lam, nonneg) < 1e-5


@given(dense_problems())
def test_large_lambda_gives_zero_code(prob):
    phi, s, _, nonneg = prob
    op = DenseOperator(phi)
    b = s @ phi.T
    lam = (b.max() if nonneg else np.abs(b).max()) + 1e-9
    lam = max(lam, 1e-9)
    for solver in (fista, coordinate_descent):
        assert np.all(to_numpy(solver(op, s, lam, nonneg=nonneg).codes) == 0)


@given(st.integers(1, 8), st.integers(0, 2**31), st.floats(0.0, 1.0), st.booleans())
def test_orthonormal_dictionary_closed_form(d, seed, lam, nonneg):
    r = np.random.default_rng(seed)
    q, _ = np.linalg.qr(r.standard_normal((d, d)))
    s = r.standard_normal((3, d))
    b = s @ q.T
    expect = np.maximum(b - lam, 0) if nonneg else np.sign(b) * np.maximum(np.abs(b) - lam, 0)
    for solver in (fista, coordinate_descent):
        np.testing.assert_allclose(to_numpy(solver(DenseOperator(q), s, lam, nonneg=nonneg, tol=1e-14).codes),
                                   expect, atol=1e-9)


@given(dense_problems(), st.floats(0.1, 10.0))
def test_scaling_input_and_lambda_scales_code(prob, c):
    phi, s, lam, nonneg = prob
    op = DenseOperator(phi)
    a1 = coordinate_descent(op, s, lam, nonneg=nonneg, max_iter=20000, tol=1e-14)
    a2 = coordinate_descent(op, c * s, c * lam, nonneg=nonneg, max_iter=20000, tol=1e-14)
    np.testing.assert_allclose(to_numpy(a2.energy), c * c * to_numpy(a1.energy), rtol=1e-8)
    if phi.shape[0] <= phi.shape[1]:
        np.testing.assert_allclose(to_numpy(a2.codes), c * to_numpy(a1.codes), atol=1e-6 * max(c, 1))


def test_solvers_on_backend(xp):
    r = np.random.default_rng(1)
    phi = r.standard_normal((12, 6))
    phi /= np.linalg.norm(phi, axis=1, keepdims=True)
    s = r.standard_normal((3, 6))
    ref = coordinate_descent(DenseOperator(phi), s, 0.2, tol=1e-13)
    res = fista(DenseOperator(xp.asarray(phi)), xp.asarray(s), 0.2, max_iter=20000, tol=1e-15)
    np.testing.assert_allclose(to_numpy(res.energy), to_numpy(ref.energy), rtol=1e-8)


def test_bad_input():
    op = DenseOperator(np.eye(3))
    with pytest.raises(ValueError, match="lambda_"):
        fista(op, np.zeros((2, 3)), -1.0)
    with pytest.raises(ValueError, match="shape"):
        fista(op, np.zeros((2, 4)), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        ista(op, np.full((2, 3), np.nan), 0.1)
    with pytest.raises(ValueError, match="step"):
        ista(op, np.zeros((2, 3)), 0.1, step=5.0)
    with pytest.raises(TypeError, match="Dense"):
        coordinate_descent(ConvOperator(np.ones((1, 1, 3)), (5,), 1, "same"), np.zeros((1, 1, 5)), 0.1)


def test_energy_is_the_lasso_objective():
    r = np.random.default_rng(2)
    phi, s, a = r.standard_normal((5, 4)), r.standard_normal((2, 4)), r.standard_normal((2, 5))
    e = lasso_energy(DenseOperator(phi), s, a, 0.3)
    expect = [0.5 * np.sum((s[i] - phi.T @ a[i]) ** 2) + 0.3 * np.abs(a[i]).sum() for i in range(2)]
    np.testing.assert_allclose(e, expect)


def test_weighted_energy_and_masked_solvers_on_backend(xp):
    # lasso_energy(mask=) is the weighted objective; FISTA, ISTA and CD (one Gram matrix per sample,
    # or one for a shared weight) reach the same weighted minimum, on every backend
    r = np.random.default_rng(3)
    phi, s, a = r.standard_normal((5, 4)), r.standard_normal((2, 4)), r.standard_normal((2, 5))
    w = r.uniform(0, 2, (2, 4))
    e = lasso_energy(DenseOperator(phi), s, a, 0.3, mask=w)
    expect = [0.5 * np.sum((w[i] * (s[i] - phi.T @ a[i])) ** 2) + 0.3 * np.abs(a[i]).sum() for i in range(2)]
    np.testing.assert_allclose(e, expect)
    phi = phi / np.linalg.norm(phi, axis=1, keepdims=True)
    for mask in (w, w[0]):
        ref = to_numpy(coordinate_descent(DenseOperator(phi), s, 0.2, tol=1e-13, max_iter=20000, mask=mask).energy)
        for solver in (fista, ista):
            res = solver(DenseOperator(xp.asarray(phi)), xp.asarray(s), 0.2, max_iter=50000, tol=1e-15,
                         mask=xp.asarray(mask))
            np.testing.assert_allclose(to_numpy(res.energy), ref, rtol=1e-8)


def enumerated_lasso(phi, s, lam, nonneg):
    """The exact LASSO minimiser of one sample by enumeration (independent of every solver):
    for each support and sign pattern, the stationary point ``G_SS a_S = b_S - lambda z_S`` is
    the optimum iff its signs are ``z`` and ``|b_j - G_j a| <= lambda`` off the support
    (``<=`` without the absolute value for ``a >= 0``). Needs full column rank (K <= D)."""
    import itertools

    k = phi.shape[0]
    G, b = phi @ phi.T, phi @ s
    for size in range(k + 1):
        for support in itertools.combinations(range(k), size):
            idx = list(support)
            for z in itertools.product(*[[1.0] if nonneg else [1.0, -1.0]] * size):
                a = np.zeros(k)
                if size:
                    a[idx] = np.linalg.solve(G[np.ix_(idx, idx)], b[idx] - lam * np.asarray(z))
                    if np.any(a[idx] * np.asarray(z) <= 0):
                        continue
                c = b - G @ a
                off = np.setdiff1d(np.arange(k), idx)
                if np.all((c[off] if nonneg else np.abs(c[off])) <= lam * (1 + 1e-12)):
                    return a
    raise AssertionError("no stationary point found")


@given(st.integers(1, 5), st.integers(0, 2**31), st.floats(0.02, 0.9), st.booleans())
def test_path_is_the_exact_minimiser_by_enumeration(k, seed, lam, nonneg):
    # full column rank (K <= D): the minimiser is unique, the path must land on it to rounding
    r = np.random.default_rng(seed)
    d = k + int(r.integers(0, 3))
    phi = r.standard_normal((k, d))
    phi /= np.linalg.norm(phi, axis=1, keepdims=True)
    s = r.standard_normal((3, d))
    res = coordinate_descent(DenseOperator(phi), s, lam, nonneg=nonneg)
    expect = np.stack([enumerated_lasso(phi, x, lam, nonneg) for x in s])
    np.testing.assert_allclose(to_numpy(res.codes), expect, atol=1e-10)
    assert res.converged
    # a warm start at the minimiser is certified as it is: no path step, no sweep
    warm = coordinate_descent(DenseOperator(phi), s, lam, nonneg=nonneg, a0=expect)
    assert warm.n_iter == 0
    np.testing.assert_allclose(to_numpy(warm.codes), expect, atol=1e-10)


@given(dense_problems(), st.booleans())
def test_warm_start_and_path_reach_the_certified_minimum(prob, zero_start):
    # the warm-start route (coordinate descent + exact support solve from a0) and the path (no a0)
    # both satisfy the KKT conditions, agree with FISTA at a tight gap, and their reported
    # certificate is an independent duality gap (conftest) within tol
    phi, s, lam, nonneg = prob
    op = DenseOperator(phi)
    r = np.random.default_rng(0)
    a0 = np.zeros((s.shape[0], phi.shape[0])) if zero_start else r.standard_normal((s.shape[0], phi.shape[0]))
    if nonneg:
        a0 = np.abs(a0)
    ref = fista(op, s, lam, nonneg=nonneg, max_iter=50000, tol=1e-15)
    for res in (coordinate_descent(op, s, lam, nonneg=nonneg, tol=1e-12, max_iter=20000),
                coordinate_descent(op, s, lam, nonneg=nonneg, tol=1e-12, max_iter=20000, a0=a0)):
        assert res.converged
        assert kkt_violation(op, s, res.codes, lam, nonneg) < 1e-7
        e = to_numpy(res.energy)
        np.testing.assert_allclose(e, to_numpy(ref.energy), rtol=1e-7, atol=1e-9)
        gap = duality_gap(op, s, res.codes, lam, nonneg)
        assert np.all(gap <= 1e-9 * np.maximum(e, 1))
        assert 0 <= res.history[-1][1] <= 1e-9
        # the reported energies (computed inside the kernel) are those of the returned codes
        np.testing.assert_allclose(e, to_numpy(lasso_energy(op, s, res.codes, lam)), rtol=1e-12, atol=1e-14)


@given(st.integers(1, 12), st.integers(0, 2**31), st.data())
def test_path_inverse_updates_match_the_inverse(n, seed, data):
    # the path's rank-one updates of G_SS^{-1} (an atom joins, an atom leaves) against np.linalg.inv
    # of the enlarged and of the reduced Gram block
    from sparsecoding.solvers.lasso import _inv_append, _inv_delete

    r = np.random.default_rng(seed)
    k = n + 4
    phi = r.standard_normal((k, n + 6))
    G = phi @ phi.T
    act = r.permutation(k).astype(np.int64)
    Gi = np.zeros((n + 2, n + 2))
    u = np.zeros(k)
    for size in range(n + 1):  # grow the block one atom at a time
        assert _inv_append(G, Gi, act, size, act[size], u)
        sub = act[: size + 1]
        np.testing.assert_allclose(Gi[: size + 1, : size + 1], np.linalg.inv(G[np.ix_(sub, sub)]),
                                   rtol=1e-8, atol=1e-10)
    drop = data.draw(st.integers(0, n))
    _inv_delete(Gi, n + 1, drop, u)
    sub = np.delete(act[: n + 1], drop)
    np.testing.assert_allclose(Gi[:n, :n], np.linalg.inv(G[np.ix_(sub, sub)]), rtol=1e-8, atol=1e-10)
    # an atom in the span of the active ones is refused (the Gram block would be singular)
    dup = np.concatenate([phi, (phi[sub[0]] + phi[sub[-1]])[None]])
    Gd = dup @ dup.T
    Gi2 = np.zeros((n + 2, n + 2))
    for size in range(n):
        assert _inv_append(Gd, Gi2, sub, size, sub[size], u)
    assert not _inv_append(Gd, Gi2, np.concatenate([sub, [k]]).astype(np.int64), n, k, u)


@pytest.mark.parametrize("nonneg", [False, True])
def test_path_on_a_coherent_dictionary_reaches_the_certified_optimum(nonneg):
    # overlapping Gaussian bumps (neighbouring atoms correlate at 0.99, restricted Gram blocks with
    # condition numbers up to ~1e7): the inverse-updating path drifts on some samples (measured: 1-3 of
    # 200 refused a join and were left to coordinate descent, unconverged); those run the path again
    # with the Cholesky factor. Checked against the optimality conditions and lists (and arrays) as input.
    x = np.arange(64.0)
    phi = np.exp(-0.5 * ((x[None] - np.linspace(0, 63, 128)[:, None]) / 4.0) ** 2)
    phi /= np.linalg.norm(phi, axis=1, keepdims=True)
    s = np.random.default_rng(1).standard_normal((200, 64)).cumsum(1) / 4
    op = DenseOperator(phi)
    res = coordinate_descent(op, s, 0.1, nonneg=nonneg)
    assert res.converged
    assert kkt_violation(op, s, res.codes, 0.1, nonneg) < 1e-8
    gap = duality_gap(op, s, res.codes, 0.1, nonneg)
    assert np.all(gap <= 1e-8 * to_numpy(res.energy))
    listed = coordinate_descent(op, s[:3].tolist(), 0.1, nonneg=nonneg)
    np.testing.assert_allclose(to_numpy(listed.codes), to_numpy(res.codes)[:3], atol=1e-9)  # (GEMM blocking)


@pytest.mark.parametrize("nonneg", [False, True])
def test_degenerate_dictionaries_fall_back_and_converge(nonneg):
    # duplicated atoms: the signed path meets a singular restricted Gram matrix (on these samples
    # it stops after 2 steps) and coordinate descent finishes; a 6x overcomplete dictionary at a
    # small lambda (supports of D atoms, ill-conditioned); the KKT conditions hold and FISTA agrees
    # on the energy
    r = np.random.default_rng(5)
    base = r.standard_normal((6, 8))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    wide = r.standard_normal((24, 4))
    wide /= np.linalg.norm(wide, axis=1, keepdims=True)
    for phi, lam in ((np.concatenate([base, base[:3]]), 0.1), (wide, 0.01)):
        op = DenseOperator(phi)
        s = r.standard_normal((5, phi.shape[1]))
        res = coordinate_descent(op, s, lam, nonneg=nonneg, tol=1e-12, max_iter=50000)
        assert kkt_violation(op, s, res.codes, lam, nonneg) < 1e-6
        ref = fista(op, s, lam, nonneg=nonneg, max_iter=100000, tol=1e-14)
        np.testing.assert_allclose(to_numpy(res.energy), to_numpy(ref.energy), rtol=1e-7, atol=1e-9)


def test_float32_inputs_and_zero_lambda():
    # float32 data: float64 arithmetic inside, codes back in float32 at the float64 optimum's energy;
    # lambda = 0 with K <= D: the least-squares solution
    r = np.random.default_rng(7)
    phi = r.standard_normal((5, 9))
    phi /= np.linalg.norm(phi, axis=1, keepdims=True)
    s = r.standard_normal((4, 9))
    res32 = coordinate_descent(DenseOperator(phi.astype(np.float32)), s.astype(np.float32), 0.2)
    res64 = coordinate_descent(DenseOperator(phi), s, 0.2)
    assert res32.codes.dtype == np.float32
    np.testing.assert_allclose(res32.codes, res64.codes, atol=1e-5)
    ls = np.linalg.lstsq(phi.T, s.T, rcond=None)[0].T
    np.testing.assert_allclose(to_numpy(coordinate_descent(DenseOperator(phi), s, 0.0).codes), ls, atol=1e-9)
