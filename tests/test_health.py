"""Dictionary-learning health and homeostasis (sparsecoding.lca.health), each against an independent
reference: explicit loops for usage, cross-correlation, coherence, matching, the synthetic data and the
re-seeded patches; constructed dictionaries for dead atoms; a known ground truth for recovery."""
import itertools

import numpy as np
import pytest

from sparsecoding.data import sparse_conv_data
from sparsecoding.lca import (LCA, DictionaryHealth, Homeostasis, LCAConv1D, atom_usage, cross_correlation,
                              dead_atoms, init_from_patches, match_atoms, mutual_coherence, recovery)
from sparsecoding.training import fit_loop


def _unit(w):
    w = np.asarray(w, dtype=np.float64)
    return w / np.sqrt((w.reshape(len(w), -1) ** 2).sum(1)).reshape((-1,) + (1,) * (w.ndim - 1))


def _xcorr_loop(a, b, t):
    """sum_c sum_x a[c, x] b[c, x - t] over the overlap, by explicit loops over positions."""
    total = 0.0
    for x in itertools.product(*[range(k) for k in a.shape[1:]]):
        y = tuple(xi - ti for xi, ti in zip(x, t))
        if all(0 <= yi < k for yi, k in zip(y, b.shape[1:])):
            total += float(np.dot(a[(slice(None),) + x], b[(slice(None),) + y]))
    return total


def _shifts(ka, kb):
    return itertools.product(*[range(-(y - 1), x) for x, y in zip(ka, kb)])


# ------------------------------------------------------------------ measures
def test_atom_usage_matches_a_loop_dense_and_conv():
    rng = np.random.default_rng(0)
    for shape in [(7, 5), (4, 3, 6), (3, 4, 5, 6)]:
        a = rng.standard_normal(shape) * (rng.random(shape) < 0.3)
        ref = np.zeros(shape[1])
        for k in range(shape[1]):
            ak = a[:, k].reshape(shape[0], -1)
            ref[k] = sum(1 for n in range(ak.shape[0]) for p in range(ak.shape[1]) if ak[n, p] != 0) / ak.size
        np.testing.assert_allclose(atom_usage(a), ref, rtol=0, atol=1e-15)
    assert np.all(atom_usage(np.zeros((0, 3, 4))) == 0)


def test_cross_correlation_matches_loops():
    rng = np.random.default_rng(1)
    for ka, kb in [((4,), (4,)), ((3,), (5,)), ((3, 4), (2, 3))]:
        a = rng.standard_normal((3, 2, *ka))
        b = rng.standard_normal((2, 2, *kb))
        X = cross_correlation(a, b)
        assert X.shape == (3, 2, *[x + y - 1 for x, y in zip(ka, kb)])
        for i, j in itertools.product(range(3), range(2)):
            for t in _shifts(ka, kb):
                m = tuple(ti + y - 1 for ti, y in zip(t, kb))
                assert X[(i, j) + m] == pytest.approx(_xcorr_loop(a[i], b[j], t), abs=1e-12)


def test_mutual_coherence_matches_loops():
    rng = np.random.default_rng(2)
    # dense: max |<d_i, d_j>| over i != j of unit atoms
    w = rng.standard_normal((6, 10))
    u = _unit(w)
    ref = max(abs(float(u[i] @ u[j])) for i in range(6) for j in range(6) if i != j)
    assert mutual_coherence(w) == pytest.approx(ref, abs=1e-12)
    # convolutional: all overlapping shifts that are multiples of the stride, i != j (or also i == j, t != 0)
    for kernel, stride in [((5,), 1), ((5,), 2), ((3, 4), 1), ((3, 4), (2, 1))]:
        w = rng.standard_normal((4, 2, *kernel))
        u = _unit(w)
        st = (stride,) * len(kernel) if isinstance(stride, int) else stride
        for self_shifts in (False, True):
            ref = 0.0
            for i, j in itertools.product(range(4), range(4)):
                for t in _shifts(kernel, kernel):
                    if any(ti % s for ti, s in zip(t, st)):
                        continue
                    if i == j and (not self_shifts or not any(t)):
                        continue
                    ref = max(ref, abs(_xcorr_loop(u[i], u[j], t)))
            got = mutual_coherence(w, stride=stride, self_shifts=self_shifts)
            assert got == pytest.approx(ref, abs=1e-12)
        flat = u.reshape(4, -1)
        ref0 = max(abs(float(flat[i] @ flat[j])) for i in range(4) for j in range(4) if i != j)
        assert mutual_coherence(w, shifts=False) == pytest.approx(ref0, abs=1e-12)
    # an atom and its own shifted copy: coherence 1 at the shift, ~0 against a disjoint atom
    w = np.zeros((2, 1, 6))
    w[0, 0, :3] = [1.0, 2.0, 3.0]
    w[1, 0, 1:4] = [1.0, 2.0, 3.0]
    assert mutual_coherence(w) == pytest.approx(1.0)
    assert mutual_coherence(w, shifts=False) < 0.8


