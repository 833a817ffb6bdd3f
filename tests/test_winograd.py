"""Winograd F(2x2, 3x3) / F(4x4, 3x3) against the direct convolution in float64, the fused max
pool against pooling the direct result, and the per-machine autotune cache."""
import json
import os

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sparsecoding.ops import autotune
from sparsecoding.ops.conv import ConvOperator
from sparsecoding.ops.engines.winograd import winograd_matrices

from test_conv import ref_conv, ref_conv_transpose

EPS32 = float(np.finfo(np.float32).eps)


def kappa(m, r=3):
    """Error constant of F(m x m, 3 x 3) relative to ``eps * max(|x| * |w|)`` (the largest absolute
    sum of one output map, a normwise bound: an output tile is a signed combination of its whole
    input tile, so a small output next to large ones carries their rounding): the product of the
    transforms' infinity norms, squared for two dimensions."""
    BT, G, AT = winograd_matrices(m, r)
    norm = lambda a: float(np.max(np.abs(a).sum(axis=1)))  # noqa: E731
    return (norm(BT) * norm(G) * norm(AT)) ** 2


def _normwise(scale):
    """The largest absolute sum per (sample, channel) map, broadcast over its positions."""
    return scale.max(axis=(2, 3), keepdims=True) + 1e-30


@st.composite
def problems(draw):
    n, c, k = draw(st.integers(1, 3)), draw(st.integers(1, 12)), draw(st.integers(1, 9))
    r, m = draw(st.sampled_from([(3, 2), (3, 4), (5, 2)]))
    p = draw(st.integers(0, r - 1))
    h = draw(st.integers(max(1, r - 2 * p), 13))
    w = draw(st.integers(max(1, r - 2 * p), 13))
    return n, c, k, h, w, p, r, m, draw(st.integers(0, 2**31))


def _op(w, shape, p, m, layout, adjoint_im2col=False):
    name = f"winograd{m}" + ("+im2col" if adjoint_im2col else "")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARSECODING_CONV_ENGINE", name)
        op = ConvOperator(w, shape, 1, p, method="winograd", layout=layout)
    assert op.engine == f"{name}-native"
    return op


# fixed examples large enough for interior tiles (the unrolled path) beside border tiles, every tile size
@example(prob=(2, 5, 4, 17, 19, 1, 3, 2, 7), layout="channels_last", hybrid=False)
@example(prob=(2, 5, 4, 19, 17, 0, 3, 4, 8), layout="channels_last", hybrid=False)
@example(prob=(1, 3, 6, 18, 18, 2, 5, 2, 9), layout="channels_first", hybrid=False)
@example(prob=(1, 3, 6, 18, 18, 1, 5, 2, 9), layout="channels_last", hybrid=True)
@given(prob=problems(), layout=st.sampled_from(["channels_first", "channels_last"]), hybrid=st.booleans())
def test_winograd_equals_direct_convolution(prob, layout, hybrid):
    # (hybrid: the Winograd forward with the im2col adjoint, "winograd<m>+im2col")
    n, c, k, h, w_, p, ks, m, seed = prob
    r = np.random.default_rng(seed)
    x, w = r.standard_normal((n, c, h, w_)), r.standard_normal((k, c, ks, ks))
    op = _op(w.astype(np.float32), (h, w_), p, m, layout, hybrid)
    ref = ref_conv(x, w, (1, 1), (p, p))
    y = r.standard_normal(ref.shape)
    ref_t = ref_conv_transpose(y, w, (1, 1), (p, p), (0, 0))
    to = (lambda a: np.moveaxis(a, 1, -1)) if layout == "channels_last" else (lambda a: a)
    back = (lambda a: np.moveaxis(a, -1, 1)) if layout == "channels_last" else (lambda a: a)
    got = back(op.forward(np.ascontiguousarray(to(x)).astype(np.float32)))
    got_t = back(op.adjoint(np.ascontiguousarray(to(y)).astype(np.float32)))
    bound = kappa(m, ks) * EPS32 * _normwise(ref_conv(np.abs(x), np.abs(w), (1, 1), (p, p)))
    bound_t = kappa(m, ks) * EPS32 * _normwise(ref_conv_transpose(np.abs(y), np.abs(w), (1, 1), (p, p), (0, 0)))
    assert got.dtype == np.float32 and got.shape == ref.shape and got_t.shape == ref_t.shape
    assert np.all(np.abs(got - ref) <= bound)
    assert np.all(np.abs(got_t - ref_t) <= bound_t)


