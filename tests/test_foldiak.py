"""Földiák's network on the bars problem, its invariants and the one-shot failure mode."""
import numpy as np
import pytest

from sparsecoding.backend import to_numpy
from sparsecoding.data import bars
from sparsecoding.plasticity import FoldiakNetwork


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
    y = to_numpy(net.settle(Xtest[:200]))
    Q, W, t = (to_numpy(a) for a in (net.Q, net.W, net.t))
    rhs = 1 / (1 + np.exp(-net.lam * (Xtest[:200] @ Q.T + y @ W.T - t)))
    np.testing.assert_allclose(y, rhs, atol=5e-3)


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