def test_match_atoms_and_recovery():
    rng = np.random.default_rng(3)
    true = _unit(rng.standard_normal((3, 2, 5)))
    learned = _unit(rng.standard_normal((4, 2, 7)))
    learned[1] = 0.0
    learned[1, :, 1:6] = -true[2]  # the third true atom, shifted by one in a larger kernel, sign flipped
    learned[3] = 0.0
    learned[3, :, 2:7] = 0.9 * true[0] + 0.1 * _unit(rng.standard_normal((1, 2, 5)))[0]
    best, idx = match_atoms(true, learned)
    # reference: explicit loop over pairs and shifts of unit atoms
    ref = np.array([max(abs(_xcorr_loop(true[i], _unit(learned[j:j + 1])[0], t)) for j in range(4)
                        for t in _shifts((5,), (7,))) for i in range(3)])
    np.testing.assert_allclose(best, ref, atol=1e-12)
    assert idx[2] == 1 and best[2] == pytest.approx(1.0)
    assert recovery(true, learned) == pytest.approx(np.mean(ref >= 0.99))
    # without shifts (same kernel size): a copy rolled by one sample no longer counts
    rolled = np.roll(np.pad(true, ((0, 0), (0, 0), (1, 1))), 1, axis=2)[:, :, 1:-1]
    assert recovery(true, true, shifts=False) == 1.0
    assert np.all(match_atoms(true, rolled)[0] > match_atoms(true, rolled, shifts=False)[0])
    # dense
    dt = _unit(rng.standard_normal((3, 8)))
    dl = np.vstack([-dt[1], _unit(rng.standard_normal((2, 8)))])
    best, idx = match_atoms(dt, dl)
    assert idx[1] == 0 and best[1] == pytest.approx(1.0)
    assert dead_atoms([0.0, 0.2, 0.001, 0.0], threshold=0.001).tolist() == [0, 2, 3]


def test_sparse_conv_data_is_the_sum_of_shifted_atoms():
    for shape, kernel in [(20, 5), ((9, 8), (3, 2))]:
        X, D, Z = sparse_conv_data(3, shape, n_atoms=3, n_channels=2, kernel_size=kernel, density=0.1, noise=0.0,
                                   nonneg=False, seed=4)
        ref = np.zeros_like(X)
        for n, k in itertools.product(range(3), range(3)):
            for p in zip(*np.nonzero(Z[n, k])):
                window = tuple(slice(pi, pi + ki) for pi, ki in zip(p, D.shape[2:]))
                ref[(n, slice(None)) + window] += Z[(n, k) + p] * D[k]
        np.testing.assert_allclose(X, ref, atol=1e-12)
        np.testing.assert_allclose((D.reshape(3, -1) ** 2).sum(1), 1.0)
        assert (Z != 0).any() and (Z < 0).any()
    Xn, _, _ = sparse_conv_data(200, 30, noise=0.5, density=0.0, seed=5)
    assert Xn.std() == pytest.approx(0.5, rel=0.05)


# --------------------------------------------------------- dead atoms, re-seeding
def _subspace_layer(**kw):
    """Dense LCA on data living in coordinates 0-3 and 5 of R^8, atoms e_0..e_3, e_6, e_7: the last two
    get no drive (dead); coordinate 5, which no atom covers, stays in the residual."""
    rng = np.random.default_rng(6)
    X = rng.uniform(0.5, 1.5, (40, 8)) * (rng.random((40, 8)) < 0.5)
    X[:, 4:] = 0.0
    X[:, 3] = 0.0
    X[:3, 3] = 1.0  # atom 3 (e_3) is used by 3 samples out of 40
    X[:, 5] = rng.uniform(0.0, 1.0, 40)
    layer = LCA(6, 8, lambda_=0.1, eta=0.0, lca_iters=50, solver="fista", input_zero_mean=False,
                input_unit_var=False, dtype="float64", **kw)
    w = np.zeros((6, 8))
    for k, e in enumerate([0, 1, 2, 3, 6, 7]):
        w[k, e] = 1.0
    layer.weights = w
    return layer, X


