"""The EP estimator against the true gradient of the loss at the free fixed point."""
import numpy as np
import pytest

from sparsecoding.eqprop.network import ConvEBM, MLPEBM


def settled_loss(net, x, y, T):
    s = net.relax(x, net.init_states(x.shape[0]), T).state
    return float(net.loss_value(s, y).mean())


def true_gradient(net, x, y, T, eps=1e-5, which=None):
    """d mean-loss(s*(theta)) / d theta by central differences, re-settling at theta +- eps."""
    out = []
    for k, (W, b) in enumerate(net.params):
        gW = np.zeros_like(W)
        idx = which[k] if which is not None else list(np.ndindex(W.shape))
        for j in idx:
            old = W[j]
            W[j] = old + eps
            net._ops.clear()
            lp = settled_loss(net, x, y, T)
            W[j] = old - eps
            net._ops.clear()
            lm = settled_loss(net, x, y, T)
            W[j] = old
            net._ops.clear()
            gW[j] = (lp - lm) / (2 * eps)
        out.append(gW)
    return out


def _small_net(seed=0):
    # smooth activation and small weights: the relaxation is a contraction with a unique fixed point
    return MLPEBM([6, 5, 3], activation="sigmoid", dtype="float64", seed=seed, scale=0.5)


def _errors(net, x, y, betas, T, truth, third_phase):
    errs = []
    for beta in betas:
        g = net.ep_gradients(x, y, T1=T, T2=T, betas=(0.0, beta), third_phase=third_phase)
        errs.append(sum(np.abs(gk[0] - tk).sum() for gk, tk in zip(g, truth)) / sum(np.abs(t).sum() for t in truth))
    return np.array(errs)


def test_ep_gradient_converges_to_true_gradient_linearly_and_quadratically():
    r = np.random.default_rng(0)
    net = _small_net()
    x, y = r.uniform(0, 1, (4, 6)), np.array([0, 1, 2, 1])
    T = 300
    truth = true_gradient(net, x, y, T)
    betas = [0.2, 0.1, 0.05]
    one = _errors(net, x, y, betas, T, truth, third_phase=False)
    sym = _errors(net, x, y, betas, T, truth, third_phase=True)
    # one-sided: error halves when beta halves (O(beta)); symmetric: quarters (O(beta^2))
    np.testing.assert_allclose(one[:-1] / one[1:], 2.0, rtol=0.15)
    np.testing.assert_allclose(sym[:-1] / sym[1:], 4.0, rtol=0.15)
    assert sym[-1] < 1e-3 and one[-1] < 0.05


def test_ep_on_conv_net_with_max_pool_approaches_true_gradient():
    r = np.random.default_rng(1)
    net = ConvEBM(6, [1, 3], [3], [1], [1], "m", [3], activation="sigmoid", dtype="float64", seed=2, scale=0.5)
    x, y = r.uniform(0, 1, (2, 1, 6, 6)), np.array([0, 2])
    T = 200
    which = [[(0, 0, 1, 1), (1, 0, 0, 2), (2, 0, 2, 2)], [(0, 1), (2, 5), (1, 11)]]
    truth = true_gradient(net, x, y, T, which=which)
    g = net.ep_gradients(x, y, T1=T, T2=T, betas=(0.0, 0.01), third_phase=True)
    for k, idx in enumerate(which):
        for j in idx:
            assert abs(g[k][0][j] - truth[k][j]) <= 1e-4 + 1e-3 * abs(truth[k][j])


@pytest.mark.parametrize("softmax", [False, True])
def test_symmetric_estimate_is_mean_of_two_one_sided(softmax):
    r = np.random.default_rng(3)
    net = MLPEBM([6, 5, 4, 3], softmax=softmax, loss="cel", dtype="float64", seed=1)
    x, y = r.uniform(0, 1, (3, 6)), np.array([2, 0, 1])
    sym = net.ep_gradients(x, y, 50, 20, (0.0, 0.3), third_phase=True)
    plus = net.ep_gradients(x, y, 50, 20, (0.0, 0.3))
    minus = net.ep_gradients(x, y, 50, 20, (0.0, -0.3))
    for s, p, m in zip(sym, plus, minus):
        np.testing.assert_allclose(s[0], 0.5 * (p[0] + m[0]), atol=1e-12)
        np.testing.assert_allclose(s[1], 0.5 * (p[1] + m[1]), atol=1e-12)


def test_random_sign_flips_beta():
    r = np.random.default_rng(4)
    net = MLPEBM([4, 3, 2], dtype="float64", seed=0)
    x, y = r.uniform(0, 1, (2, 4)), np.array([0, 1])
    plus = net.ep_gradients(x, y, 30, 10, (0.0, 0.2))
    minus = net.ep_gradients(x, y, 30, 10, (0.0, -0.2))
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(10):
        g = net.ep_gradients(x, y, 30, 10, (0.0, 0.2), random_sign=True, rng=rng)
        seen.add("+" if np.allclose(g[0][0], plus[0][0]) else "-" if np.allclose(g[0][0], minus[0][0]) else "?")
    assert seen == {"+", "-"}
