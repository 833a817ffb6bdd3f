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
