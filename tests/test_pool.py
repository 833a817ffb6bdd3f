"""Pools against explicit window loops, and their adjoint identities."""
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparsecoding.backend import to_numpy
from sparsecoding.backend import use_engines
from sparsecoding.ops.pool import AvgPool, MaxPool, avg_pool, avg_pool_adjoint, max_pool, max_unpool


@st.composite
def pool_problems(draw):
    d = draw(st.integers(1, 3))
    k = tuple(draw(st.integers(1, 3)) for _ in range(d))
    s = tuple(draw(st.integers(1, 3)) for _ in range(d))
    shape = tuple(draw(st.integers(kk, kk + 6)) for kk in k)
    seed = draw(st.integers(0, 2**31))
    # a permutation of distinct values: no ties, so the argmax is unique
    x = np.random.default_rng(seed).permutation(2 * 2 * int(np.prod(shape))).reshape(2, 2, *shape).astype(float)
    return k, s, x, seed


def _windows(shape, k, s):
    out = [(L - kk) // ss + 1 for L, kk, ss in zip(shape, k, s)]
    for o in itertools.product(*(range(v) for v in out)):
        yield o, tuple(slice(oi * ss, oi * ss + kk) for oi, ss, kk in zip(o, s, k))


@given(pool_problems())
def test_max_pool_matches_window_loop(xp, engines, prob):
    k, s, x, _ = prob
    y, idx = max_pool(xp.asarray(x), k, s)
    y, idx = to_numpy(y), to_numpy(idx)
    for o, sl in _windows(x.shape[2:], k, s):
        win = x[(slice(None), slice(None), *sl)].reshape(2, 2, -1)
        np.testing.assert_array_equal(y[(slice(None), slice(None), *o)], win.max(-1))
        # the flat index points at the maximum in the (n, c) plane
        flat = x.reshape(2, 2, -1)
        np.testing.assert_array_equal(np.take_along_axis(flat, idx[(slice(None), slice(None), *o)][..., None], -1)[..., 0], win.max(-1))


@given(pool_problems())
def test_avg_pool_matches_window_loop(xp, engines, prob):
    k, s, x, _ = prob
    y = to_numpy(avg_pool(xp.asarray(x), k, s))
    for o, sl in _windows(x.shape[2:], k, s):
        np.testing.assert_allclose(y[(slice(None), slice(None), *o)], x[(slice(None), slice(None), *sl)].reshape(2, 2, -1).mean(-1))


@given(pool_problems())
def test_pool_adjoint_identities(xp, engines, prob):
    k, s, x, seed = prob
    r = np.random.default_rng(seed + 3)
    xd = xp.asarray(x)
    z = xp.asarray(r.standard_normal(x.shape))
    # avg: <avg_pool(z), y> == <z, avg_pool_adjoint(y)>
    y = xp.asarray(r.standard_normal(avg_pool(xd, k, s).shape))
    lhs = float(xp.sum(avg_pool(z, k, s) * y))
    rhs = float(xp.sum(z * avg_pool_adjoint(y, x.shape[2:], k, s)))
    assert abs(lhs - rhs) < 1e-10 * (1 + abs(lhs))
    # max at fixed indices: <take(z, idx), y> == <z, max_unpool(y, idx)>
    _, idx = max_pool(xd, k, s)
    flatz = z.reshape(2, 2, -1)
    taken = xp.take_along_axis(flatz, idx.reshape(2, 2, -1), -1)
    lhs = float(xp.sum(taken * y.reshape(2, 2, -1)))
    rhs = float(xp.sum(z * max_unpool(y, idx, x.shape[2:])))
    assert abs(lhs - rhs) < 1e-10 * (1 + abs(lhs))


def test_unpool_places_maxima(xp, engines):
    x = xp.asarray(np.arange(16.0).reshape(1, 1, 4, 4))
    y, idx = max_pool(x, 2)
    np.testing.assert_array_equal(to_numpy(idx)[0, 0], [[5, 7], [13, 15]])
    u = to_numpy(max_unpool(y, idx, (4, 4)))
    expect = np.zeros((4, 4))
    expect[1::2, 1::2] = [[5, 7], [13, 15]]
    np.testing.assert_array_equal(u[0, 0], expect)


def test_pool_bad_input():
    with pytest.raises(ValueError, match="smaller than the pool"):
        max_pool(np.zeros((1, 1, 1, 1)), 2)
    with pytest.raises(ValueError, match="entries"):
        avg_pool(np.zeros((1, 1, 4, 4)), (2, 2, 2))
    with pytest.raises(ValueError, match="does not pool"):
        avg_pool_adjoint(np.zeros((1, 1, 2, 2)), (8, 8), 2)


@given(pool_problems())
def test_channels_last_pools_match_window_loop(xp, engines, prob):
    # (N, *L, C) arrays: values against the window loop, indices point at the maxima, adjoints hold
    k, s, x, seed = prob
    xl = xp.asarray(np.ascontiguousarray(np.moveaxis(x, 1, -1)))
    y, idx = max_pool(xl, k, s, channels_last=True)
    a = to_numpy(avg_pool(xl, k, s, channels_last=True))
    y, idx = to_numpy(y), to_numpy(idx)
    flat = x.reshape(2, 2, -1)
    for o, sl in _windows(x.shape[2:], k, s):
        win = x[(slice(None), slice(None), *sl)].reshape(2, 2, -1)
        at = (slice(None), *o, slice(None))
        np.testing.assert_array_equal(y[at], win.max(-1))
        np.testing.assert_allclose(a[at], win.mean(-1))
        np.testing.assert_array_equal(np.take_along_axis(flat, idx[at][..., None], -1)[..., 0], win.max(-1))
    r = np.random.default_rng(seed + 5)
    z = r.standard_normal(xl.shape)
    v = r.standard_normal(y.shape)
    u = to_numpy(max_unpool(xp.asarray(v), xp.asarray(idx), x.shape[2:], channels_last=True))
    taken = np.take_along_axis(np.moveaxis(z, -1, 1).reshape(2, 2, -1), np.moveaxis(idx, -1, 1).reshape(2, 2, -1), -1)
    assert abs(np.sum(taken * np.moveaxis(v, -1, 1).reshape(2, 2, -1)) - np.sum(z * u)) < 1e-10 * (1 + np.abs(z * u).sum())
    w = to_numpy(avg_pool_adjoint(xp.asarray(v), x.shape[2:], k, s, channels_last=True))
    lhs = np.sum(to_numpy(avg_pool(xp.asarray(z), k, s, channels_last=True)) * v)
    assert abs(lhs - np.sum(z * w)) < 1e-10 * (1 + abs(lhs))


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@given(pool_problems())
def test_pool_operators_match_the_functions(engines, layout, prob):
    # MaxPool remembers the argmax of its forward call and unpools to it; AvgPool is the function pair
    k, s, x, seed = prob
    cl = layout == "channels_last"
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if cl else x
    spatial = x.shape[2:]
    mp = MaxPool(2, spatial, k, s, layout=layout, dtype=np.float64)
    ap = AvgPool(2, spatial, k, s, layout=layout, dtype=np.float64)
    y, idx = max_pool(xl, k, s, channels_last=cl)
    np.testing.assert_array_equal(mp.forward(xl), y)
    np.testing.assert_array_equal(mp.indices, idx)
    v = np.random.default_rng(seed + 9).standard_normal(y.shape)
    np.testing.assert_array_equal(mp.adjoint(v), max_unpool(v, idx, spatial, channels_last=cl))
    np.testing.assert_allclose(ap.forward(xl), avg_pool(xl, k, s, channels_last=cl))
    np.testing.assert_allclose(ap.adjoint(v), avg_pool_adjoint(v, spatial, k, s, channels_last=cl))
    # lipschitz of the max pool at its argmax: the largest multiplicity of a picked position
    counts = np.zeros((2, 2, int(np.prod(spatial))))
    flat_idx = np.moveaxis(idx, -1, 1).reshape(2, 2, -1) if cl else idx.reshape(2, 2, -1)
    for i in range(2):
        for j in range(2):
            np.add.at(counts[i, j], flat_idx[i, j], 1)
    assert mp.lipschitz() == counts.max()


@given(pool_problems())
def test_pool_engine_families_agree(prob):
    k, s, x, seed = prob
    for cl in (False, True):
        xl = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if cl else x
        out = {}
        for family in ("native", "generic"):
            with use_engines(family):
                y, idx = max_pool(xl, k, s, channels_last=cl)
                out[family] = (y, idx, max_unpool(y, idx, x.shape[2:], channels_last=cl),
                               avg_pool(xl, k, s, channels_last=cl))
        for a, b in zip(out["native"], out["generic"]):
            np.testing.assert_array_equal(a, b)
