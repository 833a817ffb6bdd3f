"""Locally greedy coordinate descent for convolutional sparse coding (solvers/cd_conv.py).

References are independent of the solver's kernels: the analysis ``c = Phi (s - Phi^T a)`` and the
atom inner products come from explicit loops over code positions on a zero-padded buffer (the
PyTorch definition of ``conv`` / ``conv_transpose``), the optimum's energy from a long FISTA run.
"""
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import kkt_violation_at
from sparsecoding.ops import ConvOperator, DenseOperator
from sparsecoding.solvers import conv_coordinate_descent, fista
from sparsecoding.solvers import cd_conv
from sparsecoding.solvers.cd_conv import overlap_table


def _windows(out_shape, stride, kernel):
    for o in itertools.product(*(range(v) for v in out_shape)):
        yield o, tuple(slice(oi * s, oi * s + k) for oi, s, k in zip(o, stride, kernel))


def ref_conv(x, w, stride, pad):
    """conv(x, w) by explicit loops over output positions (float64)."""
    d = w.ndim - 2
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [(p, p) for p in pad])
    out_shape = [(xp.shape[2 + i] - w.shape[2 + i]) // stride[i] + 1 for i in range(d)]
    y = np.zeros((x.shape[0], w.shape[0], *out_shape))
    for o, sl in _windows(out_shape, stride, w.shape[2:]):
        patch = xp[(slice(None), slice(None), *sl)]
        y[(slice(None), slice(None), *o)] = patch.reshape(x.shape[0], -1) @ w.reshape(w.shape[0], -1).T
    return y


def ref_conv_t(a, w, stride, pad, in_shape):
    """conv_transpose(a, w) onto ``in_shape`` by explicit loops (the adjoint of :func:`ref_conv`)."""
    big = [L + 2 * p + s + k for L, p, s, k in zip(in_shape, pad, stride, w.shape[2:])]
    buf = np.zeros((a.shape[0], w.shape[1], *big))
    for o, sl in _windows(a.shape[2:], stride, w.shape[2:]):
        term = a[(slice(None), slice(None), *o)] @ w.reshape(w.shape[0], -1)
        buf[(slice(None), slice(None), *sl)] += term.reshape(a.shape[0], *w.shape[1:])
    return buf[(slice(None), slice(None), *(slice(p, p + L) for p, L in zip(pad, in_shape)))]


@st.composite
def problems(draw, dims=(1, 2)):
    d = draw(st.sampled_from(dims))
    padding = draw(st.sampled_from(["same", "valid"]))
    kernel = tuple(draw(st.sampled_from([1, 3, 5] if padding == "same" else [1, 2, 3, 4])) for _ in range(d))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(d))
    shape = tuple(draw(st.integers(k + 1, k + (9 if d == 1 else 5))) for k in kernel)
    C, K, N = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31 - 1))
    frac = draw(st.floats(0.05, 0.9))
    nonneg = draw(st.booleans())
    r = np.random.default_rng(seed)
    w = r.standard_normal((K, C, *kernel))
    w /= np.sqrt((w.reshape(K, -1) ** 2).sum(1)).reshape((K,) + (1,) * (d + 1))
    s = r.standard_normal((N, C, *shape))
    pad = tuple((k - 1) // 2 for k in kernel) if padding == "same" else (0,) * d
    return w, s, stride, padding, pad, frac, nonneg


def _gap_and_c(w, s, a, stride, pad, lam, nonneg):
    """Reference residual analysis and the absolute duality gap per sample (float64, explicit loops)."""
    r = s.astype(np.float64) - ref_conv_t(a.astype(np.float64), w, stride, pad, s.shape[2:])
    c = ref_conv(r, w, stride, pad)
    n = s.shape[0]
    worst = (np.maximum(c, 0) if nonneg else np.abs(c)).reshape(n, -1).max(1)
    beta = np.minimum(1.0, lam / np.maximum(worst, 1e-300))
    r2 = (r.reshape(n, -1) ** 2).sum(1)
    l1 = np.abs(a).reshape(n, -1).sum(1)
    theta_s = (r * s).reshape(n, -1).sum(1)
    primal = 0.5 * r2 + lam * l1
    dual = beta * theta_s - 0.5 * beta**2 * r2
    return c, primal, primal - dual


@given(problems())
def test_kkt_conditions_at_the_codes_exact_borders(prob):
    """Signed and non-negative, "same" and "valid", strides 1 and 2, 1-D and 2-D: the returned codes
    satisfy the LASSO optimality conditions against a loop-computed c = Phi (s - Phi^T a), within
    what their certified gap allows (a violation delta at a coordinate of squared norm n <= n_max
    would lower the energy by delta^2 / (2 n_max) at least, so delta <= sqrt(2 n_max gap))."""
    w, s, stride, padding, pad, frac, nonneg = prob
    op = ConvOperator(w, s.shape[2:], stride, padding)
    lam = frac * float(np.abs(ref_conv(s, w, stride, pad)).max())
    res = conv_coordinate_descent(op, s, lam, nonneg=nonneg, tol=1e-12, max_iter=5000)
    assert res.converged
    a = res.codes
    assert a.shape == (s.shape[0], *op.out_shape) and a.dtype == np.float64
    c, primal, gap = _gap_and_c(w, s, a, stride, pad, lam, nonneg)
    assert np.all(gap <= 1e-12 * primal + 1e-10 * (1 + primal))
    bound = np.sqrt(2.0 * 1.0 * max(float(gap.max()), 0.0)) + 1e-7 * lam  # unit atoms: n_max <= 1
    assert kkt_violation_at(a, c, lam, nonneg) <= bound
    np.testing.assert_allclose(res.energy, primal, rtol=1e-10, atol=1e-12)


@given(problems(dims=(1, 2, 3)))
def test_overlap_table_matches_explicit_atom_products(prob):
    """Every tabulated (cropped) inner product equals <Phi^T e_kp, Phi^T e_k'q> of one-hot codes synthesised
    by the loop reference, and the norms are the cropped atoms' squared norms (1-3 D, both paddings)."""
    w, s, stride, padding, pad, _, _ = prob
    op = ConvOperator(w, s.shape[2:], stride, padding)
    T, idx, nrm = overlap_table(op)
    d, K = w.ndim - 2, w.shape[0]
    out = op.geometry.out_shape
    R = [(k - 1) // st for k, st in zip(w.shape[2:], stride)]
    atoms = {}
    for p in itertools.product(*(range(o) for o in out)):
        e = np.zeros((K, K, *out))
        e[(np.arange(K), np.arange(K), *p)] = 1.0
        atoms[p] = ref_conv_t(e, w, stride, pad, s.shape[2:]).reshape(K, -1)  # row k: atom k at p, cropped
    for p, q in itertools.product(atoms, atoms):
        ref = atoms[p] @ atoms[q].T
        dp = [qi - pi for pi, qi in zip(p, q)]
        if any(abs(v) > r for v, r in zip(dp, R)):
            assert np.abs(ref).max() == 0  # out of reach: no overlap
            continue
        u = [int(idx[i][p[i], dp[i] + R[i]]) for i in range(d)] + [0] * (3 - d)
        got = np.zeros((K, K)) if min(u) < 0 else T[tuple(u)]
        np.testing.assert_allclose(got, ref, atol=1e-12)
    for p in atoms:
        np.testing.assert_allclose(nrm[tuple(p) + (0,) * (3 - d)], (atoms[p] ** 2).sum(1), atol=1e-12)


@given(problems(), st.sampled_from([np.float32, np.float64]))
def test_energy_agrees_with_fista_to_the_stated_gap(prob, dtype):
    """tol = 1e-3: the energy is within 1e-3 (relative) of a tight float64 FISTA optimum, and not below it
    beyond rounding; float32 inputs give float32 codes."""
    w, s, stride, padding, pad, frac, nonneg = prob
    lam = frac * float(np.abs(ref_conv(s, w, stride, pad)).max())
    op = ConvOperator(w.astype(dtype), s.shape[2:], stride, padding)
    res = conv_coordinate_descent(op, s.astype(dtype), lam, nonneg=nonneg, tol=1e-3)
    assert res.converged and res.codes.dtype == dtype and res.energy.dtype == dtype
    opt = fista(ConvOperator(w, s.shape[2:], stride, padding), s, lam, nonneg=nonneg, tol=1e-12, max_iter=100000)
    _, e_cd, _ = _gap_and_c(w, s, res.codes, stride, pad, lam, nonneg)
    e_star = opt.energy
    slack = 1e-5 if dtype == np.float32 else 1e-10
    assert np.all(e_cd >= e_star * (1 - slack) - slack)
    assert e_cd.sum() - e_star.sum() <= 1e-3 * e_cd.sum() + slack * (1 + e_cd.sum())
    assert res.history and res.history[-1][1] <= 1e-3 + 1e-6


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lambda_above_max_gives_the_zero_code(nonneg, dtype):
    r = np.random.default_rng(1)
    w = r.standard_normal((3, 2, 5, 3)).astype(dtype)
    s = r.standard_normal((2, 2, 9, 7)).astype(dtype)
    lam = float(np.abs(ref_conv(s, w.astype(np.float64), (2, 1), (2, 1))).max()) * 1.0001
    res = conv_coordinate_descent(ConvOperator(w, (9, 7), (2, 1), "same"), s, lam, nonneg=nonneg)
    assert res.converged and res.n_iter == 0 and not np.any(res.codes)
    np.testing.assert_allclose(res.energy, 0.5 * (s.astype(np.float64) ** 2).reshape(2, -1).sum(1), rtol=1e-6)


def test_3d_problem_and_warm_start():
    """A 3-D "same" problem with mixed strides satisfies the KKT conditions; restarted from its own answer
    the solver certifies it at once (0 sweeps) and returns it unchanged."""
    r = np.random.default_rng(2)
    w = r.standard_normal((2, 1, 3, 3, 3))
    s = r.standard_normal((2, 1, 6, 7, 5))
    op = ConvOperator(w, (6, 7, 5), (1, 2, 1), "same")
    lam = 0.3 * float(np.abs(ref_conv(s, w, (1, 2, 1), (1, 1, 1))).max())
    res = conv_coordinate_descent(op, s, lam, tol=1e-12, max_iter=5000)
    c, primal, gap = _gap_and_c(w, s, res.codes, (1, 2, 1), (1, 1, 1), lam, False)
    assert res.converged and kkt_violation_at(res.codes, c, lam, False) <= 1e-6 * lam
    again = conv_coordinate_descent(op, s, lam, tol=1e-6, a0=res.codes)
    assert again.n_iter == 0 and again.converged
    np.testing.assert_array_equal(again.codes, res.codes)


def test_history_and_sweep_budget():
    """history: the relative gap at the checks, ending at or below tol; tol=None runs max_iter sweeps."""
    r = np.random.default_rng(3)
    w = r.standard_normal((4, 1, 7))
    s = r.standard_normal((3, 1, 60))
    op = ConvOperator(w, (60,), 1, "same")
    lam = 0.1 * float(np.abs(op.forward(s)).max())
    res = conv_coordinate_descent(op, s, lam, tol=1e-4, max_iter=20000)  # 453 sweeps (measured)
    assert res.converged
    its, gaps = zip(*res.history)
    assert its[0] == 0 and list(its) == sorted(its) and gaps[-1] <= 1e-4 and gaps[0] > gaps[-1]
    assert len(res.energy_history) == len(res.history)
    fixed = conv_coordinate_descent(op, s, lam, tol=None, max_iter=7)
    assert fixed.n_iter == 7 and not fixed.converged
    # a budget far beyond HISTORY_CHECKS: the history stays bounded and ends at the stopping sweep
    big = conv_coordinate_descent(op, s, lam, tol=1e-4, max_iter=10**6)
    its, gaps = zip(*big.history)
    assert big.converged and len(its) <= cd_conv.HISTORY_CHECKS and list(its) == sorted(its)
    assert its[0] == 0 and its[-1] == big.n_iter and gaps[-1] <= 1e-4
    # other segment sizes reach the same optimum (energies within the certified gaps)
    for seg in (3, 16):
        other = conv_coordinate_descent(op, s, lam, tol=1e-8, max_iter=20000, segment=seg)
        np.testing.assert_allclose(other.energy, big.energy, rtol=2e-4)


def test_overlap_table_cache_follows_the_weights():
    """The cached table is read-only and keyed on the weights' values: weights changed in place give the
    table of the new weights (checked against explicit products of one-hot syntheses)."""
    r = np.random.default_rng(4)
    w = r.standard_normal((2, 1, 3, 3))
    T1, idx1, nrm1 = overlap_table(ConvOperator(w, (5, 5), 1, "same"))
    assert overlap_table(ConvOperator(w.copy(), (5, 5), 1, "same"))[0] is T1 and not T1.flags.writeable
    w[0] *= 2.0
    T2, idx2, nrm2 = overlap_table(ConvOperator(w, (5, 5), 1, "same"))
    e = np.zeros((2, 2, 5, 5))
    e[0, 0, 2, 2] = e[1, 1, 2, 2] = 1.0  # both atoms at the centre (uncropped): norms and cross product
    atoms = ref_conv_t(e, w, (1, 1), (1, 1), (5, 5)).reshape(2, -1)
    np.testing.assert_allclose(nrm2[2, 2, 0], (atoms ** 2).sum(1), atol=1e-12)
    np.testing.assert_allclose(nrm2[2, 2, 0], 4.0 ** np.array([1, 0]) * nrm1[2, 2, 0], atol=1e-12)
    u = [int(i[2, 2]) for i in idx2[:2]]  # offset 0 (column R = 2) in both dims at the centre
    np.testing.assert_allclose(T2[u[0], u[1], 0], atoms @ atoms.T, atol=1e-12)


def test_bad_input():
    r = np.random.default_rng(0)
    w = r.standard_normal((2, 1, 3, 3))
    op = ConvOperator(w, (6, 6), 1, "same")
    s = r.standard_normal((2, 1, 6, 6))
    with pytest.raises(TypeError, match="ConvOperator"):
        conv_coordinate_descent(DenseOperator(r.standard_normal((3, 4))), r.standard_normal((2, 4)), 0.1)
    with pytest.raises(ValueError, match="channels-first"):
        conv_coordinate_descent(ConvOperator(w, (6, 6), 1, "same", layout="channels_last"), s, 0.1)
    with pytest.raises(ValueError, match="mask"):
        conv_coordinate_descent(op, s, 0.1, mask=np.ones_like(s))
    for kw, name in [({"lambda_": -1.0}, "lambda_"), ({"max_iter": 0}, "max_iter"), ({"tol": -1.0}, "tol"),
                     ({"segment": 0}, "segment"), ({"segment": (2,)}, "segment"), ({"focus": 1.0}, "focus")]:
        args = {"lambda_": 0.1, **kw}
        with pytest.raises(ValueError, match=name):
            conv_coordinate_descent(op, s, **args)
    with pytest.raises(ValueError, match="shape"):
        conv_coordinate_descent(op, s[:, :, :5], 0.1)
    with pytest.raises(ValueError, match="NaN"):
        conv_coordinate_descent(op, np.full_like(s, np.nan), 0.1)
    with pytest.raises(TypeError, match="real"):
        conv_coordinate_descent(op, s.astype(complex), 0.1)
    empty = conv_coordinate_descent(op, s[:0], 0.1)
    assert empty.codes.shape == (0, 2, 6, 6) and empty.converged
