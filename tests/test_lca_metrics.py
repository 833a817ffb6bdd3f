"""lca-pytorch's metric functions (lcapt/metric.py), written out here as explicit loops.

lca-pytorch's definitions, per the reference:
- compute_frac_active(acts) = mean(acts != 0), a Python float;
- compute_l1_sparsity(acts, lambda_) = lambda_ * mean over the batch of the per-sample L1 norm
  (a 0-d tensor of the dtype of acts);
- compute_l2_error(inputs, recons) = 1/2 * mean over the batch of the per-sample squared L2 norm of
  inputs - recons (0-d, dtype of inputs);
- compute_times_active_by_feature(acts) = number of nonzero entries per feature (axis 1) over all other
  axes, shaped (K, 1, ..., 1) with acts.ndim axes.
"""
import itertools

import numpy as np
import pytest

from sparsecoding.lca import LCA, LCAConv1D, LCAConv2D
from sparsecoding.lca.metrics import (compute_frac_active, compute_l1_sparsity, compute_l2_error,
                                      compute_times_active_by_feature)


def _sparse(shape, seed, dtype=np.float64):
    r = np.random.default_rng(seed)
    a = r.standard_normal(shape).astype(dtype)
    a[np.abs(a) < 0.7] = 0
    return a


@pytest.mark.parametrize("shape", [(4, 6), (3, 5, 7), (2, 4, 5, 3), (2, 3, 2, 3, 4)])
def test_metrics_equal_explicit_loops(shape):
    acts = _sparse(shape, 0)
    inputs = np.random.default_rng(1).standard_normal(shape)
    recons = np.random.default_rng(2).standard_normal(shape)
    lam = 0.37
    n = shape[0]
    nonzero = total = 0
    l1 = l2 = 0.0
    for i in range(n):
        s1 = s2 = 0.0
        for idx in itertools.product(*(range(v) for v in shape[1:])):
            v = acts[(i, *idx)]
            nonzero += v != 0
            total += 1
            s1 += abs(v)
            e = inputs[(i, *idx)] - recons[(i, *idx)]
            s2 += e * e
        l1 += s1
        l2 += s2
    times = np.zeros(shape[1])
    for idx in itertools.product(*(range(v) for v in shape)):
        times[idx[1]] += acts[idx] != 0

    frac = compute_frac_active(acts)
    assert type(frac) is float and frac == pytest.approx(nonzero / total, abs=0)
    np.testing.assert_allclose(compute_l1_sparsity(acts, lam), lam * l1 / n, rtol=1e-12)
    np.testing.assert_allclose(compute_l2_error(inputs, recons), 0.5 * l2 / n, rtol=1e-12)
    t = compute_times_active_by_feature(acts)
    assert t.shape == (shape[1],) + (1,) * (len(shape) - 1)
    np.testing.assert_array_equal(t.reshape(-1), times)


def test_metric_values_of_lca_pytorch_examples():
    # lca-pytorch's own test cases: all / none active, per-feature counts 1..10, one differing value
    assert compute_frac_active(np.ones((10, 100, 8, 8))) == 1.0
    assert compute_frac_active(np.zeros((10, 100, 8, 8))) == 0.0
    a = _sparse((10, 100, 8, 8), 3)
    assert compute_frac_active(a) == compute_frac_active(-a)
    np.testing.assert_allclose(compute_l1_sparsity(a, 1.0), compute_l1_sparsity(-a, 1.0))
    one = np.random.default_rng(4).random((1, 100, 8, 8)) + 1
    np.testing.assert_allclose(compute_l1_sparsity(one, 1.0), np.abs(one).sum())
    x = np.zeros((3, 10, 100, 100))
    r = x.copy()
    r[:, 0, 0, 50] = 10
    np.testing.assert_allclose(compute_l2_error(x, r), 50.0)
    counts = np.zeros((1, 10, 100))
    for k in range(10):
        counts[:, k, :k + 1] = 1.5
    np.testing.assert_array_equal(compute_times_active_by_feature(counts)[:, 0, 0], np.arange(1.0, 11.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_metric_dtypes_and_zero_dim(dtype):
    a = _sparse((5, 4, 6), 5, dtype)
    for value in (compute_l1_sparsity(a, 0.5), compute_l2_error(a, 2 * a)):
        assert np.ndim(value) == 0 and np.asarray(value).dtype == dtype
    assert compute_times_active_by_feature(a).dtype == dtype


def test_metric_errors_name_the_argument():
    with pytest.raises(ValueError, match="same shape"):
        compute_l2_error(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(TypeError, match="acts"):
        compute_frac_active(np.zeros(3, dtype=complex))
    with pytest.raises(ValueError, match="acts"):
        compute_times_active_by_feature(np.zeros(3))
    assert compute_frac_active(np.zeros((0, 4))) == 0.0
    assert float(compute_l1_sparsity(np.zeros((0, 4)), 1.0)) == 0.0


@pytest.mark.parametrize("make, shape", [
    (lambda **kw: LCA(7, 12, **kw), (3, 12)),
    (lambda **kw: LCAConv1D(4, 2, kernel_size=5, **kw), (3, 2, 15)),
    (lambda **kw: LCAConv2D(4, 2, kernel_size=3, stride=2, **kw), (2, 2, 8, 7)),
])
def test_tracked_metrics_are_the_metric_functions_of_each_step(make, shape):
    """``track_metrics`` records, at step t, the metric functions of the acts and reconstruction of that
    step (the values returned in slice t with ``return_all_ts``)."""
    layer = make(lambda_=0.2, tau=20, lca_iters=12, dtype="float64", seed=0, track_metrics=True,
                 return_vars=("inputs", "acts", "recons"), return_all_ts=True)
    s, acts, recons = layer(np.random.default_rng(6).standard_normal(shape))
    m = layer.metrics
    for t in range(12):
        a, r, x = acts[..., t], recons[..., t], s[..., t]
        np.testing.assert_allclose(m["L1"][t], compute_l1_sparsity(a, 0.2), rtol=1e-12)
        np.testing.assert_allclose(m["L2"][t], compute_l2_error(x, r), rtol=1e-12)
        np.testing.assert_allclose(m["TotalEnergy"][t], m["L1"][t] + m["L2"][t], rtol=1e-12)
        assert m["FractionActive"][t] == pytest.approx(compute_frac_active(a), abs=1e-15)


def test_metric_functions_are_exported_from_sparsecoding_lca():
    import sparsecoding.lca as lca
    from sparsecoding.lca import metrics

    for name in metrics.__all__:
        assert getattr(lca, name) is getattr(metrics, name) and name in lca.__all__