@given(prob=problems(), data=st.data())
def test_winograd_cropped_output_equals_direct_convolution(prob, data):
    # out_shape (the leading block a floor pool reads): forward, adjoint of the cropped map (the codes
    # zero-extended) and the fused max pool, against the direct convolution cropped
    n, c, k, h, w_, p, ks, m, seed = prob
    r = np.random.default_rng(seed)
    x, w = r.standard_normal((n, c, h, w_)), r.standard_normal((k, c, ks, ks))
    full = ref_conv(x, w, (1, 1), (p, p))
    crop = (data.draw(st.integers(1, full.shape[2])), data.draw(st.integers(1, full.shape[3])))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARSECODING_CONV_ENGINE", f"winograd{m}")
        op = ConvOperator(w.astype(np.float32), (h, w_), 1, p, method="winograd", layout="channels_last",
                          out_shape=crop)
    ref = full[:, :, :crop[0], :crop[1]]
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1)).astype(np.float32)
    got = np.moveaxis(op.forward(xl), -1, 1)
    bound = kappa(m, ks) * EPS32 * _normwise(ref_conv(np.abs(x), np.abs(w), (1, 1), (p, p)))[:, :, :crop[0], :crop[1]]
    assert got.shape == ref.shape and np.all(np.abs(got - ref) <= bound)
    y = np.zeros(full.shape)
    y[:, :, :crop[0], :crop[1]] = r.standard_normal(ref.shape)
    ref_t = ref_conv_transpose(y, w, (1, 1), (p, p), (0, 0))
    got_t = np.moveaxis(op.adjoint(np.ascontiguousarray(np.moveaxis(y[:, :, :crop[0], :crop[1]], 1, -1))
                                   .astype(np.float32)), -1, 1)
    bound_t = kappa(m, ks) * EPS32 * _normwise(ref_conv_transpose(np.abs(y), np.abs(w), (1, 1), (p, p), (0, 0)))
    assert got_t.shape == ref_t.shape and np.all(np.abs(got_t - ref_t) <= bound_t)
    if min(crop) >= 2:
        pooled, _ = op.forward_maxpool(xl)
        ph, pw = crop[0] // 2, crop[1] // 2
        best = ref[:, :, :2 * ph, :2 * pw].reshape(n, k, ph, 2, pw, 2).max(axis=(3, 5))
        assert np.all(np.abs(np.moveaxis(pooled, -1, 1) - best) <= bound.max())


