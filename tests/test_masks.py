"""Masked and weighted data fidelity: E(a) = 1/2 ||W . (s - Phi^T a)||^2 + lambda ||a||_1.

References independent of the solvers: the weighted LASSO optimality conditions written out,
scipy.optimize on the weighted objective (split a = p - n, L-BFGS-B with bounds), an explicit
weighted ISTA loop in numpy, the weak-duality bound, central differences for the dictionary step.
"""
import importlib.util
import os

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from conftest import central_difference, extra_host_reads_of_20_steps
from sparsecoding.backend import to_numpy
from sparsecoding.lca import LCA, LCAConv1D, LCAConv2D, run_lca
from sparsecoding.lca.masks import masked_standardize
from sparsecoding.ops import ConvOperator, DenseOperator
from sparsecoding.ops.elementwise import nonneg_soft_threshold, soft_threshold
from sparsecoding.solvers import WeightedOperator, check_mask, coordinate_descent, duality_gap, fista, ista

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def weighted_energy(op, s, a, lam, w):
    n = s.shape[0]
    r = to_numpy(w * (s - op.adjoint(a))).reshape(n, -1)
    return 0.5 * (r * r).sum(1) + lam * np.abs(to_numpy(a)).reshape(n, -1).sum(1)


def weighted_kkt_violation(op, s, a, lam, nonneg, w):
    """Largest violation of the weighted LASSO conditions with c = Phi (W^2 . (s - Phi^T a)):
    c_i = lambda sign(a_i) on the support, |c_i| <= lambda off it (c_i <= lambda, a >= 0 when nonneg)."""
    c = to_numpy(op.forward(w * w * (s - op.adjoint(a))))
    a = to_numpy(a)
    on = a != 0
    if nonneg:
        v = [np.abs(c[on] - lam), np.maximum(c[~on] - lam, 0), np.maximum(-a, 0).ravel()]
    else:
        v = [np.abs(c[on] - lam * np.sign(a[on])), np.maximum(np.abs(c[~on]) - lam, 0)]
    return max(x.max(initial=0) for x in v)


def unit_rows(phi):
    return phi / np.sqrt((phi**2).reshape(phi.shape[0], -1).sum(1)).reshape(-1, *([1] * (phi.ndim - 1)))


@st.composite
def dense_weighted(draw):
    k, d, n = draw(st.integers(2, 12)), draw(st.integers(3, 10)), draw(st.integers(1, 3))
    r = np.random.default_rng(draw(st.integers(0, 2**31)))
    phi = unit_rows(r.standard_normal((k, d)))
    assume(np.abs(phi @ phi.T - np.eye(k)).max() < 0.99)
    s = r.standard_normal((n, d))
    kind = draw(st.sampled_from(["binary", "weights", "shared"]))
    if kind == "binary":
        w = (r.random((n, d)) < 0.6).astype(float)
    elif kind == "weights":
        w = r.uniform(0.0, 2.0, (n, d))
    else:
        w = r.uniform(0.2, 1.5, (d,))
    return phi, s, w, draw(st.floats(0.05, 0.6)), draw(st.booleans())


@st.composite
def conv_weighted(draw):
    dims = draw(st.integers(1, 2))
    k = draw(st.sampled_from([3, 5]))
    stride = draw(st.integers(1, 2))
    size = draw(st.integers(k + 1, 12 if dims == 1 else 8))
    r = np.random.default_rng(draw(st.integers(0, 2**31)))
    phi = unit_rows(r.standard_normal((3, 2, *([k] * dims))))
    flat = phi.reshape(3, -1)
    assume(np.abs(flat @ flat.T - np.eye(3)).max() < 0.99)
    s = r.standard_normal((2, 2, *([size] * dims)))
    binary = draw(st.booleans())
    w = (r.random(s.shape) < 0.6).astype(float) if binary else r.uniform(0.0, 1.5, s.shape)
    pad = draw(st.sampled_from(["same", "valid"]))
    return ConvOperator(phi, s.shape[2:], stride, pad), s, w, draw(st.floats(0.05, 0.6)), draw(st.booleans())


