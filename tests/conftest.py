"""Shared fixtures: the backend parametrisation and hypothesis profiles.

``xp`` runs a test on every available backend; the cupy case skips with the
reason where no GPU is visible. Hypothesis profiles: ``ci`` (default, fast)
and ``thorough`` (``HYPOTHESIS_PROFILE=thorough``).
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from sparsecoding.backend import BackendUnavailable, _load_cupy

settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile(
    "thorough", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _cupy_or_reason():
    try:
        return _load_cupy(), None
    except BackendUnavailable as exc:
        return None, str(exc)


@pytest.fixture(params=["numpy", "cupy"], scope="session")
def xp(request):
    """The array namespace under test (numpy, and cupy where a GPU is visible)."""
    if request.param == "numpy":
        return np
    cp, reason = _cupy_or_reason()
    if cp is None:
        pytest.skip(f"cupy backend not testable here: {reason}")
    return cp


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def central_difference(f, x, eps=1e-6):
    """Central-difference gradient of the scalar function ``f`` at the array ``x`` (float64 reference)."""
    g = np.zeros_like(x, dtype=np.float64)
    for idx in np.ndindex(x.shape):
        xp_, xm_ = x.copy(), x.copy()
        xp_[idx] += eps
        xm_[idx] -= eps
        g[idx] = (f(xp_) - f(xm_)) / (2 * eps)
    return g
