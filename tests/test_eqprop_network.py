"""EqProp energy: analytic derivatives against central finite differences of Phi (float64)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparsecoding.eqprop.network import ConvEBM, MLPEBM

from test_conv import ref_conv


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
    s = net.relax(x, net.init_states(4), 200).state
    s2 = net.step(x, s)
    assert max(np.abs(a - b).max() for a, b in zip(s, s2)) < 1e-8
    s_async = net.relax(x, net.init_states(4), 200, schedule="async").state
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
    assert net.state_shapes[0] == (2, 4, 4)  # public states are channels-first whatever the layout
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
    relaxed = net.relax(x, s, 6, y, 0.2).state
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
    s_net = net.relax(x, net.init_states(6), 15).state
    s_ref = fresh.relax(x, fresh.init_states(6), 15).state
    for a, b in zip(s_net, s_ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    g_net, g_ref = net.state_grads(x, s_net), fresh.state_grads(x, s_ref)
    for a, b in zip(g_net, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["auto", *LAYOUTS])
def test_public_states_are_channels_first_in_every_internal_layout(layout):
    # whatever the internal layout, every state the network takes or returns is (N, C, H, W),
    # and the dynamics agree with the channels-first computation
    r = np.random.default_rng(7)
    net, ref = make_net("ma", layout=layout), make_net("ma", layout="channels_first")
    assert [s.shape for s in net.init_states(3)] == [(3, 3, 4, 4), (3, 4, 1, 1), (3, 5), (3, 3)]
    assert net.state_shapes == [(3, 4, 4), (4, 1, 1), (5,), (3,)]
    x, y = r.uniform(0, 1, (3, 2, 8, 8)), np.array([0, 2, 1])
    out, want = net.relax(x, net.init_states(3), 7, y, 0.3), ref.relax(x, ref.init_states(3), 7, y, 0.3)
    assert out.n_iter == 7 and not out.converged
    for a, b in zip(out.state, want.state):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(net.step(x, out.state, y, 0.3, "async"), ref.step(x, want.state, y, 0.3, "async")):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    net.ep_gradients(x, y, 5, 3)
    ref.ep_gradients(x, y, 5, 3)
    assert [s.shape for s in net.last_free_states] == [s.shape for s in ref.last_free_states]
    for a, b in zip(net.last_free_states, ref.last_free_states):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_relax_tol_is_the_runners_relative_change():
    # converged means max_k max|s_t - s_{t-1}| <= tol * max_k max|s_t| at a check (every check_every steps)
    r = np.random.default_rng(8)
    net = make_net("mm", act="my_hard_sig", seed=3)
    x = r.uniform(0, 1, (4, 2, 8, 8))
    out = net.relax(x, net.init_states(4), 500, tol=1e-6, check_every=5)
    assert out.converged and out.n_iter % 5 == 0 and out.n_iter < 500
    before = net.relax(x, net.init_states(4), out.n_iter - 1).state
    change = max(np.abs(a - b).max() for a, b in zip(out.state, before))
    assert change <= 1e-6 * max(np.abs(a).max() for a in out.state)
    assert out.history[-1] == (out.n_iter, pytest.approx(change / max(np.abs(a).max() for a in out.state)))


@pytest.mark.parametrize("pools", ["ma", "mm"])
def test_generic_engines_relax_like_the_native_ones(pools):
    # the code path cupy takes (generic-array convolutions and pools, channels-first), run on numpy
    from sparsecoding.backend import use_engines

    r = np.random.default_rng(9)
    native = make_net(pools)
    with use_engines("generic"):
        generic = make_net(pools)
        assert generic.layout == "channels_first"
        x, y = r.uniform(0, 1, (3, 2, 8, 8)), np.array([0, 2, 1])
        g_out = generic.relax(x, generic.init_states(3), 9, y, 0.4, schedule="async").state
        g_grad = generic.ep_gradients(x, y, 6, 3, third_phase=True)
    assert native.layout == "channels_last"
    n_out = native.relax(x, native.init_states(3), 9, y, 0.4, schedule="async").state
    n_grad = native.ep_gradients(x, y, 6, 3, third_phase=True)
    for a, b in zip(g_out, n_out):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    for (a, b), (c, d) in zip(g_grad, n_grad):
        np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b, d, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("schedule", ["sync", "async"])
def test_no_host_read_between_checks(host_reads, schedule):
    # relaxations of 20 and 40 steps with check_every 10: the extra 20 steps cost exactly the
    # 2 extra checks' reads, so no step reads a value on the host (generic engines: the numba
    # kernels take plain arrays only, not the counting subclass)
    from sparsecoding.backend import use_engines

    guard, reads = host_reads
    r = np.random.default_rng(10)
    with use_engines("generic"):
        net = make_net("ma", softmax=True, loss="cel")
        net.params = [(guard(W), guard(b)) for W, b in net.params]
        x, y = guard(r.uniform(0, 1, (3, 2, 8, 8))), np.array([0, 2, 1])
        counts = []
        for T in (20, 40):
            before = reads()
            out = net.relax(x, net.init_states(3), T, y, 0.5, schedule=schedule, check_every=10)
            counts.append(reads() - before)
            assert out.n_iter == T and isinstance(out.state[0], type(x))
    assert counts[1] - counts[0] == 2


def _ref_phi(net, x, states, y, beta, params=None):
    """Phi of the module docstring written out with the direct convolution of test_conv (the full conv
    output, pooled with numpy), fc products and the mse loss: independent of the engines and of the
    network's cropping of odd conv outputs."""
    params = net.params if params is None else params
    n = x.shape[0]
    inputs = [x] + states
    total = np.zeros(n)
    for k in range(net.n_conv):
        W, b = params[k]
        pre = ref_conv(inputs[k], W, (net.strides[k],) * 2, (net.paddings[k],) * 2) + b[None, :, None, None]
        if net.pools[k] != "i":
            ph, pw = pre.shape[2] // 2, pre.shape[3] // 2
            win = pre[:, :, :2 * ph, :2 * pw].reshape(n, pre.shape[1], ph, 2, pw, 2)
            pre = win.max(axis=(3, 5)) if net.pools[k] == "m" else win.mean(axis=(3, 5))
        total += np.sum((pre * states[k]).reshape(n, -1), axis=1)
    for k in range(net.n_conv, net.n_states):
        W, b = params[k]
        total += np.sum((inputs[k].reshape(n, -1) @ W.T + b) * states[k], axis=1)
    t = np.eye(net.n_classes)[y]
    return total - beta * 0.5 * np.sum((states[-1] - t) ** 2, axis=1)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("pools", ["mm", "am", "mi"])
