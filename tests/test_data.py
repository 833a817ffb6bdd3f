import numpy as np
import pytest

from sparsecoding.data import bars, extract_patches, load_digits, natural_images, whiten


def test_bars_statistics_and_templates():
    X, T = bars(20000, size=8, p=1 / 8, seed=0)
    assert X.shape == (20000, 64) and T.shape == (16, 64)
    assert set(np.unique(X)) <= {0.0, 1.0}
    # each bar is on with probability p: a pixel is off only if its row and column bars are off
    np.testing.assert_allclose(X.mean(), 1 - (7 / 8) ** 2, atol=0.01)
    assert (T.sum(1) == 8).all() and np.all(T[:8] @ T[8:].T == 1)


def test_bundled_data_shapes():
    X, y = load_digits()
    assert X.shape == (1797, 1, 8, 8) and X.max() <= 1 and set(np.unique(y)) == set(range(10))
    ims = natural_images()
    assert all(im.shape[0] == 3 and im.min() >= 0 and im.max() <= 1 for im in ims)
    P = extract_patches(ims, 8, 100, seed=0, flatten=True)
    assert P.shape == (100, 192)


def test_whitening_gives_identity_covariance():
    r = np.random.default_rng(0)
    X = r.standard_normal((5000, 6)) @ r.standard_normal((6, 6))
    Z = whiten(X, eps=0.0)
    np.testing.assert_allclose(np.cov(Z.T), np.eye(6), atol=1e-8)


def test_digits_split_is_a_seeded_partition():
    from sparsecoding.data import digits_split, load_digits

    Xtr, ytr, Xte, yte = digits_split(1300, seed=0)
    X, y = load_digits()
    assert len(Xtr) == 1300 and len(Xte) == len(X) - 1300
    # together the two parts are the whole set, each image once
    both = np.concatenate([Xtr, Xte]).reshape(len(X), -1)
    assert sorted(map(bytes, both)) == sorted(map(bytes, X.reshape(len(X), -1)))
    np.testing.assert_array_equal(digits_split(1300, seed=0)[1], ytr)
    assert not np.array_equal(digits_split(1300, seed=1)[1], ytr)
    with pytest.raises(ValueError, match="n_train"):
        digits_split(0)


def _loop_standardize(x, ddof, eps):
    """lca-pytorch's make_zero_mean then make_unit_var, sample by sample with explicit sums:
    x - mean, then / (sqrt(sum (x - mean)^2 / (n - ddof)) + eps); torch's std is unbiased (ddof=1)."""
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        v = x[i].reshape(-1)
        n = v.size
        m = sum(float(t) for t in v) / n
        c = [float(t) - m for t in v]
        m2 = sum(c) / n
        sd = (sum((t - m2) ** 2 for t in c) / (n - ddof)) ** 0.5
        out[i] = (np.asarray(c) / (sd + eps)).reshape(x.shape[1:])
    return out


@pytest.mark.parametrize("shape", [(3, 10), (4, 3, 7), (2, 3, 5, 4), (2, 2, 3, 4, 5)])
def test_standardize_is_lca_pytorch_unit_variance(shape):
    from sparsecoding.data import standardize

    x = np.random.default_rng(0).random(shape) * 100
    out = standardize(x)
    np.testing.assert_allclose(out, _loop_standardize(x, 1, 1e-12), rtol=1e-12, atol=1e-12)
    flat = out.reshape(shape[0], -1)
    np.testing.assert_allclose(flat.std(axis=1, ddof=1), 1, rtol=1e-10)
    np.testing.assert_allclose(flat.mean(axis=1), 0, atol=1e-12)
    # the population variant on request; the two differ by sqrt(n / (n - 1))
    n = flat.shape[1]
    np.testing.assert_allclose(standardize(x, ddof=0), _loop_standardize(x, 0, 1e-12), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(standardize(x, ddof=0), out * np.sqrt(n / (n - 1)), rtol=1e-10)
    np.testing.assert_allclose(standardize(x, zero_mean=False), x / (x.reshape(shape[0], -1).std(1, ddof=1)
                                                                      .reshape(-1, *[1] * (len(shape) - 1)) + 1e-12))


def test_standardize_needs_two_values_per_sample_for_unit_variance():
    from sparsecoding.data import standardize

    with pytest.raises(ValueError, match="ddof=1"):
        standardize(np.ones((3, 1)))
    assert standardize(np.ones((3, 1)), unit_var=False).shape == (3, 1)
    assert standardize(np.zeros((0, 3, 4))).shape == (0, 3, 4)  # an empty batch passes through
    np.testing.assert_array_equal(standardize(np.full((2, 5), 3.0)), 0)  # constant samples: zeros, no NaN


@pytest.mark.parametrize("name", ["LCA", "LCAConv1D", "LCAConv2D", "LCAConv3D"])
def test_layer_preprocess_matches_lca_pytorch(name):
    """Every layer's preprocess (used by forward, fit, the lca CLIs and LCACNN) is make_zero_mean +
    make_unit_var with the unbiased standard deviation."""
    from sparsecoding import lca

    shape = {"LCA": (3, 12), "LCAConv1D": (3, 2, 11), "LCAConv2D": (3, 2, 6, 5), "LCAConv3D": (2, 2, 3, 4, 5)}[name]
    layer = getattr(lca, name)(4, shape[1], dtype="float64", **({} if name == "LCA" else {"kernel_size": 3}))
    x = np.random.default_rng(1).random(shape) * 10 + 3
    np.testing.assert_allclose(layer.preprocess(x), _loop_standardize(x, 1, 1e-12), rtol=1e-12, atol=1e-12)
    layer.input_unit_var = False
    np.testing.assert_allclose(layer.preprocess(x), x - x.mean(axis=tuple(range(1, x.ndim)), keepdims=True))
