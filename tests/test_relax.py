"""The relaxation runner: one stopping rule, one divergence check, no host reads between checks."""
import numpy as np
import pytest

from sparsecoding.solvers.relax import RelaxResult, relative_change, relax


def contraction(target, rate=0.5):
    # s <- target + rate (s - target): a fixed point at target, relative change ~ rate^t
    return lambda s: target + rate * (s - target)


def test_runs_all_steps_without_tol():
    calls = []
    res = relax(lambda s: s + 1, np.zeros(3), 7, callbacks=[lambda t, s: calls.append(t)])
    assert isinstance(res, RelaxResult) and res.n_iter == 7 and not res.converged
    np.testing.assert_array_equal(res.state, 7)
    assert calls == list(range(1, 8))
    assert res.history == []  # check_every=10 > n_iter: no check happened


def test_stops_at_the_first_check_below_tol_and_matches_closed_form():
    target = np.array([1.0, -2.0, 4.0])
    res = relax(contraction(target), np.zeros(3), 1000, tol=1e-6, check_every=3)
    # closed form: s_t = target (1 - 0.5^t); relative change at step t = 0.5^t * 4 / max|s_t|
    t = res.n_iter
    assert res.converged and t % 3 == 0
    np.testing.assert_allclose(res.state, target * (1 - 0.5**t), rtol=1e-12)
    expect = [(k, 0.5**k * 4 / (4 * (1 - 0.5**k))) for k in range(3, t + 1, 3)]
    np.testing.assert_allclose([v for _, v in res.history], [v for _, v in expect], rtol=1e-9)
    assert [k for k, _ in res.history] == [k for k, _ in expect]
    assert res.history[-1][1] <= 1e-6 < res.history[-2][1]


def test_list_states_and_custom_monitor():
    state = [np.ones(2), np.full(3, 2.0)]
    res = relax(lambda s: [0.5 * a for a in s], state, 50, tol=0.1, check_every=1,
                monitor=lambda s, prev: sum(a.sum() for a in s))
    # monitor after t steps = 8 * 0.5^t <= 0.1 first at t = 7
    assert res.converged and res.n_iter == 7


def test_divergence_raises_naming_the_step():
    # 1e40 per step overflows float64 at step 8; the check at step 10 sees it
    with np.errstate(over="ignore", invalid="ignore"), \
            pytest.raises(FloatingPointError, match="the test run diverged at step 10"):
        relax(lambda s: s * 1e40, np.ones(2), 100, check_every=10, what="the test run")


@pytest.mark.parametrize("kw,match", [({"n_iter": -1}, "n_iter"), ({"n_iter": 2.5}, "n_iter"),
                                      ({"check_every": 0}, "check_every"), ({"tol": -1.0}, "tol"),
                                      ({"tol": float("nan")}, "tol"), ({"tol": "x"}, "tol")])
def test_bad_options(kw, match):
    opts = {"n_iter": 5} | kw
    n_iter = opts.pop("n_iter")
    with pytest.raises(ValueError, match=match):
        relax(lambda s: s, np.zeros(1), n_iter, **opts)


def test_relative_change_of_list_state():
    new = [np.array([1.0, 2.0]), np.array([[4.0]])]
    old = [np.array([1.0, 1.0]), np.array([[3.5]])]
    assert float(relative_change(new, old)) == pytest.approx(1.0 / 4.0)
    assert float(relative_change([np.zeros(0)], [np.zeros(0)])) == 0.0


def test_one_host_read_per_check(host_reads):
    guard, reads = host_reads
    target = guard(np.linspace(1, 2, 5))
    for n_iter in (20, 40):
        before = reads()
        res = relax(contraction(target, 0.99), guard(np.zeros(5)), n_iter, tol=1e-12, check_every=5)
        assert res.n_iter == n_iter
        assert reads() - before == n_iter // 5  # the monitored value, once per check, nothing else
