import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sparsecoding.backend import to_numpy
from sparsecoding.ops.elementwise import get_transfer, hard_threshold, nonneg_soft_threshold, soft_threshold

finite = st.floats(-10, 10, allow_nan=False)


@given(arrays(np.float64, st.integers(1, 30), elements=finite), st.floats(0, 5))
def test_soft_threshold_is_prox_of_l1(u, lam):
    # prox: argmin_a 1/2 (a - u)^2 + lam |a|, checked against a dense grid search per entry
    a = soft_threshold(u, lam)
    grid = np.linspace(-15, 15, 30001)
    obj = 0.5 * (grid[None, :] - u[:, None]) ** 2 + lam * np.abs(grid[None, :])
    np.testing.assert_allclose(a, grid[np.argmin(obj, axis=1)], atol=2e-3)


@given(arrays(np.float64, st.integers(1, 30), elements=finite), st.floats(0, 5))
def test_nonneg_soft_threshold_is_prox(u, lam):
    a = nonneg_soft_threshold(u, lam)
    grid = np.linspace(0, 15, 15001)
    obj = 0.5 * (grid[None, :] - u[:, None]) ** 2 + lam * grid[None, :]
    np.testing.assert_allclose(a, grid[np.argmin(obj, axis=1)], atol=2e-3)


def test_hard_threshold_keeps_or_kills(xp):
    u = xp.asarray([-2.0, -0.5, 0.0, 0.3, 1.5])
    np.testing.assert_array_equal(to_numpy(hard_threshold(u, 1.0)), [-2.0, 0, 0, 0, 1.5])
    np.testing.assert_array_equal(to_numpy(get_transfer("hard_threshold", True)(u, 1.0)), [0, 0, 0, 0, 1.5])
    np.testing.assert_array_equal(to_numpy(get_transfer("soft_threshold", False)(u, 1.0)), [-1.0, 0, 0, 0, 0.5])


def test_unknown_transfer_rejected():
    with pytest.raises(ValueError, match="transfer_func"):
        get_transfer("relu")
    f = lambda u, lam: u  # noqa: E731
    assert get_transfer(f) is f
