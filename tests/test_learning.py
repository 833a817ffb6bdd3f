"""Dictionary learning loop: descent, unit-norm atoms, exact resume from checkpoints."""
import numpy as np
import pytest

from sparsecoding.lca import LCA, LCAConv2D, fit
from sparsecoding.optim import Adam


def _data(n=64, seed=0):
    # sparse combinations of 6 hidden atoms in 16 dims: a dictionary exists that lowers the energy
    r = np.random.default_rng(seed)
    atoms = r.standard_normal((6, 16))
    codes = np.maximum(r.standard_normal((n, 6)), 0) * (r.random((n, 6)) < 0.3)
    return codes @ atoms + 0.01 * r.standard_normal((n, 16))


@pytest.mark.parametrize("use_adam", [False, True])
def test_fit_lowers_energy_and_keeps_unit_norm(use_adam):
    X = _data(256)
    layer = LCA(12, 16, lambda_=0.1, solver="fista", lca_iters=200, tol=1e-6, eta=0.5, seed=1, dtype="float64",
                input_unit_var=False)
    opt = Adam([layer.weights], lr=0.02) if use_adam else None
    norms = []
    hist = fit(layer, X, n_epochs=8, batch_size=32, optimizer=opt, progress=False,
               callback=lambda step, rec: norms.append(np.linalg.norm(layer.weights, axis=1)))
    first = np.mean([h["energy"] for h in hist[:8]])
    last = np.mean([h["energy"] for h in hist[-8:]])
    assert last < 0.8 * first
    np.testing.assert_allclose(np.array(norms), 1.0, atol=1e-9)


@pytest.mark.parametrize("use_adam,solver", [(False, "fista"), (True, "fista"), (False, "lca")])
def test_checkpoint_resume_is_exact(tmp_path, use_adam, solver):
    X = np.random.default_rng(3).standard_normal((40, 1, 10, 10))

    def make():
        layer = LCAConv2D(4, 1, kernel_size=3, stride=1, lambda_=0.2, solver=solver, lca_iters=30, eta=0.05, seed=2,
                          dtype="float64", tau=10)
        return layer, (Adam([layer.weights], lr=0.01) if use_adam else None)

    full, opt = make()
    h_full = fit(full, X, n_epochs=3, batch_size=8, optimizer=opt, progress=False)
    ck = tmp_path / "ck.npz"
    part, opt = make()
    fit(part, X, n_epochs=3, batch_size=8, optimizer=opt, progress=False, checkpoint=ck, checkpoint_every=4,
        max_steps=7)
    resumed, opt = make()  # a fresh process would start like this
    h_res = fit(resumed, X, n_epochs=3, batch_size=8, optimizer=opt, progress=False, checkpoint=ck,
                checkpoint_every=4)
    np.testing.assert_array_equal(resumed.weights, full.weights)
    assert [h["energy"] for h in h_res] == [h["energy"] for h in h_full]
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporaries


def test_lambda_schedule_applied():
    X = _data(64)
    layer = LCA(8, 16, solver="fista", lca_iters=50, seed=0)
    hist = fit(layer, X, n_epochs=1, batch_size=16, lambda_schedule=lambda step: 0.1 + 0.1 * step, progress=False)
    assert [h["lambda_"] for h in hist] == pytest.approx([0.1, 0.2, 0.3, 0.4])


def _records_equal(a, b):
    """Lists of records equal key by key, the values bit for bit."""
    return len(a) == len(b) and all(r.keys() == s.keys() and all(np.array_equal(r[k], s[k]) for k in r)
                                    for r, s in zip(a, b))


@pytest.mark.parametrize("dense", [True, False], ids=["LCA", "LCAConv2D"])
@pytest.mark.parametrize("use_adam", [False, True], ids=["rule", "adam"])
def test_method_fit_interrupted_and_resumed_in_a_fresh_layer_is_bit_identical(tmp_path, dense, use_adam):
    if dense:
        X = _data(48, seed=4)

        def make():
            return LCA(8, 16, lambda_=0.1, solver="fista", lca_iters=40, eta=0.2, seed=5, dtype="float64")
    else:
        X = np.random.default_rng(4).standard_normal((40, 1, 9, 9))

        def make():
            return LCAConv2D(4, 1, kernel_size=3, stride=2, lambda_=0.2, solver="lca", tau=10, lca_iters=25, eta=0.05,
                             seed=5, dtype="float64")

    def run(layer, **kw):
        opt = Adam({"weights": layer.weights}, lr=0.01) if use_adam else None
        return layer.fit(X, None, epochs=3, batch_size=8, seed=7, optimizer=opt, progress=False, record_steps=True,
                         **kw)

    full = make()
    h_full = run(full)
    assert full.history_ is h_full and len(h_full) == 3 and len(h_full.steps) == 3 * (len(X) // 8)
    ck = tmp_path / "ck.npz"
    cut = make()
    h_cut = run(cut, checkpoint=ck, checkpoint_every=3, max_steps=8)  # stops inside the second epoch
    assert len(h_cut) == 1 and len(h_cut.steps) == 8
    resumed = make()  # a fresh process would start like this
    h_res = run(resumed, checkpoint=ck, checkpoint_every=3)
    assert np.array_equal(resumed.weights, full.weights)
    assert resumed.forward_pass == full.forward_pass
    assert _records_equal(h_res, h_full) and _records_equal(h_res.steps, h_full.steps)
    assert not list(tmp_path.glob("*.tmp"))


def test_method_fit_ignores_y_and_matches_the_functional_front():
    X = _data(32)
    a = LCA(8, 16, solver="fista", lca_iters=30, seed=0)
    b = LCA(8, 16, solver="fista", lca_iters=30, seed=0)
    h = a.fit(X, np.arange(len(X)), epochs=2, batch_size=8, progress=False)
    steps = fit(b, X, n_epochs=2, batch_size=8, progress=False)
    assert np.array_equal(a.weights, b.weights)
    assert _records_equal(h, b.history_) and len(steps) == 8 and not h.steps