def test_dead_atoms_on_a_constructed_dictionary():
    layer, X = _subspace_layer()
    health = DictionaryHealth(layer)
    rare = DictionaryHealth(layer, dead_threshold=0.1, prefix="rare_")
    hist = layer.fit(X, epochs=1, batch_size=10, callbacks=[health, rare], progress=False)
    acts = layer.solve(X)["acts"]
    np.testing.assert_allclose(health.usage_, (acts != 0).mean(0), atol=1e-15)
    assert health.dead_.tolist() == [4, 5] and rare.dead_.tolist() == [3, 4, 5]
    r = hist[0]
    assert r["dead_atoms"] == 2 and r["usage_min"] == 0.0 and r["usage_max"] == pytest.approx((acts != 0).mean(0).max())
    assert r["reseeded"] == 0 and r["coherence"] == 0.0 and "recovery" not in r and r["rare_dead_atoms"] == 3
    assert "solve" not in vars(layer) and "encode" not in vars(layer)  # the tap is gone after the fit


def test_reseeding_takes_the_highest_residual_patches_and_revives_the_atoms():
    # two channels; the data's atoms live in channel 0, channel 1 holds noise only
    _, D0, _ = sparse_conv_data(1, 40, n_atoms=3, kernel_size=7, seed=7)
    D = np.concatenate([D0, np.zeros_like(D0)], axis=1)
    X, D, _ = sparse_conv_data(24, 40, dictionary=D, density=0.03, noise=0.01, seed=7)
    layer = LCAConv1D(4, 2, kernel_size=7, lambda_=0.1, eta=0.0, lca_iters=60, solver="fista",
                      input_zero_mean=False, input_unit_var=False, dtype="float64")
    w = np.zeros((4, 2, 7))
    w[:2] = D[:2]
    w[2, 1], w[3, 1] = np.hanning(9)[1:-1], np.cos(np.pi * np.arange(7))  # channel 1 only: (almost) no drive
    layer.weights = w / np.sqrt((w ** 2).sum(axis=(1, 2), keepdims=True))
    before = layer.get_weights()
    # reference: residuals of the epoch's dictionary, best window per sample by a loop, top 2 samples
    r = layer.solve(X)["recon_errors"]
    best = []
    for n in range(len(X)):
        energies = [float((r[n, :, p:p + 7] ** 2).sum()) for p in range(40 - 7 + 1)]
        p = int(np.argmax(energies))
        best.append((energies[p], n, p))
    best.sort(key=lambda t: -t[0])
    expected = [X[n, :, p:p + 7] / np.linalg.norm(X[n, :, p:p + 7]) for _, n, p in best[:2]]

    health = DictionaryHealth(layer, reseed=True)
    hist = layer.fit(X, epochs=1, batch_size=24, callbacks=[health], progress=False)
    assert hist[0]["dead_atoms"] == 2 and hist[0]["reseeded"] == 2 and health.reseeded_.tolist() == [2, 3]
    after = layer.get_weights()
    np.testing.assert_allclose(after[:2], before[:2])
    np.testing.assert_allclose(after[2], expected[0], atol=1e-9)
    np.testing.assert_allclose(after[3], expected[1], atol=1e-9)
    np.testing.assert_allclose(np.sqrt((after ** 2).sum(axis=(1, 2))), 1.0, atol=1e-12)
    # the next epoch uses the re-seeded atoms
    hist = layer.fit(X, epochs=1, batch_size=24, callbacks=[DictionaryHealth(layer)], progress=False)
    assert hist[0]["dead_atoms"] == 0 and hist[0]["usage_min"] > 0
    # dense layers re-seed from whole samples with the largest residual
    dense, Xd = _subspace_layer()
    res = dense.solve(Xd)["recon_errors"]
    energy = (res ** 2).sum(1)
    h = DictionaryHealth(dense, reseed=True, reseed_from="residual")
    dense.fit(Xd, epochs=1, batch_size=40, callbacks=[h], progress=False)
    assert h.reseeded_.tolist() == [4, 5]
    top = np.argsort(-energy)[:2]
    for k, n in zip((4, 5), top):
        np.testing.assert_allclose(dense.get_weights()[k], res[n] / np.sqrt(energy[n]), atol=1e-12)


