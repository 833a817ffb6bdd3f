"""Földiák's network on the bars problem, its invariants and the one-shot failure mode."""
import numpy as np
import pytest

from sparsecoding.backend import to_numpy
from sparsecoding.data import bars
from sparsecoding.plasticity import FoldiakNetwork
from sparsecoding.solvers.relax import RelaxResult


@pytest.fixture(scope="module")
def bars_data():
    X, T = bars(6000, seed=0)
    Xtest, _ = bars(2000, seed=99)
    return X, T, Xtest


def _train(X, **kw):
    net = FoldiakNetwork(64, 16, seed=kw.pop("seed", 1), **kw)
    net.fit(X, epochs=1, batch_size=8, warmup=200)
    return net


def test_learns_every_bar_with_sparse_decorrelated_activity(bars_data):
    X, T, Xtest = bars_data
    net = _train(X)
    best, corr = net.feature_assignment(T)
    assert sorted(best) == list(range(16)), "every unit must detect exactly one distinct bar"
    y = to_numpy(net.transform(Xtest))
    assert abs(y.mean() - 1 / 8) <= 0.25 * (1 / 8)
    co = (y.T @ y / len(y))[~np.eye(16, dtype=bool)]
    assert abs(co.mean() - 1 / 64) <= 0.5 / 64
    # each unit fires for its own bar presented alone
    resp, _ = net.response_assignment(T)
    assert sorted(resp) == list(range(16))


def test_one_shot_variant_fails_the_distinct_bars_test(bars_data):
    X, T, _ = bars_data
    net = _train(X, one_shot=True)
    best, _ = net.feature_assignment(T)
    assert len(set(best)) < 16


def test_invariants_hold_after_every_update(bars_data):
    X, _, _ = bars_data
    net = FoldiakNetwork(64, 16, seed=3)
    net.partial_fit(X[:50], thresholds_only=True)
    assert np.all(to_numpy(net.W) == 0)
    for i in range(0, 400, 8):
        net.partial_fit(X[i:i + 8], batch_size=8)
        W = to_numpy(net.W)
        assert np.all(W <= 0) and np.all(np.diag(W) == 0)


def test_settling_reaches_fixed_point_of_the_stated_equation(bars_data):
    X, _, Xtest = bars_data
    net = _train(X[:2000])
    res = net.settle(Xtest[:200])
    assert isinstance(res, RelaxResult) and res.converged and res.n_iter % net.check_every == 0
    y = to_numpy(res.state)
    assert y.shape == (200, 16)
    Q, W, t = (to_numpy(a) for a in (net.Q, net.W, net.t))
    rhs = 1 / (1 + np.exp(-net.lam * (Xtest[:200] @ Q.T + y @ W.T - t)))
    np.testing.assert_allclose(y, rhs, atol=5e-3)
    # the runner's rule: the relative change of the last step is <= tol, and the residual of the
    # fixed-point equation is then at most tol max|y| / dt (the documented accuracy)
    assert res.history[-1][0] == res.n_iter and res.last_value <= net.tol
    assert np.abs(rhs - y).max() <= net.tol * np.abs(y).max() / net.dt * (1 + 1e-6)
    np.testing.assert_array_equal(to_numpy(net.transform(Xtest[:200])), (y > 0.5).astype(float))


def test_settle_options_and_one_shot_result():
    X, _ = bars(20, seed=4)
    net = FoldiakNetwork(64, 16, seed=1, tol=None, max_settle=25, check_every=5)
    res = net.settle(X)
    assert res.n_iter == 25 and not res.converged and [t for t, _ in res.history] == [5, 10, 15, 20, 25]
    one = FoldiakNetwork(64, 16, seed=1, one_shot=True).settle(X)
    assert isinstance(one, RelaxResult) and one.n_iter == 1 and one.converged and one.state.shape == (20, 16)
    for bad in (0, 2.5, True, "10"):
        with pytest.raises(ValueError, match="check_every must be"):
            FoldiakNetwork(4, 2, check_every=bad)


