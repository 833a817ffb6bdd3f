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
