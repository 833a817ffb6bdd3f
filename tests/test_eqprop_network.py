"""EqProp energy: analytic derivatives against central finite differences of Phi (float64)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparsecoding.eqprop.network import ConvEBM, MLPEBM


def make_net(pools="ma", softmax=False, loss="mse", act="my_hard_sig", seed=0, fc=(5, 3), layout="auto"):
    return ConvEBM(8, [2, 3, 4], [3, 3], [1, 1], [1, 0], pools, list(fc), activation=act, softmax=softmax, loss=loss,
                   dtype="float64", seed=seed, layout=layout)


LAYOUTS = ["channels_first", "channels_last"]


def random_states(net, n, rng):
    return [rng.uniform(0, 1, (n, *s)) for s in net.state_shapes]


CONFIGS = [("mm", False, "mse"), ("ma", False, "cel"), ("ai", True, "cel"), ("im", True, "mse")]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("pools,softmax,loss", CONFIGS)
@given(seed=st.integers(0, 2**31), beta=st.sampled_from([0.0, 0.3, -0.7]))
def test_state_grads_equal_finite_differences(pools, softmax, loss, layout, seed, beta):
    r = np.random.default_rng(seed)
    net = make_net(pools, softmax, loss, seed=seed % 100, layout=layout)
    x, y = r.uniform(0, 1, (2, 2, 8, 8)), r.integers(0, 3, 2)
    states = random_states(net, 2, r)
    grads = net.state_grads(x, states, y, beta)
    eps = 1e-6
    for k, s in enumerate(states):
        flat = s.reshape(2, -1)
        for j in r.choice(flat.shape[1], size=min(6, flat.shape[1]), replace=False):
            sp = [a.copy() for a in states]
            sm = [a.copy() for a in states]
            sp[k].reshape(2, -1)[:, j] += eps
            sm[k].reshape(2, -1)[:, j] -= eps
            fd = (net.phi(x, sp, y, beta) - net.phi(x, sm, y, beta)) / (2 * eps)
            np.testing.assert_allclose(grads[k].reshape(2, -1)[:, j], fd, atol=1e-6)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("pools,softmax,loss", CONFIGS)
def test_param_grads_equal_finite_differences(pools, softmax, loss, layout):
    r = np.random.default_rng(7)
    net = make_net(pools, softmax, loss, layout=layout)
    x, y = r.uniform(0, 1, (3, 2, 8, 8)), r.integers(0, 3, 3)
    states = random_states(net, 3, r)
    beta = 0.4
    grads = net.param_grads(x, states, y, beta)
    eps = 1e-6
    for k, (W, b) in enumerate(net.params):
        for arr, g in ((W, grads[k][0]), (b, grads[k][1])):
            flat, gflat = arr.reshape(-1), g.reshape(-1)
            for j in r.choice(flat.size, size=min(8, flat.size), replace=False):
                old = flat[j]
                flat[j] = old + eps
                net._ops.clear()
                fp = net.phi(x, states, y, beta).mean()
                flat[j] = old - eps
                net._ops.clear()
                fm = net.phi(x, states, y, beta).mean()
                flat[j] = old
                net._ops.clear()
                assert abs((fp - fm) / (2 * eps) - gflat[j]) < 1e-6


def test_mlp_derivatives_and_shapes():
    r = np.random.default_rng(1)
    net = MLPEBM([6, 5, 4, 3], dtype="float64", seed=0)
    assert [p[0].shape for p in net.params] == [(5, 6), (4, 5), (3, 4)]
    x, y = r.uniform(0, 1, (2, 6)), np.array([0, 2])
    states = random_states(net, 2, r)
    g = net.state_grads(x, states, y, 0.5)
    eps = 1e-6
    for k in range(len(states)):
        for j in range(states[k].shape[1]):
            sp = [a.copy() for a in states]
            sm = [a.copy() for a in states]
            sp[k][:, j] += eps
            sm[k][:, j] -= eps
            fd = (net.phi(x, sp, y, 0.5) - net.phi(x, sm, y, 0.5)) / (2 * eps)
            np.testing.assert_allclose(g[k][:, j], fd, atol=1e-7)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_free_phase_reaches_fixed_point(layout):
    r = np.random.default_rng(2)
    net = make_net("mm", act="my_hard_sig", seed=3, layout=layout)
    x = r.uniform(0, 1, (4, 2, 8, 8))
    s = net.relax(x, net.init_states(4), 200)
    s2 = net.step(x, s)
    assert max(np.abs(a - b).max() for a, b in zip(s, s2)) < 1e-8
    s_async = net.relax(x, net.init_states(4), 200, schedule="async")
    assert max(np.abs(a - b).max() for a, b in zip(s, s_async)) < 1e-6


def test_bad_input():
    with pytest.raises(ValueError, match="pools"):
        ConvEBM(8, [1, 2], [3], [1], [1], "mx", [3])
    with pytest.raises(ValueError, match="loss"):
        ConvEBM(8, [1, 2], [3], [1], [1], "m", [3], loss="hinge")
    with pytest.raises(ValueError, match="activation"):
        ConvEBM(8, [1, 2], [3], [1], [1], "m", [3], activation="relu6")
    with pytest.raises(ValueError, match="layout"):
        ConvEBM(8, [1, 2], [3], [1], [1], "m", [3], layout="nhwc")
    net = ConvEBM(8, [1, 2], [3], [1], [1], "m", [3])
    assert net.state_shapes[0] == (4, 4, 2)  # "auto" is channels-last on the CPU
    with pytest.raises(ValueError, match="shape"):
        net.phi(np.zeros((2, 3, 8, 8)), net.init_states(2))
    with pytest.raises(ValueError, match="labels"):
        net.state_grads(np.zeros((2, 1, 8, 8)), net.init_states(2), beta=0.5)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("pools", ["mm", "ai", "im"])
def test_partial_state_grads_equal_full(pools, layout):
    r = np.random.default_rng(5)
    net = make_net(pools, layout=layout)
    x, y = r.uniform(0, 1, (2, 2, 8, 8)), np.array([1, 2])
    states = random_states(net, 2, r)
    full = net.state_grads(x, states, y, 0.3)
    for layers in ([0, 2], [1, 3], [3]):
        part = net.state_grads(x, states, y, 0.3, layers=layers)
        for k in range(net.n_states):
            if k in layers:
                np.testing.assert_allclose(part[k], full[k], atol=1e-12)
            else:
                assert part[k] is None


@pytest.mark.parametrize("layout", LAYOUTS)
def test_relax_with_cached_input_term_equals_plain_steps(layout):
    r = np.random.default_rng(6)
    net = make_net("mm", layout=layout)
    x, y = r.uniform(0, 1, (3, 2, 8, 8)), np.array([0, 1, 2])
    s = net.init_states(3)
    manual = s
    for _ in range(6):
        manual = net.step(x, manual, y, 0.2)
    relaxed = net.relax(x, s, 6, y, 0.2)
    for a, b in zip(manual, relaxed):
        np.testing.assert_array_equal(a, b)
    assert net._input_term is None  # the cache does not outlive the relaxation


@pytest.mark.parametrize("layout", LAYOUTS)
def test_in_place_optimiser_steps_reach_every_layer(layout):
    # Optimisers update the parameter arrays in place. The network must relax and predict with
    # the updated weights: compare with a network built afresh from copies of the same values
    # (the reference), after SGD steps on the EP gradient.
    from sparsecoding.eqprop.train import make_optimizer

    rng = np.random.default_rng(0)
    net = make_net("mm", layout=layout)
    x = rng.uniform(0, 1, (6, 2, 8, 8))
    y = rng.integers(0, 3, 6)
    net.relax(x, net.init_states(6), 5)  # operators built and used with the initial weights
    opt = make_optimizer(net, "sgd", lrs=0.5, mmt=0.9)
    for _ in range(3):
        grads = net.ep_gradients(x, y, 10, 4, (0.0, 0.5))
        opt.step([g for pair in grads for g in pair])
    fresh = make_net("mm", layout=layout)
    for (W, b), (W2, b2) in zip(fresh.params, net.params):
        W[...], b[...] = W2, b2
    assert not np.allclose(net.params[1][0], make_net("mm", layout=layout).params[1][0])  # weights moved
    s_net = net.relax(x, net.init_states(6), 15)
    s_ref = fresh.relax(x, fresh.init_states(6), 15)
    for a, b in zip(s_net, s_ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    g_net, g_ref = net.state_grads(x, s_net), fresh.state_grads(x, s_ref)
    for a, b in zip(g_net, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
