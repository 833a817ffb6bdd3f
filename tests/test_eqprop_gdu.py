"""Hand-written BPTT (for the GDU check) against finite differences, and the GDU agreement."""
import numpy as np
import pytest

from sparsecoding.eqprop import ConvEBM, MLPEBM
from sparsecoding.eqprop.gdu import bptt_gradients, gdu_check, hessian_vector


def _conv(softmax=False, loss="mse"):
    return ConvEBM(6, [1, 3], [3], [1], [1], "m", [4, 3] if softmax else [3], activation="sigmoid", softmax=softmax,
                   loss=loss, dtype="float64", seed=2, scale=0.5)


@pytest.mark.parametrize("softmax,loss", [(False, "mse"), (False, "cel"), (True, "cel")])
def test_hessian_vector_equals_finite_differences_of_state_grads(softmax, loss):
    r = np.random.default_rng(0)
    net = _conv(softmax, loss)
    x, y = r.uniform(0, 1, (2, 1, 6, 6)), np.array([0, 2])
    s = [r.uniform(0, 1, (2, *sh)) for sh in net.state_shapes]
    w = [r.standard_normal(a.shape) for a in s]
    memo = net._forward_terms(net._check_x(x), s)[1]
    hw = hessian_vector(net, x, s, w, memo, y, beta=0.4)
    eps = 1e-6
    gp = net.state_grads(x, [a + eps * b for a, b in zip(s, w)], y, 0.4)
    gm = net.state_grads(x, [a - eps * b for a, b in zip(s, w)], y, 0.4)
    for h, p, m in zip(hw, gp, gm):
        np.testing.assert_allclose(h, (p - m) / (2 * eps), atol=1e-6)


@pytest.mark.parametrize("make", [lambda: MLPEBM([5, 4, 3], activation="tanh", dtype="float64", seed=1, scale=0.7),
                                  lambda: _conv(True, "cel")])
def test_full_bptt_equals_finite_differences_of_unrolled_loss(make):
    r = np.random.default_rng(1)
    net = make()
    x = r.uniform(0, 1, (3, 5)) if isinstance(net, MLPEBM) else r.uniform(0, 1, (3, 1, 6, 6))
    y = np.array([0, 2, 1])
    T = 6

    def unrolled_loss():
        s = net.init_states(3)
        for _ in range(T):
            s = net.step(x, s)
        return float(net.loss_value(s, y).mean()), s

    traj = [net.init_states(3)]
    for _ in range(T):
        traj.append(net.step(x, traj[-1]))
    g = bptt_gradients(net, x, y, traj, T)[-1]
    eps = 1e-6
    for k, (W, b) in enumerate(net.params):
        for arr, gg in ((W, g[k][0]), (b, g[k][1])):
            for j in r.choice(arr.size, size=min(5, arr.size), replace=False):
                old = arr.flat[j]
                arr.flat[j] = old + eps
                net._ops.clear()
                lp = unrolled_loss()[0]
                arr.flat[j] = old - eps
                net._ops.clear()
                lm = unrolled_loss()[0]
                arr.flat[j] = old
                net._ops.clear()
                assert abs((lp - lm) / (2 * eps) - gg.flat[j]) < 1e-7


def test_gdu_property_holds_on_small_networks(tmp_path):
    r = np.random.default_rng(2)
    net = _conv()
    x, y = r.uniform(0, 1, (2, 1, 6, 6)), np.array([0, 2])
    summary = gdu_check(net, x, y, T1=150, T2=10, beta=1e-3, out_dir=str(tmp_path))
    for syn in summary["synapses"]:
        assert syn["relative_rmse"] < 1e-2 and syn["sign_agreement"] > 0.99
    assert (tmp_path / "gdu.json").exists() and (tmp_path / "gdu.png").exists()