def test_settling_nan_raises_even_when_the_last_steps_are_not_checked():
    # the drive is +inf, so y_t = 1 - 0.8^t; the inhibition W y overflows to -inf at step 12 (inf - inf = NaN),
    # after the one check at step 10
    net = FoldiakNetwork(4, 3, seed=0, max_settle=15, check_every=10)
    net.Q[...] = 1e308
    net.W[...] = -1e308
    net.W[np.arange(3), np.arange(3)] = 0
    with np.errstate(all="ignore"):
        net.max_settle = 10
        assert np.isfinite(net.settle(np.ones((2, 4))).state).all()
        net.max_settle = 15
        with pytest.raises(FloatingPointError, match="settling diverged.*after 15 steps.*lower the learning"):
            net.settle(np.ones((2, 4)))


def test_no_host_read_between_settling_checks(host_reads):
    # 20 extra Euler steps with check_every 10 cost exactly the 2 extra checks' reads (one each):
    # no step reads a value on the host
    guard, reads = host_reads
    X, _ = bars(16, seed=0)
    net = FoldiakNetwork(64, 16, seed=1, tol=None, check_every=10)
    net.fit(X, batch_size=8)  # non-zero W and t
    net.Q, net.W, net.t = guard(net.Q), guard(net.W), guard(net.t)
    Xg = guard(X)
    counts = []
    for n in (20, 40):
        net.max_settle = n
        before = reads()
        res = net.settle(Xg)
        counts.append(reads() - before)
        assert res.n_iter == n and isinstance(res.state, type(Xg))
    assert counts[1] - counts[0] == 2, counts


def test_hebbian_rule_matches_per_presentation_formula():
    """Batch size 1: dQ = beta y (x - Q), dt = gamma (y - p), dW = -alpha (y y^T - p^2) clipped."""
    net = FoldiakNetwork(4, 3, seed=0)
    net.W[...] = -0.1
    net.W[np.arange(3), np.arange(3)] = 0
    x = np.array([1.0, 0.0, 1.0, 1.0])
    Q0, W0, t0 = net.Q.copy(), net.W.copy(), net.t.copy()
    y = net.transform(x)[0]
    net.partial_fit(x[None])
    np.testing.assert_allclose(net.Q, Q0 + 0.02 * y[:, None] * (x - Q0))
    np.testing.assert_allclose(net.t, t0 + 0.02 * (y - 1 / 8))
    W = np.minimum(W0 - 0.1 * (np.outer(y, y) - 1 / 64), 0)
    np.fill_diagonal(W, 0)
    np.testing.assert_allclose(net.W, W)