@example(prob=(2, 5, 4, 17, 19, 1, 3, 2, 7))
@example(prob=(2, 5, 4, 19, 17, 1, 3, 4, 8))
@example(prob=(1, 3, 6, 18, 18, 2, 5, 2, 9))
@given(prob=problems())
def test_fused_max_pool_equals_pooled_direct_convolution(prob):
    n, c, k, h, w_, p, ks, m, seed = prob
    r = np.random.default_rng(seed)
    x, w = r.standard_normal((n, c, h, w_)), r.standard_normal((k, c, ks, ks))
    ref = ref_conv(x, w, (1, 1), (p, p))
    oh, ow = ref.shape[2:]
    if oh < 2 or ow < 2:
        return
    op = _op(w.astype(np.float32), (h, w_), p, m, "channels_last")
    pooled, idx = op.forward_maxpool(np.ascontiguousarray(np.moveaxis(x, 1, -1)).astype(np.float32))
    ph, pw = oh // 2, ow // 2
    windows = ref[:, :, :2 * ph, :2 * pw].reshape(n, k, ph, 2, pw, 2)
    best = np.moveaxis(windows.max(axis=(3, 5)), 1, -1)
    bound = kappa(m, ks) * EPS32 * np.moveaxis(ref_conv(np.abs(x), np.abs(w), (1, 1), (p, p)), 1, -1).max() + 1e-30
    assert pooled.shape == (n, ph, pw, k) and idx.shape == (n, ph, pw, k)
    assert np.all(np.abs(pooled - best) <= bound)
    # each index points into its own window, at an element within the error of the maximum
    hh, ww = idx // ow, idx % ow
    qy, qx = np.arange(ph)[None, :, None, None], np.arange(pw)[None, None, :, None]
    assert np.all((hh // 2 == qy) & (ww // 2 == qx))
    at = np.moveaxis(ref, 1, -1).reshape(n, oh * ow, k)
    picked = np.take_along_axis(at, idx.reshape(n, -1, k), axis=1).reshape(best.shape)
    assert np.all(best - picked <= 2 * bound)


def test_winograd_refuses_other_geometries():
    w = np.ones((2, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="winograd"):
        ConvOperator(w, (8, 8), 2, 1, method="winograd")
    with pytest.raises(ValueError, match="winograd"):
        ConvOperator(np.ones((2, 2, 7, 7), np.float32), (8, 8), 1, 3, method="winograd")
    with pytest.raises(ValueError, match="winograd"):
        ConvOperator(np.ones((2, 2, 3, 3), np.float32), (8, 8), 1, 3, method="winograd")


# --------------------------------------------------------------------------- autotune cache
@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSECODING_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SPARSECODING_TUNE", raising=False)
    autotune.clear_memory()
    yield tmp_path / "cache"
    autotune.clear_memory()


def _counting(calls):
    def make(name, cost):
        def fn():
            calls[name] = calls.get(name, 0) + 1
            x = np.ones(cost)
            x.sum()
        return fn
    return {"slow": make("slow", 3_000_000), "fast": make("fast", 10)}


def test_autotune_writes_cache_outside_package_and_reads_it_back(cache):
    import sparsecoding

    calls = {}
    assert autotune.tuned("k1", _counting(calls), "slow") == "fast"
    path = cache / "tune.json"
    assert path.exists()
    pkg = os.path.dirname(os.path.abspath(sparsecoding.__file__))
    assert not os.path.abspath(path).startswith(pkg)
    data = json.loads(path.read_text())
    assert data[autotune.machine_signature()]["k1"]["choice"] == "fast"
    # an ordinary file (0666 less the umask), not a private temporary file's 0600
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    # a new process (memory cleared) reads the file and measures nothing
    autotune.clear_memory()
    calls.clear()
    assert autotune.tuned("k1", _counting(calls), "slow") == "fast"
    assert calls == {}
    # a stored choice for this machine is taken even when it is not the fastest now
    data[autotune.machine_signature()]["k1"]["choice"] = "slow"
    path.write_text(json.dumps(data))
    autotune.clear_memory()
    assert autotune.tuned("k1", _counting(calls), "fast") == "slow"


def test_autotune_margin_keeps_the_default_unless_clearly_beaten(cache):
    calls = {}
    # "fast" takes a tiny fraction of "slow"'s time: kept only within a margin larger than that gap
    assert autotune.tuned("m1", _counting(calls), "slow", margin=1e6) == "slow"
    assert autotune.tuned("m2", _counting(calls), "slow", margin=0.15) == "fast"
    entry = json.loads((cache / "tune.json").read_text())[autotune.machine_signature()]["m1"]
    assert entry["choice"] == "slow" and entry["seconds"]["fast"] < entry["seconds"]["slow"]


def test_autotune_off_and_refresh(cache, monkeypatch):
    calls = {}
    monkeypatch.setenv("SPARSECODING_TUNE", "off")
    assert autotune.tuned("k2", _counting(calls), "slow") == "slow"
    assert calls == {} and not (cache / "tune.json").exists()
    monkeypatch.setenv("SPARSECODING_TUNE", "on")
    assert autotune.tuned("k2", _counting(calls), "slow") == "fast"
    data = json.loads((cache / "tune.json").read_text())
    data[autotune.machine_signature()]["k2"]["choice"] = "slow"
    (cache / "tune.json").write_text(json.dumps(data))
    autotune.clear_memory()
    monkeypatch.setenv("SPARSECODING_TUNE", "refresh")
    calls.clear()
    assert autotune.tuned("k2", _counting(calls), "slow") == "fast"
    assert calls["fast"] >= 2 and calls["slow"] >= 2
    assert json.loads((cache / "tune.json").read_text())[autotune.machine_signature()]["k2"]["choice"] == "fast"
    monkeypatch.setenv("SPARSECODING_TUNE", "sometimes")
    with pytest.raises(ValueError, match="SPARSECODING_TUNE"):
        autotune.tuned("k2", _counting(calls), "slow")


def test_conv_engine_choice_is_tuned_cached_and_overridable(cache, monkeypatch):
    w = np.random.default_rng(0).standard_normal((64, 64, 3, 3)).astype(np.float32)
    monkeypatch.delenv("SPARSECODING_CONV_ENGINE", raising=False)
    op = ConvOperator(w, (16, 16), 1, 1, layout="channels_last")
    data = json.loads((cache / "tune.json").read_text())
    (entry,) = data[autotune.machine_signature()].values()
    assert op.engine.split("-")[0] == entry["choice"].split("@")[0]
    assert set(entry["seconds"]) >= {"im2col@1024K", "winograd2@1024K", "winograd4@1024K", "winograd2+im2col@1024K",
                                     "winograd4+im2col@1024K"}
    monkeypatch.setenv("SPARSECODING_CONV_ENGINE", "im2col")
    assert ConvOperator(w, (16, 16), 1, 1, layout="channels_last").engine == "im2col-native"
    monkeypatch.setenv("SPARSECODING_CONV_ENGINE", "winograd4")
    assert ConvOperator(w, (16, 16), 1, 1, layout="channels_last").engine == "winograd4-native"
    monkeypatch.setenv("SPARSECODING_CONV_ENGINE", "winograd2+im2col")
    assert ConvOperator(w, (16, 16), 1, 1, layout="channels_last").engine == "winograd2+im2col-native"
    monkeypatch.setenv("SPARSECODING_CONV_ENGINE", "fastest")
    with pytest.raises(ValueError, match="SPARSECODING_CONV_ENGINE"):
        ConvOperator(w, (16, 16), 1, 1, layout="channels_last")