# ----------------------------------------------------------------------------- optimality conditions
@given(dense_weighted())
def test_dense_weighted_kkt_and_certificate(prob):
    phi, s, w, lam, nonneg = prob
    op = DenseOperator(phi)
    for solver in (fista, ista):
        res = solver(op, s, lam, nonneg=nonneg, mask=w, max_iter=50000, tol=1e-14, check_every=20)
        assert res.converged
        assert weighted_kkt_violation(op, s, res.codes, lam, nonneg, w) < 1e-5
        np.testing.assert_allclose(to_numpy(res.energy), weighted_energy(op, s, res.codes, lam, w), rtol=1e-12)
    ref = coordinate_descent(op, s, lam, nonneg=nonneg, max_iter=50000, tol=1e-14, mask=w)
    assert weighted_kkt_violation(op, s, ref.codes, lam, nonneg, w) < 1e-7
    np.testing.assert_allclose(to_numpy(res.energy), to_numpy(ref.energy), rtol=1e-8, atol=1e-12)


@settings(max_examples=15)
@given(conv_weighted())
def test_conv_weighted_kkt(engines, prob):
    op, s, w, lam, nonneg = prob
    res = fista(op, s, lam, nonneg=nonneg, mask=w, max_iter=20000, tol=1e-13)
    assert weighted_kkt_violation(op, s, res.codes, lam, nonneg, w) < 1e-5


@pytest.mark.parametrize("nonneg", [False, True])
def test_conv_weighted_lca_matches_fista_and_kkt(engines, nonneg):
    # the LCA dynamics reach the FISTA minimum of the weighted problem (energy) and its KKT conditions
    r = np.random.default_rng(2)
    op = ConvOperator(unit_rows(r.standard_normal((3, 2, 3, 3))), (8, 8), 2, "same")
    s = r.standard_normal((2, 2, 8, 8))
    w = r.uniform(0.0, 1.5, s.shape) * (r.random(s.shape) < 0.7)
    lam = 0.2
    res = fista(op, s, lam, nonneg=nonneg, mask=w, max_iter=20000, tol=1e-14)
    T = nonneg_soft_threshold if nonneg else soft_threshold
    tau = 1.05 * WeightedOperator(op, check_mask(w, s.shape, s.dtype)).lipschitz()
    out = run_lca(op, s, lam, tau, lambda u: T(u, lam), 20000, tol=1e-12, soft=(lam, nonneg), mask=w)
    assert out.converged
    np.testing.assert_allclose(to_numpy(out.energy), to_numpy(res.energy), rtol=1e-7)
    assert weighted_kkt_violation(op, s, out.codes, lam, nonneg, w) < 1e-4
    assert weighted_kkt_violation(op, s, res.codes, lam, nonneg, w) < 1e-6


@given(dense_weighted(), st.integers(0, 2**31))
def test_weighted_duality_gap_bounds_the_distance_to_the_optimum(prob, seed):
    # the certificate of the module notes, at arbitrary codes: gap(a) >= E_W(a) - E_W* >= 0
    phi, s, w, lam, nonneg = prob
    op = DenseOperator(phi)
    best = to_numpy(coordinate_descent(op, s, lam, nonneg=nonneg, max_iter=50000, tol=1e-14, mask=w).energy)
    r = np.random.default_rng(seed)
    for scale in (0.0, 0.01, 0.3, 2.0):
        a = r.standard_normal((s.shape[0], phi.shape[0])) * scale
        if nonneg:
            a = np.abs(a)
        res = w * (s - a @ phi)  # the weighted residual r~ = W . r
        c = (w * res) @ phi.T  # Phi (W^2 . r)
        e, gap = duality_gap(a, c, res, lam, nonneg)
        np.testing.assert_allclose(e, weighted_energy(op, s, a, lam, w), rtol=1e-12)
        assert np.all(gap >= e - best - 1e-9 * np.maximum(e, 1))


