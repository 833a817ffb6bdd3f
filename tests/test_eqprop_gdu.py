"""Hand-written BPTT (for the GDU check) against finite differences, and the GDU agreement."""
import numpy as np
import pytest

from sparsecoding.eqprop import ConvEBM, MLPEBM
from sparsecoding.eqprop.gdu import GDU_DEFAULTS, bptt_gradients, gdu_check, hessian_vector


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
    hw = hessian_vector(net, x, s, w, None, y, beta=0.4)  # pool indices held at those of s
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


def _small_default_net():
    # the command line's default architecture, narrower: my_hard_sig, max pools, float32
    return ConvEBM(8, [1, 4, 8], [3, 3], [1, 1], [1, 1], "mm", [10], seed=0)


def test_default_gdu_settings_pass_and_report_convergence(tmp_path):
    import json

    r = np.random.default_rng(3)
    net = _small_default_net()
    x, y = r.uniform(0, 1, (16, 1, 8, 8)), r.integers(0, 10, 16)
    summary = gdu_check(net, x, y, out_dir=str(tmp_path))  # GDU_DEFAULTS: beta 1e-4, free phase to tol, float64
    assert summary["passed"] and summary["verdict"] == "PASSED", summary["message"]
    assert summary["message"].startswith("GDU check PASSED: EP matches BPTT")
    assert "<= 0.1" in summary["message"] and ">= 0.9" in summary["message"]
    assert summary["free_phase"]["converged"] and summary["free_phase"]["last_state_change"] < summary["tol"]
    assert f"converged in {summary['free_phase']['steps']} steps" in summary["message"]
    assert summary["settings"]["beta"] == GDU_DEFAULTS["beta"] and summary["settings"]["dtype"] == "float64"
    assert net.dtype == np.float32 and net.params[0][0].dtype == np.float32  # the check ran on a copy
    saved = json.loads((tmp_path / "gdu.json").read_text())
    assert saved["verdict"] == "PASSED" and saved["settings"]["T2"] == GDU_DEFAULTS["T2"]


def test_unconverged_free_phase_fails_naming_the_convergence():
    r = np.random.default_rng(3)
    net = _small_default_net()
    x, y = r.uniform(0, 1, (16, 1, 8, 8)), r.integers(0, 10, 16)
    summary = gdu_check(net, x, y, T1=3, T2=3)
    assert not summary["passed"] and summary["verdict"] == "FAILED"
    assert not summary["free_phase"]["converged"] and summary["free_phase"]["steps"] == 3
    assert summary["message"].startswith("GDU check FAILED")
    assert "free phase not converged" in summary["reason"] and "increase T1" in summary["reason"]


def test_gducheck_command_uses_its_own_defaults_and_exit_status(tmp_path, capsys):
    import json

    from sparsecoding.eqprop.cli import main

    common = ["--todo", "gducheck", "--channels", "4", "8", "--mbs", "8"]
    # training defaults of --T1/--T2/--betas (40, 12, 0 0.5) are replaced by the check's own
    assert main(common + ["--save-dir", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "GDU check PASSED" in out and "beta 0.0001" in out
    saved = json.loads((tmp_path / "a" / "gdu.json").read_text())
    assert saved["passed"] and saved["settings"]["beta"] == 1e-4 and saved["free_phase"]["converged"]
    # a typed --T1 is the most free steps: too few gives FAILED, the reason, and exit status 1
    assert main(common + ["--T1", "3", "--save-dir", str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert "GDU check FAILED" in out and "free phase not converged" in out
    assert json.loads((tmp_path / "b" / "gdu.json").read_text())["verdict"] == "FAILED"
