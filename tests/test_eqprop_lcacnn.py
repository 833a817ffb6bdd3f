"""LCA front end for EqProp (LCACNN): coupled energy derivatives, dictionary modes, feed-forward equivalence,
checkpoints."""
import numpy as np
import pytest

from conftest import central_difference
from sparsecoding.eqprop import ConvEBM
from sparsecoding.eqprop.lcacnn import LCACNN
from sparsecoding.lca import LCAConv2D


def dictionary(feats=6, channels=1, k=3, seed=1):
    D = np.random.default_rng(seed).standard_normal((feats, channels, k, k))
    return D / np.linalg.norm(D.reshape(feats, -1), axis=1)[:, None, None, None]


def make(mode="pretrained", fb=0.0, dtype="float64", seed=0, **kw):
    D = None if mode == "learn" else dictionary()
    opts = dict(lca_feats=6, lca_ksize=3, lca_stride=2, lca_lambda=0.1, lca_tau=5.0, lca_iters=60, lca_eta=0.05,
                dict_training=mode, dictionary=D, scale_feedback=fb, dtype=dtype, seed=seed)
    opts.update(kw)
    return LCACNN(8, 1, [4], [3], [1], [1], "m", [3], **opts)


def images(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, 1, 8, 8))


def test_shapes_and_the_code_is_the_networks_input():
    net = make()
    assert net.code_shape == (6, 4, 4) and net.ebm.params[0][0].shape == (4, 6, 3, 3)
    x_std, a = net.encode(images(3))
    assert a.shape == (3, 6, 4, 4) and x_std.shape == (3, 1, 8, 8)
    np.testing.assert_allclose(x_std.reshape(3, -1).mean(1), 0, atol=1e-12)  # standardised per sample
    out = net.relax(images(3), 5)
    assert out.state[0].shape == (3, 6, 4, 4) and [s.shape for s in out.state[1]] == [(3, 4, 2, 2), (3, 3)]


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("kappa", [0.0, 0.7])
def test_coupled_drive_is_minus_the_gradient_of_the_coupled_energy(layout, kappa):
    # D (x - D^T a) + kappa dPhi/da = -d/da [1/2||x - D^T a||^2 - kappa Phi(a, s)]: central differences
    r = np.random.default_rng(3)
    net = make(fb=kappa, layout=layout)
    x_std, _ = net.encode(images(2, seed=1))
    a = r.uniform(0.05, 1.0, (2, 6, 4, 4))  # away from 0: the l1 term is smooth there
    s = [r.uniform(0, 1, (2, *sh)) for sh in net.ebm.state_shapes]
    lam = net.lca.lambda_

    def smooth_energy(a_):
        return float(np.sum(net.coupled_energy(x_std, a_, s)) - lam * np.abs(a_).sum())

    fd = central_difference(smooth_energy, a)
    np.testing.assert_allclose(net.coupled_drive(x_std, a, s), -fd, atol=1e-6)
    # the top-down feedback alone: dPhi/da of the first synapse
    fd_phi = central_difference(lambda a_: float(np.sum(net.ebm.phi(a_, s))), a)
    np.testing.assert_allclose(net.input_grad(a, s), fd_phi, atol=1e-6)


def test_network_state_and_parameter_derivatives_on_the_code():
    r = np.random.default_rng(4)
    net = make()
    ebm = net.ebm
    _, a = net.encode(images(2, seed=2))
    s = [r.uniform(0, 1, (2, *sh)) for sh in ebm.state_shapes]
    y = np.array([0, 2])
    g = ebm.state_grads(a, s, y, 0.4)
    for k in range(len(s)):
        def f(v, k=k):
            t = list(s)
            t[k] = v
            return float(np.sum(ebm.phi(a, t, y, 0.4)))
        np.testing.assert_allclose(g[k], central_difference(f, s[k]), atol=1e-6)
    pg = ebm.param_grads(a, s, y, 0.4)
    W = ebm.params[0][0]
    fd = central_difference(lambda w: _phi_at(ebm, W, w, a, s, y), W.copy())
    np.testing.assert_allclose(pg[0][0], fd / 2, atol=1e-6)  # batch mean of 2 samples


def _phi_at(ebm, W, w, a, s, y):
    old = W.copy()
    W[...] = w
    try:
        return float(np.sum(ebm.phi(a, s, y, 0.4)))
    finally:
        W[...] = old


def test_zero_feedback_is_the_feed_forward_front_end_exactly():
    # LCACNN(scale_feedback=0) == the LCA layer's code fed to a ConvEBM with the same weights
    x, y = images(4, seed=5), np.array([0, 1, 2, 1])
    net = make(fb=0.0, dtype="float32")
    lca = LCAConv2D(6, 1, kernel_size=3, stride=2, lambda_=0.1, tau=5.0, lca_iters=60, pad="same", dtype="float32")
    lca.assign_weight_values(dictionary().astype(np.float32), normalize=False)
    ebm = ConvEBM(4, [6, 4], [3], [1], [1], "m", [3], seed=0, dtype="float32")
    a = lca.solve(lca.preprocess(x))["acts"]
    for (W, b), (W2, b2) in zip(ebm.params, net.ebm.params):
        assert np.array_equal(W, W2) and np.array_equal(b, b2)
    g_net = net.ep_gradients(x, y, 12, 4, (0.0, 0.5), third_phase=True)
    g_ref = ebm.ep_gradients(a, y, 12, 4, (0.0, 0.5), third_phase=True)
    for (p, q), (r, t) in zip(g_net, g_ref):
        assert np.array_equal(p, r) and np.array_equal(q, t)
    assert np.array_equal(net.predict(x, 12), ebm.predict(a, 12))