# ----------------------------------------------------------------------------- ones and masked entries
def test_mask_of_ones_is_the_unmasked_solver():
    r = np.random.default_rng(1)
    phi = unit_rows(r.standard_normal((12, 8)))
    s = r.standard_normal((4, 8))
    op = DenseOperator(phi)
    for solver in (fista, ista):
        for nonneg in (False, True):
            plain = solver(op, s, 0.2, nonneg=nonneg, tol=1e-10, max_iter=3000)
            ones = solver(op, s, 0.2, nonneg=nonneg, tol=1e-10, max_iter=3000, mask=np.ones(8))
            assert ones.n_iter == plain.n_iter  # same steps, same iterates: bit-identical (dense)
            np.testing.assert_array_equal(ones.codes, plain.codes)
            np.testing.assert_array_equal(ones.energy, plain.energy)
    T = lambda u: soft_threshold(u, 0.2)  # noqa: E731
    plain = run_lca(op, s, 0.2, 2 * op.lipschitz(), T, 300, soft=(0.2, False))
    ones = run_lca(op, s, 0.2, 2 * op.lipschitz(), T, 300, soft=(0.2, False), mask=np.ones((4, 8)))
    np.testing.assert_array_equal(ones.codes, plain.codes)
    np.testing.assert_allclose(ones.recons, plain.recons, rtol=0, atol=1e-15)  # Phi^T a against s - r


@given(st.integers(0, 2**31), st.booleans())
def test_mask_of_ones_conv_to_solver_tolerance(engines, seed, nonneg):
    r = np.random.default_rng(seed)
    phi = unit_rows(r.standard_normal((4, 2, 3, 3)))
    s = r.standard_normal((2, 2, 8, 8))
    op = ConvOperator(phi, (8, 8), 2, "same")
    plain = fista(op, s, 0.2, nonneg=nonneg, tol=1e-12, max_iter=20000)
    ones = fista(op, s, 0.2, nonneg=nonneg, tol=1e-12, max_iter=20000, mask=np.ones((8, 8)))
    np.testing.assert_allclose(ones.energy, plain.energy, rtol=1e-10)
    np.testing.assert_allclose(ones.codes, plain.codes, atol=1e-6)


def _scramble(s, w, seed=7):
    """``s`` with other (finite, large) values where ``w == 0``."""
    r = np.random.default_rng(seed)
    return np.where(w == 0, 100.0 * r.standard_normal(s.shape), s)


@pytest.mark.parametrize("shape", ["dense", "conv"])
def test_masked_entries_do_not_influence_the_solvers(engines, shape):
    r = np.random.default_rng(3)
    if shape == "dense":
        op = DenseOperator(unit_rows(r.standard_normal((10, 12))))
        s = r.standard_normal((3, 12))
    else:
        op = ConvOperator(unit_rows(r.standard_normal((4, 2, 5, 5))), (9, 9), 2, "same")
        s = r.standard_normal((2, 2, 9, 9))
    w = (r.random(s.shape) < 0.5).astype(float)
    s2 = _scramble(s, w)
    for solver in (fista, ista):
        a, b = (solver(op, x, 0.1, mask=w, tol=1e-8, max_iter=500) for x in (s, s2))
        assert a.n_iter == b.n_iter
        np.testing.assert_array_equal(a.codes, b.codes)
    T = lambda u: soft_threshold(u, 0.1)  # noqa: E731
    L = WeightedOperator(op, w).lipschitz()
    a, b = (run_lca(op, x, 0.1, 1.5 * L, T, 200, soft=(0.1, False), mask=w, tol=1e-6) for x in (s, s2))
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.recons, b.recons)  # the synthesis fills the masked entries alike


