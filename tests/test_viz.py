import numpy as np
import pytest

from sparsecoding.viz import save_dictionary, tile_dictionary


def test_tiles_place_each_atom(tmp_path):
    w = np.zeros((4, 1, 2, 2))
    w[2, 0, 1, 1] = 1.0  # atom 2: bottom-right pixel bright
    img = tile_dictionary(w, pad=1)
    assert img.shape == (7, 7)
    # atom 2 sits in row 1, column 0 of the 2x2 grid; its bright pixel maps to 1.0, zeros to 0.5
    assert img[1 + 3 + 1, 1 + 1] == 1.0 and img[1, 1] == 0.5
    assert save_dictionary(np.random.default_rng(0).standard_normal((6, 16)), tmp_path / "d.png", shape=(4, 4)).exists()


# ---------------------------------------------------------------- make_feature_grid (lca-pytorch layout)
# lca-pytorch's make_feature_grid is torchvision's make_grid(weights, nrow=int(sqrt(K)), padding=2,
# normalize=True, scale_each, pad_value=0.5): single-channel images repeated to 3 channels, values
# (w - min) / max(max - min, 1e-5) over all features (per feature with scale_each), int(sqrt(K)) features
# per row, 2 pixels of 0.5 around and between them; 2-D (K, D) and (K, 1, L) weights come back as they are;
# (K, C, L) is a grid of C x L gray images (first channel); (K, C, H, W) -> (H_grid, W_grid, C');
# (K, C, T, H, W) -> the 2-D grid when T == 1, else (T, H_grid, W_grid, C').

def _reference_grid(w, scale_each=False):
    """The layout above with explicit loops, channels-first (C', H_grid, W_grid)."""
    k, c, h, ww = w.shape
    if c == 1:
        w = np.concatenate([w, w, w], axis=1)
        c = 3
    w = w.astype(np.float64).copy()
    if scale_each:
        for i in range(k):
            lo, hi = w[i].min(), w[i].max()
            w[i] = (w[i] - lo) / max(hi - lo, 1e-5)
    else:
        lo, hi = w.min(), w.max()
        w = (w - lo) / max(hi - lo, 1e-5)
    if k == 1:
        return w[0]
    cols = min(int(np.sqrt(k)), k)
    rows = -(-k // cols)
    grid = np.full((c, rows * (h + 2) + 2, cols * (ww + 2) + 2), 0.5)
    for i in range(k):
        r, q = i // cols, i % cols
        for ch in range(c):
            for y in range(h):
                for x in range(ww):
                    grid[ch, 2 + r * (h + 2) + y, 2 + q * (ww + 2) + x] = w[i, ch, y, x]
    return grid


def test_make_feature_grid_shapes_of_lca_pytorch():
    from sparsecoding.viz import make_feature_grid

    r = np.random.default_rng(0)
    # the shapes lca-pytorch's own tests expect
    for shape, expect in [((5, 1, 10), (5, 10)), ((5, 3, 10), (17, 26)), ((5, 3, 10, 10), (38, 26, 3)),
                          ((5, 3, 1, 10, 10), (38, 26, 3)), ((5, 3, 3, 10, 10), (3, 38, 26, 3)), ((5, 10), (5, 10))]:
        assert make_feature_grid(r.standard_normal(shape)).shape == expect, shape


@pytest.mark.parametrize("shape", [(5, 3, 4, 3), (7, 1, 3, 3), (9, 2, 2, 4), (1, 3, 4, 4), (2, 1, 3, 2)])
@pytest.mark.parametrize("scale_each", [False, True])
def test_make_feature_grid_values_2d(shape, scale_each):
    from sparsecoding.viz import make_feature_grid

    w = np.random.default_rng(1).standard_normal(shape)
    grid = make_feature_grid(w, scale_each=scale_each)
    np.testing.assert_allclose(grid, _reference_grid(w, scale_each).transpose(1, 2, 0), atol=1e-12)


def test_make_feature_grid_values_1d_3d_and_dense():
    from sparsecoding.viz import make_feature_grid

    r = np.random.default_rng(2)
    w1 = r.standard_normal((6, 3, 7))
    np.testing.assert_allclose(make_feature_grid(w1), _reference_grid(w1[:, None])[0], atol=1e-12)
    w1c = r.standard_normal((6, 1, 7))
    np.testing.assert_array_equal(make_feature_grid(w1c), w1c[:, 0])  # unscaled, as lca-pytorch
    wd = r.standard_normal((6, 9))
    np.testing.assert_array_equal(make_feature_grid(wd), wd)
    w3 = r.standard_normal((4, 2, 3, 3, 2))
    grids = make_feature_grid(w3)
    for t in range(3):  # each time step scaled on its own
        np.testing.assert_allclose(grids[t], _reference_grid(w3[:, :, t]).transpose(1, 2, 0), atol=1e-12)
    np.testing.assert_allclose(make_feature_grid(w3[:, :, :1]), _reference_grid(w3[:, :, 0]).transpose(1, 2, 0))


def test_make_feature_grid_bad_input():
    from sparsecoding.viz import make_feature_grid

    with pytest.raises(ValueError, match="2-D, 3-D, 4-D or 5-D"):
        make_feature_grid(np.zeros(5))
    with pytest.raises(ValueError, match="2-D, 3-D, 4-D or 5-D"):
        make_feature_grid(np.zeros((5, 1, 2, 2, 2, 2)))
    with pytest.raises(ValueError, match="no features"):
        make_feature_grid(np.zeros((0, 3, 4, 4)))
    with pytest.raises(TypeError, match="real"):
        make_feature_grid(np.zeros((2, 3, 4, 4), dtype=complex))
