import numpy as np
import pytest

from sparsecoding.optim import SGD, Adam, cosine_lr


def test_sgd_momentum_matches_closed_form_recurrence():
    p = np.array([1.0, -2.0])
    opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    ref_p, v = p.copy(), np.zeros(2)
    for g in [np.array([0.5, 0.1]), np.array([-0.2, 0.3]), np.array([0.0, 1.0])]:
        opt.step([g])
        gg = g + 0.01 * ref_p
        v = 0.9 * v + gg
        ref_p = ref_p - 0.1 * v
    np.testing.assert_allclose(p, ref_p)


def test_adam_minimises_quadratic_and_layerwise_lr():
    a, b = np.array([3.0]), np.array([-4.0])
    opt = Adam([a, b], lr=[0.1, 0.0])
    for _ in range(500):
        opt.step([2 * a, 2 * b])
    assert abs(a[0]) < 1e-2 and b[0] == -4.0


def test_state_roundtrip_and_errors():
    p = np.ones(3)
    opt = SGD([p], lr=0.1, momentum=0.5)
    opt.step([np.ones(3)])
    state = opt.state_dict()
    q = np.ones(3)
    opt2 = SGD([q], lr=0.1, momentum=0.5)
    opt2.load_state_dict(state)
    np.testing.assert_array_equal(opt2.velocity[0], opt.velocity[0])
    with pytest.raises(ValueError, match="shape"):
        opt.step([np.ones(4)])
    with pytest.raises(ValueError, match="one value per parameter"):
        SGD([p, q], lr=[0.1])
    assert cosine_lr(0, 10) == 1.0 and abs(cosine_lr(10, 10)) < 1e-12


def test_named_params_give_the_same_steps_as_a_list_and_name_errors():
    a, b = np.array([3.0, 1.0]), np.array([-4.0])
    a2, b2 = a.copy(), b.copy()
    by_list = Adam([a, b], lr=[0.1, 0.05], weight_decay=[0.0, 0.01])
    by_name = Adam({"w": a2, "bias": b2}, lr={"bias": 0.05, "w": 0.1}, weight_decay={"w": 0.0, "bias": 0.01})
    assert by_name.names == ["w", "bias"] and by_name.param_dict() == {"w": a2, "bias": b2}
    assert list(by_list.param_dict()) == ["0", "1"]
    for _ in range(3):
        by_list.step([2 * a, 2 * b])
        by_name.step({"bias": 2 * b2, "w": 2 * a2})  # gradients by name, any order
    np.testing.assert_array_equal(a2, a)
    np.testing.assert_array_equal(b2, b)
    with pytest.raises(ValueError, match=r"missing \['bias'\]; unknown \['x'\]"):
        by_name.step({"w": a2, "x": b2})
    with pytest.raises(ValueError, match=r"parameter 1 \(bias\) of shape \(1,\) has shape \(2,\)"):
        by_name.step([a2, a2])
    with pytest.raises(ValueError, match="no names"):
        by_list.step({"0": a, "1": b})
    with pytest.raises(ValueError, match="not both"):
        SGD({"w": a}, lr=0.1, names=["w"])
    with pytest.raises(ValueError, match=r"unique, got \['w'\]"):
        SGD([a, b], lr=0.1, names=["w", "w"])
    with pytest.raises(ValueError, match=r"lr\['bias'\] must be"):
        SGD({"w": a, "bias": b}, lr={"w": 0.1, "bias": -1})
    with pytest.raises(ValueError, match="lr is given by name"):
        SGD([a], lr={"w": 0.1})


def test_named_state_loads_by_name_and_positional_state_by_position():
    a, b = np.ones(2), np.ones(3)
    opt = SGD({"a": a, "b": b}, lr={"a": 0.1, "b": 0.2}, momentum=0.5)
    opt.step({"a": np.full(2, 1.0), "b": np.full(3, 2.0)})
    state = opt.state_dict()
    assert state["names"] == ["a", "b"]
    other = SGD({"b": np.ones(3), "a": np.ones(2)}, lr=0.0, momentum=0.5)  # another order
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.velocity[0], opt.velocity[1])
    np.testing.assert_array_equal(other.velocity[1], opt.velocity[0])
    assert other.lr == [0.2, 0.1] and other.t == 1
    with pytest.raises(ValueError, match=r"holds the parameters \['a', 'b'\]"):
        SGD({"a": np.ones(2), "c": np.ones(3)}, lr=0.1, momentum=0.5).load_state_dict(state)
    plain = SGD([np.ones(2), np.ones(3)], lr=0.1, momentum=0.5)  # unnamed: by position
    plain.load_state_dict(state)
    np.testing.assert_array_equal(plain.velocity[1], opt.velocity[1])