@pytest.mark.parametrize("solver", ["lca", "fista"])
@pytest.mark.parametrize("layer_cls", ["dense", "conv"])
def test_masked_entries_do_not_influence_the_layers(solver, layer_cls):
    r = np.random.default_rng(4)
    if layer_cls == "dense":
        layer = LCA(16, 12, lambda_=0.2, tau=20, solver=solver, dtype="float64", seed=0, lca_iters=300, tol=1e-8,
                    return_vars=("acts", "recons", "inputs"))
        s = r.standard_normal((3, 12)) * 3 + 1
    else:
        layer = LCAConv2D(4, 2, kernel_size=3, stride=2, lambda_=0.2, tau=20, solver=solver, dtype="float64", seed=0, lca_iters=300,
                          tol=1e-8, return_vars=("acts", "recons", "inputs"))
        s = r.standard_normal((2, 2, 8, 8)) * 3 + 1
    w = (r.random(s.shape) < 0.6).astype(float)
    a1, rec1, in1 = layer(s, mask=w)
    a2, rec2, in2 = layer(_scramble(s, w), mask=w)  # preprocessing statistics from the observed entries
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(rec1, rec2)
    np.testing.assert_array_equal(in1, in2)
    assert np.all(in1[w == 0] == 0)
    # the preprocessed observed entries are standardised over the observed entries (ddof=1)
    for i in range(s.shape[0]):
        obs = in1[i][w[i] != 0]
        assert abs(obs.mean()) < 1e-12 and abs(obs.std(ddof=1) - 1) < 1e-9
    out = layer.solve(in1, mask=w)
    np.testing.assert_allclose(layer.energy(in1, out.codes, mask=w), out.energy, rtol=1e-10)


def test_layer_with_mask_of_ones_and_no_standardisation_is_the_unmasked_layer():
    r = np.random.default_rng(5)
    s = r.standard_normal((3, 12))
    for solver in ("lca", "fista"):
        layer = LCA(16, 12, lambda_=0.2, tau=20, solver=solver, dtype="float64", seed=0, lca_iters=200,
                    input_zero_mean=False, input_unit_var=False, return_vars=("acts", "recons", "states"))
        (a0, rec0, u0), (a1, rec1, u1) = layer(s), layer(s, mask=np.ones_like(s))
        np.testing.assert_array_equal(a1, a0)
        np.testing.assert_array_equal(u1, u0)
        np.testing.assert_allclose(rec1, rec0, rtol=0, atol=1e-15)  # Phi^T a against s - r


# ----------------------------------------------------------------------------- brute-force references
def _scipy_weighted_lasso(phi, s, w, lam, nonneg):
    """Minimise the weighted objective with scipy: a = p - n, p, n >= 0 (n = 0 when nonneg), L-BFGS-B."""
    k = phi.shape[0]

    def f(z):
        p, n = z[:k], (0 if nonneg else z[k:])
        a = p - n
        r = w * (s - a @ phi)
        g = -(phi @ (w * r))
        val = 0.5 * r @ r + lam * z.sum()
        return val, (g + lam if nonneg else np.concatenate([g + lam, -g + lam]))

    z0 = np.zeros(k if nonneg else 2 * k)
    res = minimize(f, z0, jac=True, method="L-BFGS-B", bounds=[(0, None)] * len(z0),
                   options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 20000, "maxcor": 30})
    z = res.x
    return z[:k] - (0 if nonneg else z[k:]), res.fun


def _numpy_weighted_ista(phi, s, w, lam, nonneg, n_iter=200000):
    """Plain weighted ISTA to convergence, written out: a <- T(a + (1/L_W) Phi (W^2 (s - Phi^T a)))."""
    L = np.linalg.eigvalsh((phi * w**2) @ phi.T)[-1]
    a = np.zeros(phi.shape[0])
    for _ in range(n_iter):
        z = a + phi @ (w**2 * (s - a @ phi)) / L
        new = np.maximum(z - lam / L, 0) if nonneg else np.sign(z) * np.maximum(np.abs(z) - lam / L, 0)
        if np.abs(new - a).max() <= 1e-14 * max(np.abs(new).max(), 1e-300):
            return new
        a = new
    return a


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_fidelity_against_brute_force(nonneg, seed):
    r = np.random.default_rng(seed)
    phi = unit_rows(r.standard_normal((5, 8)))  # K < D: strictly convex, unique minimiser
    s = r.standard_normal((3, 8))
    w = r.uniform(0.0, 2.0, (3, 8))
    w[:, :2] = 0.0  # some entries fully masked
    lam = 0.15
    op = DenseOperator(phi)
    res = fista(op, s, lam, nonneg=nonneg, mask=w, max_iter=50000, tol=1e-15)
    lca = run_lca(op, s, lam, 1.05 * WeightedOperator(op, w).lipschitz(),
                  (lambda u: nonneg_soft_threshold(u, lam)) if nonneg else (lambda u: soft_threshold(u, lam)),
                  50000, tol=1e-15, soft=(lam, nonneg), mask=w)
    for i in range(3):
        a_sp, e_sp = _scipy_weighted_lasso(phi, s[i], w[i], lam, nonneg)
        a_ist = _numpy_weighted_ista(phi, s[i], w[i], lam, nonneg)
        e_ist = weighted_energy(op, s[i:i + 1], a_ist[None], lam, w[i:i + 1])[0]
        assert to_numpy(res.energy)[i] <= e_sp + 1e-10 * max(e_sp, 1)  # nothing lower than scipy's
        np.testing.assert_allclose(to_numpy(res.energy)[i], e_ist, rtol=1e-10)
        np.testing.assert_allclose(res.codes[i], a_ist, atol=1e-7)
        np.testing.assert_allclose(res.codes[i], a_sp, atol=1e-4)
        np.testing.assert_allclose(lca.codes[i], a_ist, atol=1e-6)


