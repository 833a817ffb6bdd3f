import numpy as np

from sparsecoding.data.augment import color_jitter, horizontal_flip, lpl_views, random_crop, random_grayscale, \
    random_resized_crop


def test_identities_and_ranges():
    r = np.random.default_rng(0)
    x = r.random((6, 3, 10, 10))
    np.testing.assert_array_equal(random_crop(x, r, padding=0), x)
    np.testing.assert_array_equal(horizontal_flip(x, r, p=1.0), x[..., ::-1])
    np.testing.assert_array_equal(horizontal_flip(x, r, p=0.0), x)
    np.testing.assert_allclose(random_resized_crop(x, r, scale=(1, 1), ratio=(1, 1)), x, atol=1e-12)
    np.testing.assert_array_equal(color_jitter(x, r, p=0.0), x)
    g = random_grayscale(x, r, p=1.0)
    np.testing.assert_allclose(g[:, 0], g[:, 1])
    v = lpl_views(x, r)
    assert v.shape == x.shape and v.min() >= 0 and v.max() <= 1


def test_random_crop_is_a_shift_with_zero_fill():
    r = np.random.default_rng(1)
    x = r.random((20, 1, 6, 6)) + 1
    y = random_crop(x, r, padding=2)
    for i in range(20):
        # every crop is x shifted by some (dy, dx) in [-2, 2] with zeros filling the rest
        ok = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = np.zeros((6, 6))
                src = x[i, 0, max(dy, 0):6 + min(dy, 0), max(dx, 0):6 + min(dx, 0)]
                ref[max(-dy, 0):max(-dy, 0) + src.shape[0], max(-dx, 0):max(-dx, 0) + src.shape[1]] = src
                ok |= np.array_equal(y[i, 0], ref)
        assert ok