# ---------------------------------------------------------------- recovery by fit
def test_fit_recovers_a_synthetic_convolutional_dictionary():
    # 4 true atoms (k = 9, Hann-tapered), 128 signals of length 64, 2% code density, noise 0.01;
    # 6 learned atoms initialised from data patches, lca-pytorch's rule with a decaying rate
    X, D, _ = sparse_conv_data(128, 64, n_atoms=4, kernel_size=9, density=0.02, noise=0.01, seed=14,
                               dtype="float32")
    layer = LCAConv1D(6, 1, kernel_size=9, lambda_=0.1, eta=4.0, lca_iters=100, solver="fista", tol=1e-3,
                      input_zero_mean=False, input_unit_var=False, lr_schedule=lambda t: 4.0 * 30 / (30 + t))
    init_from_patches(layer, X, seed=14)
    start = recovery(D, layer.get_weights())
    hist = layer.fit(X, epochs=8, batch_size=32, seed=0, callbacks=[DictionaryHealth(layer, true_dictionary=D)],
                     progress=False)
    rec = hist.column("recovery")
    assert len(rec) == 8 and rec[-1] >= 0.75 > start  # stated level: 3 of the 4 atoms (this run: all 4)
    assert match_atoms(D, layer.get_weights())[0].mean() > 0.99
    assert all(0 < c < 1 for c in hist.column("coherence"))


# ---------------------------------------------------------------- homeostasis
def _far_atoms_layer(**kw):
    """4 atoms from data patches, 4 high-frequency atoms that smooth data never drives (dead)."""
    X, D, _ = sparse_conv_data(64, 64, n_atoms=4, kernel_size=9, density=0.02, noise=0.01, seed=0,
                               dtype="float32", smooth=1.5)
    kw = dict(dict(lambda_=0.1, tau=40, eta=2.0, lca_iters=200, tol=1e-2, input_zero_mean=False,
                   input_unit_var=False, seed=0), **kw)
    layer = LCAConv1D(8, 1, kernel_size=9, **kw)
    init_from_patches(layer, X, seed=0, atoms=range(4))
    w = layer.get_weights()
    alt = np.cos(np.pi * np.arange(9)) * np.hanning(11)[1:-1]
    w[4:, 0] = [alt, -alt, np.roll(alt, 1), -np.roll(alt, 1)]
    layer.assign_weight_values(w.astype("float32"))
    return layer, X


def _cv(u):
    return float(np.std(u) / np.mean(u))


def test_homeostasis_equalises_usage_where_plain_learning_leaves_atoms_dead():
    runs = {}
    for name, make in [("plain", lambda layer: []),
                       ("threshold", lambda layer: [Homeostasis(layer, target=0.05, rate=0.5)]),
                       ("gain", lambda layer: [Homeostasis(layer, rate=0.5, mode="gain")])]:
        layer, X = _far_atoms_layer()
        health = DictionaryHealth(layer)
        hist = layer.fit(X, epochs=4, batch_size=16, seed=0, callbacks=[health] + make(layer), progress=False)
        runs[name] = (hist, health.usage_)
    hist, usage = runs["plain"]
    assert hist.column("dead_atoms") == [4, 4, 4, 4] and np.all(usage[4:] == 0)
    for name, factor in [("threshold", 5.0), ("gain", 3.0)]:
        h, u = runs[name]
        assert h[-1]["dead_atoms"] == 0 and u.min() > 0, name
        assert _cv(usage) / _cv(u) >= factor, (name, _cv(usage), _cv(u))  # plain ~1.03; threshold ~0.10, gain ~0.19
        col = "theta" if name == "threshold" else "gain"
        assert h[-1][f"{col}_min"] < 1 < h[-1][f"{col}_max"]
    assert 0.03 < np.mean(runs["threshold"][1]) < 0.08  # the target pins the overall activity