# ----------------------------------------------------------------------------- step bounds
def test_weighted_lipschitz_bound_and_energy_descent():
    r = np.random.default_rng(6)
    phi = unit_rows(r.standard_normal((10, 6)))
    op = DenseOperator(phi)
    w = r.uniform(0, 3.0, (6,))
    W = WeightedOperator(op, check_mask(w, (1, 6), np.float64))
    true = np.linalg.eigvalsh((phi * w**2) @ phi.T)[-1]
    assert true <= W.lipschitz() * (1 + 1e-12)
    np.testing.assert_allclose(W.lipschitz(), (w**2).max() * op.lipschitz(), rtol=1e-12)
    # energy non-increasing along the LCA trajectory at 1/tau = 1/(max(W^2) L)
    s = r.standard_normal((3, 6))
    T = lambda u: soft_threshold(u, 0.1)  # noqa: E731
    out = run_lca(op, s, 0.1, W.lipschitz(), T, 300, track_metrics=True, mask=w)
    e = out.metrics["TotalEnergy"]
    assert np.all(np.diff(e) <= 1e-12 * np.abs(e[:-1]))
    np.testing.assert_allclose(e[-1], weighted_energy(op, s, out.codes, 0.1, w).mean(), rtol=1e-2)
    # the layer checks tau against max(W^2) L: weights of 3 make tau = L/2 unstable
    layer = LCA(10, 6, tau=0.6 * op.lipschitz(), dtype="float64", seed=0, lca_iters=5)
    layer.weights = phi
    layer.solve(s)
    with pytest.raises(ValueError, match="unstable"):
        layer.solve(s, mask=np.full(6, 3.0))


# ----------------------------------------------------------------------------- records and the FISTA layer
def test_layer_outputs_with_mask_both_solvers():
    r = np.random.default_rng(8)
    s = r.standard_normal((2, 1, 10))
    w = (r.random(s.shape) < 0.5).astype(float)
    res = {}
    for solver in ("lca", "fista"):
        layer = LCAConv1D(3, 1, kernel_size=3, stride=1, lambda_=0.1, tau=10, solver=solver, dtype="float64", seed=0, lca_iters=20000,
                          tol=1e-13, nonneg=False, input_zero_mean=False, input_unit_var=False, track_metrics=True)
        out = layer.solve(s, mask=w)
        op = ConvOperator(layer.weights, (10,), 1, "same")
        np.testing.assert_allclose(out.recons, op.adjoint(out.codes), atol=1e-12)
        np.testing.assert_allclose(out.recon_errors, s - out.recons, atol=1e-12)
        np.testing.assert_allclose(out.input_drives, op.forward(w * w * s), atol=1e-12)
        # the potentials of the fixed point: u = Phi (W^2 r) + a
        np.testing.assert_allclose(out.states, op.forward(w * w * out.recon_errors) + out.codes, atol=1e-7)
        np.testing.assert_allclose(out.energy, weighted_energy(op, s, out.codes, 0.1, w), rtol=1e-12)
        l2 = 0.5 * ((w * out.recon_errors) ** 2).sum() / 2
        np.testing.assert_allclose(layer.metrics["L2"][-1], l2, rtol=1e-4)
        res[solver] = out.codes
    np.testing.assert_allclose(res["lca"], res["fista"], atol=1e-6)


