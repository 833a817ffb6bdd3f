"""conv / conv_transpose against explicit sums written here (PyTorch's definitions)."""
import importlib
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparsecoding.backend import to_numpy
from sparsecoding.ops.conv import ConvOperator, conv, conv_output_shape, conv_transpose


def ref_conv(x, w, stride, pad):
    """y[n,k,o] = sum_{c,j} xpad[n,c,o*s+j] w[k,c,j], one output position at a time."""
    d = w.ndim - 2
    xpadded = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    out = [(L + 2 * p - k) // s + 1 for L, p, k, s in zip(x.shape[2:], pad, w.shape[2:], stride)]
    y = np.zeros((x.shape[0], w.shape[0], *out))
    for o in itertools.product(*(range(v) for v in out)):
        patch = xpadded[(slice(None), slice(None), *(slice(oi * s, oi * s + k) for oi, s, k in zip(o, stride, w.shape[2:])))]
        y[(slice(None), slice(None), *o)] = np.tensordot(patch, w, axes=(list(range(1, d + 2)), list(range(1, d + 2))))
    return y


def ref_conv_transpose(y, w, stride, pad, opad):
    """Scatter each input position's kernel copy into a padded buffer, then crop (PyTorch's definition)."""
    O = y.shape[2:]
    k = w.shape[2:]
    full = [(o - 1) * s + kk + op for o, s, kk, op in zip(O, stride, k, opad)]
    buf = np.zeros((y.shape[0], w.shape[1], *full))
    for o in itertools.product(*(range(v) for v in O)):
        sl = tuple(slice(oi * s, oi * s + kk) for oi, s, kk in zip(o, stride, k))
        buf[(slice(None), slice(None), *sl)] += np.tensordot(y[(slice(None), slice(None), *o)], w, axes=(1, 0))
    crop = tuple(slice(p, f - p) for p, f in zip(pad, full))
    return buf[(slice(None), slice(None), *crop)]


@st.composite
def conv_problems(draw, max_dims=3):
    d = draw(st.integers(1, max_dims))
    kmax = {1: 6, 2: 4, 3: 3}[d]
    kernel = tuple(draw(st.integers(1, kmax)) for _ in range(d))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(d))
    pad = tuple(draw(st.integers(0, k)) for k in kernel)
    lmax = {1: 20, 2: 9, 3: 6}[d]
    shape = tuple(draw(st.integers(max(1, k - 2 * p), max(lmax, k))) for k, p in zip(kernel, pad))
    n, c, kk = draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31))
    return d, kernel, stride, pad, shape, n, c, kk, seed


def _arrays(xp, prob, dtype):
    d, kernel, stride, pad, shape, n, c, kk, seed = prob
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, c, *shape))
    w = r.standard_normal((kk, c, *kernel))
    return x, w, xp.asarray(x, dtype=dtype), xp.asarray(w, dtype=dtype)


TOL = {np.float64: 1e-10, np.float32: 2e-4}