def test_feedback_changes_the_code_and_the_coupled_fixed_point_holds():
    # the coupled relaxation settles where u = a + D(x - D^T a) + kappa dPhi/da with a = T_lambda(u), away
    # from the feed-forward code (the LCA's own fixed point, converged here)
    x = images(2, seed=6)
    net = make(fb=0.05, lca_lambda=0.6, lca_tau=4.5, lca_solver="fista", lca_iters=20000, lca_tol=1e-13)
    x_std, a = net.encode(x)
    np.testing.assert_allclose(net.lca.transfer(a + net.coupled_drive(x_std, a, [0 * s for s in net.relax(
        x, 1).state[1]])), a, atol=1e-6)  # zero states: no feedback, the LCA fixed point
    out = net.relax(x, 5000, tol=1e-9)
    code, states = out.state
    assert out.converged and out.n_iter < 5000
    assert np.abs(code - a).max() > 1e-3  # the feedback reached the sparse layer
    u = code + net.coupled_drive(x_std, code, states)
    np.testing.assert_allclose(net.lca.transfer(u), code, atol=1e-6)


def _fit(net, tmp_path=None, name="run.npz", **kw):
    rng = np.random.default_rng(7)
    X, y = rng.uniform(0, 1, (24, 1, 8, 8)), rng.integers(0, 3, 24)
    opts = dict(epochs=2, batch_size=8, seed=3, T1=6, T2=3, lrs=[0.1, 0.05], progress=False, third_phase=True)
    opts.update(kw)
    ck = None if tmp_path is None else str(tmp_path / name)
    return net.fit(X, y, checkpoint=ck, **opts)


def test_pretrained_dictionary_is_bit_identical_after_training():
    net = make("pretrained", fb=0.5)
    D0 = net.lca.weights.copy()
    W0 = net.ebm.params[0][0].copy()
    hist = _fit(net)
    assert np.array_equal(net.lca.weights, D0) and not np.array_equal(net.ebm.params[0][0], W0)
    assert all(0 < r["lca_active"] < 1 for r in hist)


@pytest.mark.parametrize("mode,fb", [("finetune", 0.5), ("learn", 0.0), ("finetune", 0.0)])
def test_finetune_and_learn_change_the_dictionary_and_keep_unit_norm_atoms(mode, fb):
    net = make(mode, fb=fb)
    D0 = net.lca.weights.copy()
    _fit(net)
    D = net.lca.weights
    assert not np.allclose(D, D0)
    np.testing.assert_allclose(np.linalg.norm(D.reshape(6, -1), axis=1), 1, rtol=1e-9)


def test_finetune_uses_the_nudged_code_and_learn_the_front_end_code():
    # one step by hand: the rule of after_step is lca-pytorch's update on (code, residual)
    x, y = images(4, seed=8), np.array([0, 1, 2, 0])
    for mode in ("finetune", "learn"):
        net = make(mode, fb=0.9)
        net.ep_gradients(x, y, 10, 5, (0.0, 0.8))
        ph = dict(net._phase)
        c = ph["nudged_code"] if mode == "finetune" else ph["code"]
        ref = LCAConv2D(6, 1, kernel_size=3, stride=2, lambda_=0.1, eta=0.05, pad="same", dtype="float64")
        ref.assign_weight_values(net.lca.weights.copy())
        ref.update_weights(c, ph["x"] - ref.compute_recon(c, in_shape=(8, 8)))
        net.after_step()
        np.testing.assert_allclose(net.lca.weights, ref.weights, atol=1e-12)
    assert not np.allclose(ph["nudged_code"], ph["code"])  # with feedback the nudge reaches the code


def test_checkpoint_round_trip_resumes_bit_identically(tmp_path):
    # a run stopped after 3 batches and resumed by a fresh model (other seed) from its checkpoint ends with the
    # same dictionary, network and optimiser-driven weights as an uninterrupted run
    ref = make("finetune", fb=0.3)
    hist_ref = _fit(ref, tmp_path, "ref.npz")
    _fit(make("finetune", fb=0.3), tmp_path, "run.npz", max_steps=3)
    net = make("finetune", fb=0.3, seed=11)
    hist = _fit(net, tmp_path, "run.npz")
    assert np.array_equal(net.lca.weights, ref.lca.weights)
    for (W, b), (W2, b2) in zip(net.ebm.params, ref.ebm.params):
        assert np.array_equal(W, W2) and np.array_equal(b, b2)
    drop = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert drop(hist) == drop(hist_ref)


def test_bad_configuration_is_refused_naming_it():
    with pytest.raises(ValueError, match="dict_training must be one of"):
        make("frozen")
    with pytest.raises(ValueError, match="needs a dictionary"):
        LCACNN(8, 1, [4], [3], [1], [1], "m", [3], lca_feats=6, lca_ksize=3, dict_training="finetune")
    with pytest.raises(ValueError, match="random dictionary"):
        LCACNN(8, 1, [4], [3], [1], [1], "m", [3], lca_feats=6, lca_ksize=3, dict_training="learn",
               dictionary=dictionary())
    with pytest.raises(ValueError, match=r"shape \(6, 3, 3, 3\); this LCA layer needs \(6, 1, 3, 3\)"):
        make(dictionary=dictionary(channels=3))
    with pytest.raises(ValueError, match="scale_feedback"):
        make(fb=-1.0)
    with pytest.raises(ValueError, match="x must have shape"):
        make().predict(np.zeros((2, 1, 6, 6)), 3)