def test_recorded_steps_with_mask():
    r = np.random.default_rng(9)
    op = DenseOperator(unit_rows(r.standard_normal((6, 5))))
    s = r.standard_normal((2, 5))
    w = (r.random(s.shape) < 0.5).astype(float)
    T = lambda u: soft_threshold(u, 0.1)  # noqa: E731
    out = run_lca(op, s, 0.1, 2 * op.lipschitz(), T, 30, mask=w, record=("recons", "inputs"), record_all=True)
    assert list(out.all_ts) == ["recons", "inputs"] and len(out.all_ts["recons"]) == 30
    np.testing.assert_array_equal(out.all_ts["inputs"][0], s)
    full = run_lca(op, s, 0.1, 2 * op.lipschitz(), T, 30, mask=w, record=("acts", "recons"), record_all=True)
    for a, rec in zip(full.all_ts["acts"], full.all_ts["recons"]):
        np.testing.assert_allclose(rec, a @ op.W, atol=1e-14)


# ----------------------------------------------------------------------------- checks
def test_bad_masks():
    r = np.random.default_rng(10)
    op = DenseOperator(unit_rows(r.standard_normal((6, 5))))
    s = r.standard_normal((2, 5))
    with pytest.raises(ValueError, match="mask of shape"):
        fista(op, s, 0.1, mask=np.ones(4))
    with pytest.raises(ValueError, match="mask of shape"):
        fista(op, s, 0.1, mask=np.ones((3, 5)))
    with pytest.raises(ValueError, match=">= 0"):
        fista(op, s, 0.1, mask=-np.ones(5))
    with pytest.raises(ValueError, match=">= 0"):
        ista(op, s, 0.1, mask=np.full(5, np.nan))
    with pytest.raises(TypeError, match="mask must be real"):
        fista(op, s, 0.1, mask=np.ones(5) * 1j)
    # bool masks are 0/1 weights
    np.testing.assert_array_equal(fista(op, s, 0.1, mask=np.ones(5, bool)).codes, fista(op, s, 0.1).codes)
    with pytest.raises(ValueError, match="lateral"):
        run_lca(op, s, 0.1, 10.0, lambda u: u, 5, lateral=lambda a: a, mask=np.ones(5))
    layer = LCA(6, 5, lateral="gram", dtype="float64", seed=0, lca_iters=5)
    with pytest.raises(ValueError, match="lateral"):
        layer(s, mask=np.ones(5))
    with pytest.raises(ValueError, match="mask of shape"):
        LCA(6, 5, dtype="float64", seed=0, lca_iters=5)(s, mask=np.ones((2, 4)))


def test_empty_batch_with_mask():
    op = DenseOperator(unit_rows(np.random.default_rng(0).standard_normal((6, 5))))
    s = np.zeros((0, 5))
    assert fista(op, s, 0.1, mask=np.ones(5)).codes.shape == (0, 6)
    assert run_lca(op, s, 0.1, 10.0, lambda u: soft_threshold(u, 0.1), 5, mask=np.ones(5)).codes.shape == (0, 6)


def test_masked_standardize():
    r = np.random.default_rng(11)
    x = r.standard_normal((3, 2, 6)) * 4 + 2
    w = (r.random(x.shape) < 0.6).astype(float)
    y = masked_standardize(x, w)
    for i in range(3):
        obs = x[i][w[i] != 0]
        np.testing.assert_allclose(y[i][w[i] != 0], (obs - obs.mean()) / (obs.std(ddof=1) + 1e-12), rtol=1e-12)
        assert np.all(y[i][w[i] == 0] == 0)
    # constant weights: plain standardisation
    from sparsecoding.data.preprocessing import standardize
    np.testing.assert_allclose(masked_standardize(x, np.full(x.shape, 0.7)), standardize(x), rtol=1e-10, atol=1e-12)
    assert np.all(masked_standardize(x, np.zeros(x.shape)) == 0)  # nothing observed