@pytest.mark.parametrize("method", ["im2col", "fft"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(prob=conv_problems())
def test_conv_matches_direct_sum(xp, engines, method, dtype, prob):
    d, kernel, stride, pad, shape, *_ = prob
    x, w, xd, wd = _arrays(xp, prob, dtype)
    y = conv(xd, wd, stride, pad, method=method)
    assert y.dtype == dtype
    ref = ref_conv(x, w, stride, pad)
    scale = np.abs(ref).max() + 1
    np.testing.assert_allclose(to_numpy(y), ref, atol=TOL[dtype] * scale * 10, rtol=0)


@pytest.mark.parametrize("method", ["im2col", "fft"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(prob=conv_problems(), data=st.data())
def test_conv_transpose_matches_scatter_definition(xp, engines, method, dtype, prob, data):
    d, kernel, stride, pad, shape, n, c, kk, seed = prob
    out = conv_output_shape(shape, kernel, stride, pad)
    opad = tuple(data.draw(st.integers(0, s - 1)) for s in stride)
    if any((o - 1) * s + k + op - 2 * p < 1 for o, s, k, op, p in zip(out, stride, kernel, opad, pad)):
        opad = tuple(0 for _ in stride)
    r = np.random.default_rng(seed + 1)
    y = r.standard_normal((n, kk, *out))
    w = r.standard_normal((kk, c, *kernel))
    if any((o - 1) * s + k + op - 2 * p < 1 for o, s, k, op, p in zip(out, stride, kernel, opad, pad)):
        with pytest.raises(ValueError, match="empty"):
            conv_transpose(xp.asarray(y), xp.asarray(w), stride, pad, opad, method=method)
        return
    got = conv_transpose(xp.asarray(y, dtype=dtype), xp.asarray(w, dtype=dtype), stride, pad, opad, method=method)
    ref = ref_conv_transpose(y, w, stride, pad, opad)
    assert got.shape == ref.shape
    np.testing.assert_allclose(to_numpy(got), ref, atol=TOL[dtype] * (np.abs(ref).max() + 1) * 10, rtol=0)


@pytest.mark.parametrize("method", ["im2col", "fft"])
@given(prob=conv_problems())
def test_adjoint_dot_product(xp, engines, method, prob):
    d, kernel, stride, pad, shape, n, c, kk, seed = prob
    _, _, xd, wd = _arrays(xp, prob, np.float64)
    op = ConvOperator(wd, shape, stride, pad, method=method)
    y = xp.asarray(np.random.default_rng(seed + 7).standard_normal((n, kk, *op.geometry.out_shape)))
    lhs = float(xp.sum(op.forward(xd) * y))
    rhs = float(xp.sum(xd * op.adjoint(y)))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs), float(xp.sum(xp.abs(xd))))


@given(prob=conv_problems())
def test_im2col_equals_fft(xp, engines, prob):
    d, kernel, stride, pad, shape, *_ = prob
    _, _, xd, wd = _arrays(xp, prob, np.float64)
    a = conv(xd, wd, stride, pad, method="im2col")
    b = conv(xd, wd, stride, pad, method="fft")
    np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-10 * (float(xp.abs(a).max()) + 1))


def test_same_padding_keeps_size_at_stride_one(xp):
    x = xp.ones((2, 3, 10, 7))
    w = xp.ones((5, 3, 3, 5))
    assert conv(x, w, padding="same").shape == (2, 5, 10, 7)
    assert conv(x, w, stride=2, padding="same").shape == (2, 5, 5, 4)
    assert conv(x, w, padding="valid").shape == (2, 5, 8, 3)


def test_auto_method_matches_explicit(xp, engines):
    r = np.random.default_rng(0)
    x = xp.asarray(r.standard_normal((2, 3, 16, 16)))
    for k, s in [(3, 1), (9, 2), (9, 1)]:
        w = xp.asarray(r.standard_normal((4, 3, k, k)))
        ref = ref_conv(to_numpy(x), to_numpy(w), (s, s), ((k - 1) // 2,) * 2)
        np.testing.assert_allclose(to_numpy(conv(x, w, s, "same")), ref, atol=1e-9)


@pytest.mark.parametrize(
    "xshape, wshape, kwargs, match",
    [
        ((2, 3, 8), (4, 3, 3, 3), {}, "spatial dims"),
        ((2, 2, 8, 8), (4, 3, 3, 3), {}, "channel mismatch"),
        ((2, 3, 8, 8), (4, 3, 4, 4), {"padding": "same"}, "odd kernel"),
        ((2, 3, 8, 8), (4, 3, 3, 3), {"stride": 0}, "stride"),
        ((2, 3, 8, 8), (4, 3, 3, 3), {"padding": "full"}, "padding must be"),
        ((2, 3, 8, 8), (4, 3, 3, 3), {"method": "direct"}, "method must be"),
        ((2, 3, 2, 2), (4, 3, 5, 5), {}, "smaller than the kernel"),
        ((2, 3, 8, 8), (3, 8), {}, "w must have shape"),
    ],
)
def test_bad_input_raises_clear_error(xshape, wshape, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        conv(np.zeros(xshape), np.zeros(wshape), **kwargs)


def test_non_finite_input_detected_when_asked():
    x = np.zeros((1, 1, 5))
    x[0, 0, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        conv(x, np.ones((1, 1, 3)), check_finite=True)
    with pytest.raises(ValueError, match="output_padding"):
        conv_transpose(np.zeros((1, 1, 3)), np.ones((1, 1, 3)), stride=2, output_padding=2)
    with pytest.raises(ValueError, match="channel mismatch"):
        conv_transpose(np.zeros((1, 2, 3)), np.ones((1, 1, 3)))


@pytest.mark.parametrize("method", ["im2col", "fft"])
@given(prob=conv_problems(max_dims=2))
def test_channels_last_layout_and_weight_gradient(xp, engines, method, prob):
    # channels-first inputs with channels-last codes (the solvers' layout) against channels-first codes
    d, kernel, stride, pad, shape, n, c, kk, seed = prob
    x, w, xd, wd = _arrays(xp, prob, np.float64)
    op = ConvOperator(wd, shape, stride, pad, method=method)
    opc = ConvOperator(wd, shape, stride, pad, method=method, code_layout="channels_last")
    y = op.forward(xd)
    np.testing.assert_allclose(to_numpy(opc.forward(xd)), np.moveaxis(to_numpy(y), 1, -1), atol=1e-10)
    yy = xp.asarray(np.random.default_rng(seed + 5).standard_normal(y.shape))
    cl = xp.ascontiguousarray(xp.moveaxis(yy, 1, -1))
    np.testing.assert_allclose(to_numpy(opc.adjoint(cl)), to_numpy(op.adjoint(yy)), atol=1e-10)
    np.testing.assert_allclose(to_numpy(opc.weight_grad(xd, cl)), to_numpy(op.weight_grad(xd, yy)), atol=1e-9)
    # weight gradient: <conv(x, w), y> is linear in w, so it equals <w, weight_grad(x, y)>
    lhs = float(xp.sum(y * yy))
    rhs = float(xp.sum(wd * op.weight_grad(xd, yy)))
    assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs))


@pytest.mark.parametrize("method", ["im2col", "fft"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(prob=conv_problems(), chunk=st.sampled_from([None, 64]))
def test_channels_last_operator_matches_direct_sums(xp, engines, method, dtype, prob, chunk):
    # layout="channels_last": x (N, *L, C) -> y (N, *O, K) and back, against the explicit sums;
    # chunk=64 bytes forces the batch to be processed a sample pair at a time (numba engine)
    conv_module = importlib.import_module("sparsecoding.ops.engines.im2col_numba")

    saved = conv_module.CHUNK_BYTES
    conv_module.CHUNK_BYTES = chunk or saved
    try:
        _check_channels_last(xp, method, dtype, prob)
    finally:
        conv_module.CHUNK_BYTES = saved


@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(prob=conv_problems(), chunk=st.sampled_from([64, 1 << 20]), threads=st.sampled_from(["1", "2", "3"]))
def test_channels_last_per_core_split_and_whole_batch_match_direct_sums(split, dtype, prob, chunk, threads,
                                                                       monkeypatch):
    # the channels-last im2col per core (the default: each worker its own samples, in chunks of one sample
    # (64 bytes) or several, with 1-3 workers) and over the whole batch (BLAS threads, chunks of the batch)
    from sparsecoding.ops.engines.im2col_numba import Im2colNumba

    def tweak(op):
        assert isinstance(op._engine, Im2colNumba)
        op._engine.split_cl, op._engine.chunk_bytes = split, chunk

    with monkeypatch.context() as mp:
        mp.setenv("SPARSECODING_THREADS", threads)
        _check_channels_last(np, "im2col", dtype, prob, tweak=tweak)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(prob=conv_problems(), chunk=st.sampled_from([64, 1 << 20]), threads=st.sampled_from(["1", "2", "3"]))
def test_channels_first_per_core_split_matches_direct_sums(dtype, prob, chunk, threads, monkeypatch):
    # the channels-first im2col per core (the autotune's "split@" candidates: each worker gathers its own
    # samples' columns by runs and multiplies them), forward and adjoint, against the explicit sums
    from sparsecoding.ops.engines.im2col_numba import Im2colNumba

    d, kernel, stride, pad, shape, n, c, kk, seed = prob
    x, w, xd, wd = _arrays(np, prob, dtype)
    op = ConvOperator(wd, shape, stride, pad, method="im2col")
    assert isinstance(op._engine, Im2colNumba)
    op._engine.split_cf, op._engine.chunk_bytes = True, chunk
    tol = TOL[dtype]
    with monkeypatch.context() as mp:
        mp.setenv("SPARSECODING_THREADS", threads)
        y = op.forward(xd)
        ref = ref_conv(x, w, stride, pad)
        np.testing.assert_allclose(y, ref, atol=tol * 10 * (1 + np.abs(ref).max()), rtol=0)
        v = np.random.default_rng(seed + 5).standard_normal(ref.shape)
        opad = [L - ((o - 1) * s_ - 2 * p + k) for L, o, s_, p, k in zip(shape, ref.shape[2:], stride, pad, kernel)]
        refT = ref_conv_transpose(v, w, stride, pad, opad)
        np.testing.assert_allclose(op.adjoint(v.astype(dtype)), refT, atol=tol * 10 * (1 + np.abs(refT).max()),
                                   rtol=0)


@given(prob=conv_problems(), dtype=st.sampled_from([np.float32, np.float64]))
def test_run_kernels_match_fancy_indexing(prob, dtype):
    # the per-core gather / scatter by runs of the last kernel dimension against numpy's indexing of the
    # window table: im2col, col2im (np.add.at) and the masked residual s - col2im
    from sparsecoding.ops import _kernels as K

    d, kernel, stride, pad, shape, n, c, kk, seed = prob
    out_shape = conv_output_shape(shape, kernel, stride, pad)
    buffer = tuple((o - 1) * s_ + k for o, s_, k in zip(out_shape, stride, kernel))
    idx = K.window_index(buffer, kernel, stride, out_shape)
    runs, width = K.window_runs(idx, kernel[-1])
    assert len(width) == kernel[-1]
    r = np.random.default_rng(seed)
    m, nj = idx.shape
    src = r.standard_normal((n, c, idx.max() + 1)).astype(dtype)
    cols = np.empty((n, m, c, nj), dtype)
    K.gather_runs_1t(src, runs, width, cols)
    np.testing.assert_array_equal(cols, np.moveaxis(src[:, :, idx], 2, 1))
    vals = r.standard_normal((n, m, c, nj)).astype(dtype)
    ref = np.zeros((n, c, src.shape[2]))
    np.add.at(ref, (slice(None), slice(None), idx), np.moveaxis(vals, 1, 2).astype(np.float64))
    out = np.zeros_like(src)
    K.scatter_add_runs_1t(vals, runs, width, out)
    np.testing.assert_allclose(out, ref, rtol=0, atol=TOL[dtype] * (1 + np.abs(ref).max()))
    mask = (r.random(src.shape[2]) < 0.7).astype(dtype)
    resid = np.full_like(src, np.nan)
    K.scatter_residual_runs_1t(vals, runs, width, src, mask, resid)
    np.testing.assert_allclose(resid, (src - ref) * mask, rtol=0, atol=TOL[dtype] * (1 + np.abs(ref).max()))


@pytest.mark.parametrize("method", ["im2col", "fft"])
@pytest.mark.parametrize("layouts", [("channels_first", "channels_first"), ("channels_first", "channels_last"),
                                     ("channels_last", "channels_last")])
@given(prob=conv_problems(), data=st.data())
def test_cropped_output_matches_direct_sums(xp, engines, method, layouts, prob, data):
    # out_shape keeps a leading block of the output positions: forward = the direct sums cropped, adjoint =
    # conv_transpose of the codes zero-extended to the full output, weight_grad and (channels-first inputs,
    # channels-last codes: the fused per-core path) forward_residual against the same references
    d, kernel, stride, pad, shape, n, c, kk, seed = prob
    full = conv_output_shape(shape, kernel, stride, pad)
    crop = tuple(data.draw(st.integers(1, o), label="crop") for o in full)
    x, w, xd, wd = _arrays(xp, prob, np.float64)
    layout, code_layout = layouts
    op = ConvOperator(wd, shape, stride, pad, method=method, layout=layout, code_layout=code_layout, out_shape=crop)
    block = (slice(None), slice(None), *(slice(0, o) for o in crop))
    ref = ref_conv(x, w, stride, pad)[block]
    x_in = (lambda a: xp.ascontiguousarray(xp.moveaxis(a, 1, -1))) if layout == "channels_last" else (lambda a: a)
    code_in = (lambda a: np.ascontiguousarray(np.moveaxis(a, 1, -1))) if code_layout == "channels_last" else \
        (lambda a: a)
    code_out = (lambda a: np.moveaxis(a, -1, 1)) if code_layout == "channels_last" else (lambda a: a)
    x_out = (lambda a: np.moveaxis(a, -1, 1)) if layout == "channels_last" else (lambda a: a)
    tol = TOL[np.float64]
    assert op.geometry.out_shape == crop
    y = code_out(to_numpy(op.forward(x_in(xd))))
    np.testing.assert_allclose(y, ref, atol=tol * 10 * (1 + np.abs(ref).max()), rtol=0)
    v = np.random.default_rng(seed + 3).standard_normal(ref.shape)
    vfull = np.zeros((n, kk, *full))
    vfull[block] = v
    opad = [L - ((o - 1) * s_ - 2 * p + k) for L, o, s_, p, k in zip(shape, full, stride, pad, kernel)]
    ref_t = ref_conv_transpose(vfull, w, stride, pad, opad)
    got_t = x_out(to_numpy(op.adjoint(xp.asarray(code_in(v)))))
    np.testing.assert_allclose(got_t, ref_t, atol=tol * 10 * (1 + np.abs(ref_t).max()), rtol=0)
    dw = to_numpy(op.weight_grad(x_in(xd), xp.asarray(code_in(v))))
    assert abs(float(np.sum(ref * v)) - float(np.sum(w * dw))) <= tol * 100 * (1 + np.abs(ref * v).sum())
    if layout == "channels_first":
        plan = op.residual_plan(xd)
        c_out, resid = op.forward_residual(plan, xp.asarray(code_in(v)))
        r_ref = x - ref_t
        np.testing.assert_allclose(to_numpy(resid), r_ref, atol=tol * 10 * (1 + np.abs(r_ref).max()), rtol=0)
        c_ref = ref_conv(r_ref, w, stride, pad)[block]
        np.testing.assert_allclose(code_out(to_numpy(c_out)), c_ref, atol=tol * 100 * (1 + np.abs(c_ref).max()),
                                   rtol=0)


@pytest.mark.parametrize("split", [True, False])
@given(prob=conv_problems(max_dims=2).filter(lambda p: p[0] == 2), chunk=st.sampled_from([64, 1 << 20]),
       threads=st.sampled_from(["1", "2", "3"]), data=st.data())
def test_im2col_forward_maxpool_equals_pooled_direct_sums(split, prob, chunk, threads, data, monkeypatch):
    # the channels-last im2col forward with the 2x2 max pool taken per chunk (the per-core split, chunks of
    # one sample or several, 1-3 workers; the whole-batch form pools after the forward), on full and cropped
    # outputs: the pooled values against the direct sums pooled, each index at a maximum of its window
    from sparsecoding.ops.engines.im2col_numba import Im2colNumba

    d, kernel, stride, pad, shape, n, c, kk, seed = prob
    full = conv_output_shape(shape, kernel, stride, pad)
    crop = tuple(data.draw(st.integers(1, o), label="crop") for o in full)
    if min(crop) < 2:
        return
    x, w, xd, wd = _arrays(np, prob, np.float64)
    op = ConvOperator(wd, shape, stride, pad, method="im2col", layout="channels_last", out_shape=crop)
    assert isinstance(op._engine, Im2colNumba)
    op._engine.split_cl, op._engine.chunk_bytes = split, chunk
    ref = ref_conv(x, w, stride, pad)[:, :, :crop[0], :crop[1]]
    ph, pw = crop[0] // 2, crop[1] // 2
    best = np.moveaxis(ref[:, :, :2 * ph, :2 * pw].reshape(n, kk, ph, 2, pw, 2).max(axis=(3, 5)), 1, -1)
    with monkeypatch.context() as mp:
        mp.setenv("SPARSECODING_THREADS", threads)
        pooled, idx = op.forward_maxpool(np.ascontiguousarray(np.moveaxis(xd, 1, -1)))
    assert pooled.shape == idx.shape == (n, ph, pw, kk)
    np.testing.assert_allclose(pooled, best, rtol=0, atol=1e-10 * (1 + np.abs(ref).max()))
    hh, ww = idx // crop[1], idx % crop[1]
    assert np.all((hh // 2 == np.arange(ph)[None, :, None, None]) & (ww // 2 == np.arange(pw)[None, None, :, None]))
    picked = np.take_along_axis(np.moveaxis(ref, 1, -1).reshape(n, -1, kk), idx.reshape(n, -1, kk), axis=1)
    np.testing.assert_allclose(picked.reshape(best.shape), best, rtol=0, atol=1e-10 * (1 + np.abs(ref).max()))


def _check_forward_maxpool(method, layout, code_layout):
    r = np.random.default_rng(3)
    x, w = r.standard_normal((3, 2, 9, 8)), r.standard_normal((5, 2, 3, 3))
    op = ConvOperator(w, (9, 8), 1, 1, method=method, layout=layout, code_layout=code_layout)
    ref = ref_conv(x, w, (1, 1), (1, 1))
    best = ref[:, :, :8, :8].reshape(3, 5, 4, 2, 4, 2).max(axis=(3, 5))
    xin = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if layout == "channels_last" else x
    cl = code_layout == "channels_last"
    pooled, idx = op.forward_maxpool(xin)
    assert pooled.shape == idx.shape == ((3, 4, 4, 5) if cl else (3, 5, 4, 4))
    pooled = np.moveaxis(to_numpy(pooled), -1, 1) if cl else to_numpy(pooled)
    np.testing.assert_allclose(pooled, best, rtol=0, atol=1e-10 * np.abs(ref).max())
    empty, _ = op.forward_maxpool(xin[:0])
    assert empty.shape == ((0, 4, 4, 5) if cl else (0, 5, 4, 4))


LAYOUT_PAIRS = [("channels_first", "channels_first"), ("channels_first", "channels_last"),
                ("channels_last", "channels_last"), ("channels_last", "channels_first")]


@pytest.mark.parametrize("method", ["im2col", "fft"])
@pytest.mark.parametrize("layouts", LAYOUT_PAIRS)
def test_forward_maxpool_every_engine_and_layout(engines, method, layouts):
    # ConvOperator.forward_maxpool on every engine (its own forward then the pool, or the fused per-core
    # im2col) and layout pair, an empty batch included: the direct sums pooled, in the code layout
    _check_forward_maxpool(method, *layouts)


@pytest.mark.parametrize("layouts", LAYOUT_PAIRS)
def test_forward_maxpool_winograd_every_layout(layouts):
    # the Winograd engine: the pool fused in its output transform (channels-last codes) or after its forward
    _check_forward_maxpool("winograd", *layouts)


def test_out_shape_bad_values():
    w = np.ones((2, 1, 3, 3))
    with pytest.raises(ValueError, match=r"out_shape must be at most the full output shape \(6, 6\)"):
        ConvOperator(w, (8, 8), out_shape=(7, 6))
    with pytest.raises(ValueError, match="out_shape entries must be >= 1"):
        ConvOperator(w, (8, 8), out_shape=(0, 6))
    with pytest.raises(ValueError, match="out_shape must have 2 entries"):
        ConvOperator(w, (8, 8), out_shape=(6,))


def _check_channels_last(xp, method, dtype, prob, tweak=None):
    d, kernel, stride, pad, shape, n, c, kk, seed = prob
    x, w, xd, wd = _arrays(xp, prob, dtype)
    tol = TOL[dtype]
    op = ConvOperator(wd, shape, stride, pad, method=method, layout="channels_last")
    if tweak is not None:
        tweak(op)
    xl = xp.ascontiguousarray(xp.moveaxis(xd, 1, -1))
    ref = ref_conv(x, w, stride, pad)
    y = to_numpy(op.forward(xl))
    np.testing.assert_allclose(y, np.moveaxis(ref, 1, -1), atol=tol * (1 + np.abs(ref).max()))
    v = np.random.default_rng(seed + 7).standard_normal(ref.shape)
    vl = xp.asarray(np.ascontiguousarray(np.moveaxis(v, 1, -1)), dtype=dtype)
    refT = ref_conv_transpose(v, w, stride, pad, [L - ((o - 1) * s - 2 * p + k) for L, o, s, p, k in
                                                  zip(shape, ref.shape[2:], stride, pad, kernel)])
    np.testing.assert_allclose(to_numpy(op.adjoint(vl)), np.moveaxis(refT, 1, -1), atol=tol * (1 + np.abs(refT).max()))
    # weight gradient: <conv(x, w), v> is linear in w, so it equals <w, weight_grad(x, v)>
    lhs = float(np.sum(ref * v))
    rhs = float(np.sum(w * to_numpy(op.weight_grad(xl, vl))))
    assert abs(lhs - rhs) <= tol * 10 * max(1.0, np.abs(ref * v).sum())


def test_channels_last_shape_errors():
    op = ConvOperator(np.ones((4, 3, 3, 3)), (8, 8), layout="channels_last")
    with pytest.raises(ValueError, match=r"x must have shape \(N, 8, 8, 3\)"):
        op.forward(np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match="layout must be one of"):
        ConvOperator(np.ones((4, 3, 3, 3)), (8, 8), layout="nhwc")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(prob=conv_problems(), l2=st.sampled_from([None, 64]), threads=st.sampled_from(["1", "2", "3"]),
       density=st.sampled_from([1.0, 0.3, 0.05, 0.0]), sparse=st.sampled_from([0.0, 1.0]))
def test_forward_residual_matches_two_direct_sums(xp, engines, dtype, prob, l2, threads, density, sparse):
    # c = conv(s - conv_transpose(a)) and the residual itself, against the explicit sums; the fused
    # CPU path splits the batch over worker threads and (l2=64 bytes) one sample per chunk, and
    # forms Phi^T a by the GEMM (sparse limit 0) or the sparse product (limit 1) on codes of
    # several densities
    import os

    par = importlib.import_module("sparsecoding.ops.parallel")
    saved, env = par.L2_CHUNK_BYTES, os.environ.get("SPARSECODING_THREADS")
    par.L2_CHUNK_BYTES = l2 or saved
    os.environ["SPARSECODING_THREADS"] = threads
    try:
        d, kernel, stride, pad, shape, n, c, kk, seed = prob
        x, w, xd, wd = _arrays(xp, prob, dtype)
        op = ConvOperator(wd, shape, stride, pad, method="im2col", code_layout="channels_last")
        out_shape = conv_output_shape(shape, kernel, stride, pad)
        ra = np.random.default_rng(seed + 11)
        a = ra.standard_normal((n, *out_shape, kk)) * (ra.random((n, *out_shape, kk)) < density)
        opad = [L - ((o - 1) * s - 2 * p + k) for L, o, s, p, k in zip(shape, out_shape, stride, pad, kernel)]
        r_ref = x - ref_conv_transpose(np.moveaxis(a, -1, 1), w, stride, pad, opad)
        c_ref = np.moveaxis(ref_conv(r_ref, w, stride, pad), 1, -1)
        if hasattr(op._engine, "sparse_limit"):
            op._engine.sparse_limit = sparse
            op._engine.residual_chunk_bytes = l2  # None: the chunk measured on this machine
        plan = op.residual_plan(xd)
        c_out, resid = op.forward_residual(plan, xp.asarray(a, dtype=dtype))
        tol = TOL[dtype]
        np.testing.assert_allclose(to_numpy(resid), r_ref, atol=tol * (1 + np.abs(r_ref).max()))
        np.testing.assert_allclose(to_numpy(c_out), c_ref, atol=tol * 10 * (1 + np.abs(c_ref).max()))
        c_only, nothing = op.forward_residual(plan, xp.asarray(a, dtype=dtype), residual=False)
        assert nothing is None
        np.testing.assert_array_equal(to_numpy(c_only), to_numpy(c_out))
    finally:
        par.L2_CHUNK_BYTES = saved
        if env is None:
            os.environ.pop("SPARSECODING_THREADS", None)
        else:
            os.environ["SPARSECODING_THREADS"] = env


@given(r=st.integers(1, 9), k=st.integers(1, 9), width=st.integers(1, 40),
       density=st.sampled_from([0.0, 0.2, 0.6, 1.0]), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31))
def test_sparse_rows_product_matches_matmul(r, k, width, density, dtype, seed):
    # the sparse Phi^T a kernel against numpy's product; more nonzeros than allowed: refused, out untouched
    from sparsecoding.ops._kernels import sparse_rows_product_1t

    g = np.random.default_rng(seed)
    a = (g.standard_normal((r, k)) * (g.random((r, k)) < density)).astype(dtype)
    w = g.standard_normal((k, width)).astype(dtype)
    out = np.full((r, width), np.nan, dtype=dtype)
    nnz = int(np.count_nonzero(a))
    assert sparse_rows_product_1t(a, w, out, nnz)
    bound = TOL[dtype] * (1 + np.abs(a) @ np.abs(w)).max()
    np.testing.assert_allclose(out, a.astype(np.float64) @ w, rtol=0, atol=bound)
    if nnz:
        out[...] = 7.0
        assert not sparse_rows_product_1t(a, w, out, nnz - 1)
        assert (out == 7.0).all()


def test_sparse_limit_measured_and_cached(monkeypatch, tmp_path):
    # the density limit of the sparse Phi^T a is the largest timed density up to which the sparse
    # product beat the GEMM in the stored timings; SPARSECODING_TUNE=off: always the GEMM
    import json

    from sparsecoding.ops.engines import im2col_numba as eng_mod

    monkeypatch.setenv("SPARSECODING_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SPARSECODING_TUNE", "off")
    assert eng_mod._measure_sparse_limit(64, 16, 27, np.float32) == 0.0
    monkeypatch.setenv("SPARSECODING_TUNE", "on")
    limit = eng_mod._measure_sparse_limit(64, 16, 27, np.float32)
    stored = {}
    for entries in json.loads((tmp_path / "tune.json").read_text()).values():
        stored.update({k: v for k, v in entries.items() if k.startswith("sparse Phi^T a: 64x16 codes, width 27")})
    expect = 0.0
    for d in eng_mod.SPARSE_DENSITIES:
        e = stored.get(f"sparse Phi^T a: 64x16 codes, width 27, float32, density {d:.4f}")
        if e is None or e["choice"] != "sparse":
            assert e is None or e["seconds"]["sparse"] >= e["seconds"]["gemm"]
            break
        assert e["seconds"]["sparse"] <= e["seconds"]["gemm"]
        expect = d
    assert limit == expect


def test_residual_chunk_measured_and_cached(monkeypatch, tmp_path):
    # the fused residual's samples per chunk: the fastest candidate in the stored timings (the LCA
    # workload's geometry, where it is measured); SPARSECODING_TUNE=off: the L2_CHUNK_BYTES default
    import json

    from sparsecoding.ops import parallel

    monkeypatch.setenv("SPARSECODING_CACHE_DIR", str(tmp_path))
    w = np.random.default_rng(0).standard_normal((64, 3, 9, 9)).astype(np.float32)
    per_sample = 16 * 16 * 3 * 81 * 4
    monkeypatch.setenv("SPARSECODING_TUNE", "off")
    op = ConvOperator(w, (32, 32), 2, "same", method="im2col", code_layout="channels_last")
    assert op._engine._residual_chunk() == max(1, parallel.L2_CHUNK_BYTES // per_sample)
    monkeypatch.setenv("SPARSECODING_TUNE", "on")
    op = ConvOperator(w, (32, 32), 2, "same", method="im2col", code_layout="channels_last")
    nb = op._engine._residual_chunk()
    (entry,) = [e for entries in json.loads((tmp_path / "tune.json").read_text()).values()
                for k, e in entries.items() if k.startswith("fused residual chunk: C3 K64 16x16 codes, 81 taps")]
    assert entry["choice"] == min(entry["seconds"], key=entry["seconds"].get) == f"{nb} samples"


@given(prob=conv_problems())
def test_residual_alone_matches_direct_sum(xp, engines, prob):
    d, kernel, stride, pad, shape, n, c, kk, seed = prob
    x, w, xd, wd = _arrays(xp, prob, np.float64)
    op = ConvOperator(wd, shape, stride, pad, method="im2col", code_layout="channels_last")
    out_shape = conv_output_shape(shape, kernel, stride, pad)
    a = np.random.default_rng(seed + 13).standard_normal((n, *out_shape, kk))
    opad = [L - ((o - 1) * s - 2 * p + k) for L, o, s, p, k in zip(shape, out_shape, stride, pad, kernel)]
    r_ref = x - ref_conv_transpose(np.moveaxis(a, -1, 1), w, stride, pad, opad)
    resid = op.residual(op.residual_plan(xd), xp.asarray(a))
    np.testing.assert_allclose(to_numpy(resid), r_ref, atol=1e-10 * (1 + np.abs(r_ref).max()))


def test_forward_residual_bad_code_shape(engines):
    op = ConvOperator(np.ones((4, 3, 3, 3)), (8, 8), stride=2, padding=1, method="im2col", code_layout="channels_last")
    plan = op.residual_plan(np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"a must have shape \(2, 4, 4, 4\)"):
        op.forward_residual(plan, np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match="s has 2 channels, expected 3"):
        op.residual_plan(np.zeros((2, 2, 8, 8)))


@pytest.mark.parametrize("method", ["im2col", "fft"])
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_operator_follows_in_place_weight_changes(engines, method, layout):
    # optimisers update weights in place: every derived operand (channels-last GEMM operand,
    # FFT kernel spectrum) must follow, except inside frozen_weights where the caller promised
    # that w stays fixed
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    w_new = rng.standard_normal(w.shape)
    op = ConvOperator(w, (9, 9), 2, 1, method=method, layout=layout)
    cl = layout == "channels_last"
    xin = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if cl else x
    y = rng.standard_normal((2, 4, 5, 5))
    yin = np.ascontiguousarray(np.moveaxis(y, 1, -1)) if cl else y

    def public(a):
        return np.moveaxis(a, -1, 1) if cl else a

    op.forward(xin), op.adjoint(yin)  # derive once with the old weights
    w[...] = w_new
    np.testing.assert_allclose(public(op.forward(xin)), ref_conv(x, w_new, (2, 2), (1, 1)), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(public(op.adjoint(yin)), ref_conv_transpose(y, w_new, (2, 2), (1, 1), (0, 0)),
                               rtol=1e-9, atol=1e-9)
    with op.frozen_weights():
        np.testing.assert_allclose(public(op.forward(xin)), ref_conv(x, w_new, (2, 2), (1, 1)), rtol=1e-9, atol=1e-9)
    w[...] = 0.0  # the cache of the frozen block is released with it
    assert not np.any(public(op.forward(xin))) and not np.any(public(op.adjoint(yin)))


@pytest.mark.parametrize("method", ["im2col", "fft"])
@pytest.mark.parametrize("layout,code_layout", [("channels_first", "channels_first"),
                                                ("channels_first", "channels_last"),
                                                ("channels_last", "channels_last"),
                                                ("channels_last", "channels_first")])
@given(prob=conv_problems())
def test_engine_families_agree(method, layout, code_layout, prob):
    # the numba engines and the generic-array ones (cupy's path) give the same maps, weight
    # gradient and fused residual, in every layout
    from sparsecoding.backend import use_engines

    d, kernel, stride, pad, shape, n, c, kk, seed = prob
    x, w, _, _ = _arrays(np, prob, np.float64)
    results = {}
    for family in ("native", "generic"):
        with use_engines(family):
            op = ConvOperator(w, shape, stride, pad, method=method, layout=layout, code_layout=code_layout)
        assert op.engine == f"{method}-{family}"
        xi = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if layout == "channels_last" else x
        y = np.random.default_rng(seed + 3).standard_normal((n, *op.out_shape))
        plan = op.residual_plan(xi)
        results[family] = (op.forward(xi), op.adjoint(y), op.weight_grad(xi, y), *op.forward_residual(plan, y))
    for a, b in zip(results["native"], results["generic"]):
        np.testing.assert_allclose(a, b, atol=1e-10 * (1 + np.abs(b).max()))
