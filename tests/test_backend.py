import os
import subprocess
import sys

import numpy as np
import pytest

from sparsecoding import backend
from sparsecoding.backend import BackendUnavailable, asarray, capabilities, get_xp, to_numpy, use_backend


def test_get_xp_follows_arrays(xp):
    a = xp.zeros(3)
    assert get_xp(a) is xp
    assert get_xp(np.zeros(2), a) is xp


def test_default_backend_is_numpy_without_arrays():
    assert get_xp() is np
    assert backend.get_backend() == "numpy"


def test_to_numpy_and_asarray_roundtrip(xp):
    a = xp.arange(6, dtype=xp.float32).reshape(2, 3)
    host = to_numpy(a)
    assert isinstance(host, np.ndarray)
    np.testing.assert_array_equal(host, np.arange(6).reshape(2, 3))
    b = asarray(host, backend="numpy", dtype=np.float64)
    assert b.dtype == np.float64


def test_unknown_backend_name_is_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        backend.set_backend("tensorflow")


def test_cupy_unavailable_raises_clear_error():
    if backend.cupy_available():
        pytest.skip("a GPU is visible here; the unavailable path cannot be exercised")
    with pytest.raises(BackendUnavailable, match="cupy"):
        with use_backend("cupy"):
            pass
    assert backend.get_backend() == "numpy"  # restored / untouched


def test_env_var_selects_default_backend():
    code = "import sparsecoding.backend as b; print(b.get_backend())"
    env = dict(os.environ, SPARSECODING_BACKEND="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "numpy"
    env["SPARSECODING_BACKEND"] = "nonsense"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "backend must be one of" in bad.stderr


def test_capability_table(xp):
    caps = capabilities(xp)
    x = xp.arange(8.0)
    X = caps.fft.rfftn(x, **caps.fft_kwargs)
    np.testing.assert_allclose(to_numpy(caps.fft.irfftn(X, s=(8,), **caps.fft_kwargs)), np.arange(8.0), atol=1e-12)
    w = caps.sliding_window_view(x, 3)
    assert w.shape == (6, 3)
    t = xp.zeros(3)
    caps.scatter_add(t, xp.asarray([0, 0, 2]), xp.asarray([1.0, 2.0, 5.0]))
    np.testing.assert_array_equal(to_numpy(t), [3.0, 0.0, 5.0])


def test_engine_family_from_environment_and_context(monkeypatch):
    # SPARSECODING_ENGINES=generic runs numpy arrays through the generic (cupy) engines; use_engines wins
    monkeypatch.delenv("SPARSECODING_ENGINES", raising=False)
    caps = capabilities(np)
    assert caps.engines == "native" and caps.numba and caps.conv_layout == "channels_last"
    monkeypatch.setenv("SPARSECODING_ENGINES", "Generic")
    assert capabilities(np).engines == "generic" and not capabilities(np).numba
    with backend.use_engines("native"):
        assert capabilities(np).engines == "native"
    assert capabilities(np).conv_layout == "channels_first"
    monkeypatch.setenv("SPARSECODING_ENGINES", "cuda")
    with pytest.raises(ValueError, match="SPARSECODING_ENGINES"):
        capabilities(np)
    with pytest.raises(ValueError, match="engine family must be one of"):
        backend.use_engines("numba").__enter__()