def test_bad_input():
    with pytest.raises(ValueError, match="p must"):
        FoldiakNetwork(4, 2, p=1.5)
    net = FoldiakNetwork(4, 2)
    with pytest.raises(ValueError, match="shape"):
        net.settle(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        net.settle(np.full((1, 4), np.nan))


def test_runs_on_backend(xp):
    X, T = bars(500, seed=0)
    net = FoldiakNetwork(64, 16, seed=1, backend="numpy" if xp is np else "cupy")
    net.fit(xp.asarray(X), batch_size=8)
    assert net.Q.shape == (16, 64) and type(net.Q) is type(xp.zeros(1))


def _localisation(Q):
    """Mean fraction of each feature's energy in its 8 strongest pixels (of 64)."""
    e = np.sort(np.asarray(Q) ** 2, axis=1)[:, ::-1]
    return float((e[:, :8].sum(1) / e.sum(1)).mean())


def _kurtosis(Q):
    """Mean kurtosis of each feature's 64 weights (3 for Gaussian weights; heavy tails when localised)."""
    Q = np.asarray(Q)
    Q = Q - Q.mean(1, keepdims=True)
    return float(((Q**4).mean(1) / (Q**2).mean(1) ** 2).mean())


def test_natural_patches_whitened_learn_distinct_localised_features_raw_do_not():
    from sparsecoding.data import natural_patches

    def train(n=8000, epochs=3, **kw):
        P = natural_patches(n, seed=0, **kw)
        net = FoldiakNetwork(64, 32, p=0.05, beta=0.005, seed=1)
        net.fit(P, epochs=epochs, batch_size=16, warmup=300)
        Q = np.asarray(net.Q)
        Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        return np.abs(Qn @ Qn.T)[~np.eye(len(Q), dtype=bool)].mean(), Q

    sim_raw, _ = train(3000, 1, whitened=False, centred=False)
    sim_white, Q = train()
    assert sim_raw > 0.95  # raw, non-centred patches: every unit learns the same mean patch
    assert sim_white < 0.2  # whitened, centred: distinct features
    gauss = np.random.default_rng(0).standard_normal((2000, 64))
    # localised features: energy concentrated in few pixels, heavy-tailed weights (vs random Gaussian weights)
    assert _localisation(Q) > _localisation(gauss) + 0.03
    assert _kurtosis(Q) > _kurtosis(gauss) + 0.4


def test_fit_resumes_bit_exactly_from_a_mid_run_checkpoint(tmp_path):
    """Warmup and presentation order come from the loop's generators: a run stopped by an exception
    inside a step and resumed by a fresh network ends bit-identical (Q, W, t, count, history)."""
    X, _ = bars(600, seed=2)
    kw = dict(epochs=2, batch_size=8, warmup=40, seed=5)
    full = FoldiakNetwork(64, 16, seed=1)
    h_full = full.fit(X, **kw)
    assert [r["presentations"] for r in h_full] == [40 + 600, 40 + 1200]
    assert abs(h_full[-1]["activity"] - 1 / 8) < 0.05

    part = FoldiakNetwork(64, 16, seed=1)
    calls, original = [], part.partial_fit

    def failing(*args, **kwargs):  # call 1 is the warmup; call 111 is batch 110 (epoch 2)
        calls.append(1)
        if len(calls) == 111:
            raise RuntimeError("stop")
        return original(*args, **kwargs)

    part.partial_fit = failing
    ck = tmp_path / "ck.npz"
    with pytest.raises(RuntimeError, match="stop"):
        part.fit(X, checkpoint=ck, checkpoint_every=20, **kw)
    resumed = FoldiakNetwork(64, 16, seed=1)
    h_res = resumed.fit(X, checkpoint=ck, checkpoint_every=20, **kw)
    for name in ("Q", "W", "t"):
        np.testing.assert_array_equal(to_numpy(getattr(resumed, name)), to_numpy(getattr(full, name)), err_msg=name)
    assert resumed.n_presented == full.n_presented and list(h_res) == list(h_full)
    # the default seed comes from the constructor's: same network seed, same run
    a, b = FoldiakNetwork(64, 16, seed=4), FoldiakNetwork(64, 16, seed=4)
    a.fit(X[:200], batch_size=8, warmup=16)
    b.fit(X[:200], batch_size=8, warmup=16)
    np.testing.assert_array_equal(to_numpy(a.Q), to_numpy(b.Q))


def test_fit_stopped_by_max_steps_and_resumed_ends_bit_identical(tmp_path):
    """The learning API: ``fit(X, epochs=, batch_size=, seed=, callbacks=, checkpoint=)`` returns a History;
    a run stopped by ``max_steps`` inside an epoch and resumed from its checkpoint by a fresh network ends
    bit-identical to an uninterrupted one: Q, W, t, the counts, the epoch records and the per-batch records."""
    from sparsecoding.training import History

    X, _ = bars(160, seed=3)
    seen = []
    kw = dict(epochs=2, batch_size=8, seed=7, callbacks=[seen.append], warmup=16, record_steps=True)
    full = FoldiakNetwork(64, 16, seed=2)
    h_full = full.fit(X, **kw)
    assert isinstance(h_full, History) and len(h_full) == 2 and len(h_full.steps) == 40 and seen == list(h_full)
    ck = tmp_path / "ck.npz"
    part = FoldiakNetwork(64, 16, seed=2)
    h_part = part.fit(X, checkpoint=ck, max_steps=27, **kw)  # epoch 2, batch 7
    assert len(h_part) == 1 and len(h_part.steps) == 27
    resumed = FoldiakNetwork(64, 16, seed=99)  # other initial weights: only the checkpoint can make it equal
    calls, original = [], resumed.partial_fit
    resumed.partial_fit = lambda *a, **k: calls.append(1) or original(*a, **k)
    h_res = resumed.fit(X, checkpoint=ck, **kw)
    assert len(calls) == 40 - 27  # only the remaining batches ran (no second warmup)
    for name in ("Q", "W", "t"):
        assert np.array_equal(to_numpy(getattr(resumed, name)), to_numpy(getattr(full, name))), name
    assert resumed.n_presented == full.n_presented == 16 + 2 * 160
    assert list(h_res) == list(h_full) and h_res.steps == h_full.steps
    assert all(np.array_equal(list(a.values()), list(b.values())) for a, b in zip(h_res + h_res.steps,
                                                                                 h_full + h_full.steps))