@given(seed=st.integers(0, 2**31), beta=st.sampled_from([0.0, 0.4]))
def test_odd_conv_outputs_against_written_out_phi(pools, layout, seed, beta):
    # conv outputs 7x7 and 3x3 (odd: a 2x2 floor pool drops a row and a column, which the network never
    # computes): Phi against the written-out formula on the full outputs, its state and weight derivatives
    # against central differences of that formula
    r = np.random.default_rng(seed)
    net = ConvEBM(9, [2, 3, 4], [3, 2], [1, 1], [0, 1], pools, [5, 3], dtype="float64", seed=seed % 100,
                  layout=layout)
    x, y = r.uniform(0, 1, (2, 2, 9, 9)), r.integers(0, 3, 2)
    states = random_states(net, 2, r)
    np.testing.assert_allclose(net.phi(x, states, y, beta), _ref_phi(net, x, states, y, beta), rtol=1e-12,
                               atol=1e-12)
    eps = 1e-6
    grads = net.state_grads(x, states, y, beta)
    for k, s in enumerate(states):
        for j in r.choice(s[0].size, size=min(5, s[0].size), replace=False):
            sp, sm = [a.copy() for a in states], [a.copy() for a in states]
            sp[k].reshape(2, -1)[:, j] += eps
            sm[k].reshape(2, -1)[:, j] -= eps
            fd = (_ref_phi(net, x, sp, y, beta) - _ref_phi(net, x, sm, y, beta)) / (2 * eps)
            np.testing.assert_allclose(grads[k].reshape(2, -1)[:, j], fd, atol=1e-6)
    pg = net.param_grads(x, states, y, beta)
    for k in range(net.n_conv):
        W = net.params[k][0]
        for j in r.choice(W.size, size=4, replace=False):
            pp = [(a.copy(), b.copy()) for a, b in net.params]
            pm = [(a.copy(), b.copy()) for a, b in net.params]
            pp[k][0].reshape(-1)[j] += eps
            pm[k][0].reshape(-1)[j] -= eps
            fd = (_ref_phi(net, x, states, y, beta, pp) - _ref_phi(net, x, states, y, beta, pm)).mean() / (2 * eps)
            np.testing.assert_allclose(pg[k][0].reshape(-1)[j], fd, atol=1e-6)