# ----------------------------------------------------------------------------- dictionary learning
def test_weighted_dictionary_step_is_minus_the_gradient(engines):
    r = np.random.default_rng(12)
    layer = LCAConv1D(3, 2, kernel_size=3, stride=1, dtype="float64", seed=0)
    s = r.standard_normal((2, 2, 7))
    a = r.standard_normal((2, 3, 7)) * (r.random((2, 3, 7)) < 0.5)
    w = r.uniform(0, 1.5, s.shape)

    def energy(phi):
        op = ConvOperator(phi, (7,), 1, "same")
        return 0.5 * ((w * (s - op.adjoint(a))) ** 2).sum() / 2

    op = ConvOperator(layer.weights, (7,), 1, "same")
    grad = layer.dictionary_gradient(a, w * w * (s - op.adjoint(a)))
    np.testing.assert_allclose(grad, central_difference(energy, to_numpy(layer.weights)), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("solver", ["lca", "fista"])
def test_fit_with_mask_ignores_masked_entries(solver):
    r = np.random.default_rng(13)
    X = r.standard_normal((16, 1, 10, 10))
    M = (r.random(X.shape) < 0.5).astype(np.float32)

    def learn(data, mask):
        layer = LCAConv2D(4, 1, kernel_size=3, stride=1, lambda_=0.1, tau=20, eta=0.05, solver=solver, lca_iters=50, seed=0)
        h = layer.fit(data, mask=mask, epochs=2, batch_size=8, progress=False, record_steps=True)
        return layer, h

    a, ha = learn(X, M)
    b, hb = learn(_scramble(X, M).astype(np.float32), M)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert [s["L2"] for s in ha.steps] == [s["L2"] for s in hb.steps]
    # the callable form: the same masks from the batch
    lookup = {X[i].tobytes(): M[i] for i in range(len(X))}
    c, _ = learn(X, lambda batch: np.stack([lookup[np.asarray(x, np.float64).tobytes()] for x in batch]))
    np.testing.assert_array_equal(a.weights, c.weights)
    # a shared mask and the checkpoint setting
    d, _ = learn(X, M[0])
    assert not np.array_equal(d.weights, a.weights)
    with pytest.raises(ValueError, match="mask of shape"):
        learn(X, M[:, :, :5])


def test_fit_mask_is_a_checkpoint_setting(tmp_path):
    from sparsecoding.training import SettingsChanged

    r = np.random.default_rng(14)
    X = r.standard_normal((8, 12)).astype(np.float32)
    M = (r.random(X.shape) < 0.5).astype(np.float32)
    path = str(tmp_path / "ck.npz")
    LCA(6, 12, solver="fista", lca_iters=20, seed=0).fit(X, mask=M, batch_size=4, checkpoint=path, progress=False)
    with pytest.raises(SettingsChanged, match="mask"):
        LCA(6, 12, solver="fista", lca_iters=20, seed=0).fit(X, batch_size=4, epochs=2, checkpoint=path,
                                                             progress=False)
    LCA(6, 12, solver="fista", lca_iters=20, seed=0).fit(X, mask=M, batch_size=4, epochs=2, checkpoint=path,
                                                         progress=False)


# ----------------------------------------------------------------------------- no host reads per step
@pytest.mark.parametrize("what", ["lca", "lca-fista", "fista", "ista"])
def test_no_host_read_between_checks_with_mask(host_reads, what):
    # as tests/test_dynamics.py: 20 extra steps cost exactly the 2 extra checks' reads
    extra = extra_host_reads_of_20_steps(host_reads, what, mask=True)
    assert extra == 2, extra


# ----------------------------------------------------------------------------- the inpainting example
def test_inpainting_example_beats_the_baselines(tmp_path):
    spec = importlib.util.spec_from_file_location("inpainting", os.path.join(ROOT, "examples", "inpainting.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--size", "32", "--atoms", "16", "--steps", "20", "--batch", "64", "--out", str(tmp_path)])
    assert os.path.exists(tmp_path / "inpainting.png") and os.path.exists(tmp_path / "dictionary.png")
    assert res["inpainted"]["missing"] > res["mean_fill"]["missing"] + 3
    assert res["inpainted"]["overall"] > res["mean_fill"]["overall"] + 3
    assert res["inpainted"]["overall"] > res["masked"]["overall"] + 3