def test_homeostasis_encode_and_validation():
    layer, X = _far_atoms_layer()
    h = Homeostasis(layer, target=0.05)
    assert h.mode == "threshold" and np.all(h.gains_ == 1)
    h._log_gain = np.log(np.linspace(0.5, 2.0, 8))
    s = layer.preprocess(X[:4])
    d = h.drive_scaling(s)
    np.testing.assert_allclose(d[:, :, 0], np.tile(0.1 * (1 - np.linspace(0.5, 2.0, 8)), (4, 1)), rtol=1e-6)
    ref = LCAConv1D.encode(layer, s, drive_scaling=d)
    got = h.encode(s)
    np.testing.assert_array_equal(got[0][0], ref[0][0])
    g = Homeostasis(layer, mode="gain")
    g._log_gain = np.log(np.linspace(0.5, 2.0, 8))
    b = layer.compute_input_drive(s)
    np.testing.assert_allclose(g.drive_scaling(s), (np.linspace(0.5, 2.0, 8) - 1)[None, :, None] * b, rtol=1e-6)
    with pytest.raises(ValueError, match="non-negative"):
        Homeostasis(LCAConv1D(2, 1, kernel_size=3, nonneg=False), mode="threshold")
    with pytest.raises(ValueError, match="target"):
        Homeostasis(layer, target=0.0)
    with pytest.raises(ValueError, match="reseed_from"):
        DictionaryHealth(layer, reseed_from="noise")


# ---------------------------------------------------------- loop hooks and resume
def test_health_and_homeostasis_resume_exactly(tmp_path):
    def run(path, **kw):
        layer, X = _far_atoms_layer(lca_iters=40)
        X = X[:32]
        cbs = [DictionaryHealth(layer, reseed=True, dead_threshold=0.01), Homeostasis(layer, rate=0.5)]
        hist = layer.fit(X, epochs=3, batch_size=8, seed=1, callbacks=cbs, checkpoint=path, progress=False, **kw)
        return layer, hist, cbs

    ref_layer, ref_hist, ref_cbs = run(str(tmp_path / "a.npz"))
    path = str(tmp_path / "b.npz")
    run(path, max_steps=6, checkpoint_every=1)  # stops inside the second epoch
    layer, hist, cbs = run(path)
    np.testing.assert_array_equal(layer.get_weights(), ref_layer.get_weights())
    np.testing.assert_array_equal(cbs[1].gains_, ref_cbs[1].gains_)
    assert list(hist) == list(ref_hist)
    assert sum(hist.column("reseeded")) > 0


def test_fit_loop_hooks_add_columns_and_keep_state(tmp_path):
    class Counter:
        def __init__(self):
            self.n, self.events = 0, []

        def on_epoch_start(self, epoch):
            self.events.append(("start", epoch))

        def on_epoch_end(self, epoch, record):
            self.events.append(("end", epoch))
            return {"seen": self.n}

        def on_fit_end(self):
            self.events.append(("fit_end",))

        def get_state(self):
            return {"n": np.array([self.n])}, {"tag": "c"}

        def set_state(self, arrays, meta):
            assert meta == {"tag": "c"}
            self.n = int(arrays["n"][0])

    class Model:
        def get_state(self):
            return {}, {}

        def set_state(self, arrays, meta):
            pass

    def step_for(c):
        def step(idx, rng, info):
            c.n += len(idx)
            return {"x": 1.0}
        return step

    plain = []
    c = Counter()
    hist = fit_loop(Model(), 10, step_for(c), epochs=2, batch_size=5, callbacks=[c, plain.append], progress=False)
    assert hist.column("seen") == [10, 20] and [r["seen"] for r in plain] == [10, 20]
    assert c.events == [("start", 0), ("end", 0), ("start", 1), ("end", 1), ("fit_end",)]
    path = str(tmp_path / "ck.npz")
    c1 = Counter()
    fit_loop(Model(), 10, step_for(c1), epochs=2, batch_size=5, callbacks=[c1], checkpoint=path, max_steps=3,
             progress=False)
    c2 = Counter()
    hist = fit_loop(Model(), 10, step_for(c2), epochs=2, batch_size=5, callbacks=[c2], checkpoint=path,
                    progress=False)
    assert c2.n == 20 and hist.column("seen") == [10, 20]
