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


# ---------------------------------------------------------------- plot_* (matplotlib Figures)
# Each test recomputes what a picture must show from the module's documented layout and normalisation
# (mosaic: atom i at grid row i // cols, column i % cols, `pad` pixels between tiles; grey: the values on a
# diverging scale +-max|w|, or w_i / max|w_i| on +-1; RGB: 0.5 + 0.5 w_i / max|w_i|; reconstruction: the
# residual x - x^, the relative error ||x - x^|| / ||x||) and reads the drawn data back from the Figure.
import csv  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402

from sparsecoding import viz  # noqa: E402


def _colorbar_axes(fig):
    return {im.colorbar.ax for ax in fig.axes for im in ax.images if im.colorbar is not None}


def _plot_axes(fig):
    cbars = _colorbar_axes(fig)
    return [ax for ax in fig.axes if ax not in cbars]


def _tile(img, i, cols, h, w, pad):
    r, q = divmod(i, cols)
    return img[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w]


def _assert_labelled(ax):
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel(), (ax.get_title(), ax.get_xlabel(), ax.get_ylabel())


@pytest.mark.parametrize("scale", ["all", "atom"])
def test_plot_features_2d_grey_tiles_are_the_atoms(scale):
    w = np.random.default_rng(3).standard_normal((7, 1, 3, 4))
    fig = viz.plot_features(w, scale=scale, pad=1)
    (ax,) = _plot_axes(fig)
    (im,) = ax.images
    img = im.get_array()
    cols = math.ceil(math.sqrt(7))
    assert img.shape == (3 * (3 + 1) + 1, cols * (4 + 1) + 1)
    m = np.abs(w).max()
    for i in range(7):
        expect = w[i, 0] if scale == "all" else w[i, 0] / np.abs(w[i]).max()
        np.testing.assert_allclose(_tile(img, i, cols, 3, 4, 1), expect, rtol=0, atol=1e-15)
    # the gaps and the empty grid cells are masked (drawn in the "bad" colour), never a value
    assert img.mask[0].all() and img.mask[:, 0].all() and _tile(img.mask, 8, cols, 3, 4, 1).all()
    assert int((~img.mask).sum()) == w.size
    lim = m if scale == "all" else 1.0
    assert im.norm.vmin == -lim and im.norm.vmax == lim  # diverging scale centred at 0
    assert im.colorbar is not None and im.colorbar.ax.get_ylabel()
    _assert_labelled(ax)


def test_plot_features_rgb_rescales_each_atom_and_says_so():
    w = np.random.default_rng(4).standard_normal((5, 3, 4, 4)) * np.arange(1, 6)[:, None, None, None]
    fig = viz.plot_features(w, pad=2)
    (ax,) = _plot_axes(fig)
    img = ax.images[0].get_array()
    cols = 3
    for i in range(5):
        expect = (0.5 + 0.5 * w[i] / np.abs(w[i]).max()).transpose(1, 2, 0)
        np.testing.assert_allclose(_tile(img, i, cols, 4, 4, 2), expect, atol=1e-15)
    assert "0.5 + 0.5 w / max|w|" in ax.get_title() and "RGB" in ax.get_title()
    assert not _colorbar_axes(fig)  # rescaled per atom: no common value scale to show
    _assert_labelled(ax)


@pytest.mark.parametrize("c", [1, 3])
def test_plot_features_3d_rows_are_atoms_frames_in_time_order(c):
    k, kt, h, w_ = 3, 4, 2, 3
    w = np.random.default_rng(5).standard_normal((k, c, kt, h, w_))
    w[:, :, :] += 10.0 * np.arange(kt)[None, None, :, None, None]  # frame t has mean 10 t: order visible
    fig = viz.plot_features(w, pad=1)
    (ax,) = _plot_axes(fig)
    img = ax.images[0].get_array()
    for i in range(k):
        for t in range(kt):  # atom i is row i, frame t column t
            tile = _tile(img, i * kt + t, kt, h, w_, 1)
            if c == 1:
                expect = w[i, 0, t]
            else:
                expect = (0.5 + 0.5 * w[i, :, t] / np.abs(w[i]).max()).transpose(1, 2, 0)
            np.testing.assert_allclose(tile, expect, atol=1e-15)
    assert "frame" in ax.get_xlabel() and ax.get_ylabel() == "atom" and "3-D" in ax.get_title()
    assert (ax.images[0].colorbar is not None) == (c == 1)


def test_plot_features_1d_lines_are_the_atoms_on_one_scale():
    w = np.random.default_rng(6).standard_normal((5, 2, 6))
    fig = viz.plot_features(w, ncols=3)
    axes = _plot_axes(fig)
    assert len(axes) == 5
    m = np.abs(w).max()
    for i, ax in enumerate(axes):
        assert ax.get_title() == f"atom {i}"
        lines = [ln for ln in ax.lines if ln.get_label().startswith("channel")]
        assert len(lines) == 2
        for ch, ln in enumerate(lines):
            np.testing.assert_array_equal(ln.get_xdata(), np.arange(6))
            np.testing.assert_array_equal(ln.get_ydata(), w[i, ch])
        lo, hi = ax.get_ylim()  # one y-scale for every atom, covering all values
        assert lo == axes[0].get_ylim()[0] and hi == axes[0].get_ylim()[1] and lo <= -m and hi >= m
        assert bool(ax.get_xlabel()) == (i + 3 >= 5)  # the bottom of each column
        assert bool(ax.get_ylabel()) == (i % 3 == 0)  # the left column
    assert f"{m:.3g}" in fig._suptitle.get_text()
    atom = viz.plot_features(w, scale="atom")
    np.testing.assert_allclose(_plot_axes(atom)[2].lines[1].get_ydata(), w[2, 1] / np.abs(w[2]).max())


def test_plot_features_dense_weights_and_atom_shape():
    r = np.random.default_rng(7)
    w = r.standard_normal((4, 9))  # a square: 3x3 grey images
    img = _plot_axes(viz.plot_features(w, pad=0))[0].images[0].get_array()
    np.testing.assert_allclose(_tile(img, 3, 2, 3, 3, 0), w[3].reshape(3, 3))
    w = r.standard_normal((3, 10))  # not a square: 1-D signals
    axes = _plot_axes(viz.plot_features(w))
    np.testing.assert_array_equal(axes[1].lines[0].get_ydata(), w[1])
    w = r.standard_normal((2, 12))  # RGB 2x2 with atom_shape (C, h, w)
    img = _plot_axes(viz.plot_features(w, atom_shape=(3, 2, 2), pad=0))[0].images[0].get_array()
    atom = w[1].reshape(3, 2, 2)
    np.testing.assert_allclose(img[:, 2:], (0.5 + 0.5 * atom / np.abs(atom).max()).transpose(1, 2, 0))
    fig = viz.plot_features(r.standard_normal((20, 16)), max_atoms=5)
    assert "first 5 of 20 atoms" in _plot_axes(fig)[0].get_title()


def test_plot_features_bad_input():
    with pytest.raises(ValueError, match="weights must be dense"):
        viz.plot_features(np.zeros(5))
    with pytest.raises(ValueError, match="weights must be dense"):
        viz.plot_features(np.zeros((2, 1, 2, 2, 2, 2)))
    with pytest.raises(ValueError, match="weights has 2 channels"):
        viz.plot_features(np.zeros((4, 2, 3, 3)))
    with pytest.raises(ValueError, match="weights has 16 channels"):
        viz.plot_features(np.zeros((4, 16, 2, 3, 3)))
    with pytest.raises(ValueError, match="atom_shape"):
        viz.plot_features(np.zeros((4, 10)), atom_shape=(3, 3))
    with pytest.raises(ValueError, match="atom_shape"):
        viz.plot_features(np.zeros((4, 1, 3, 3)), atom_shape=(3, 3))
    with pytest.raises(ValueError, match="no atoms"):
        viz.plot_features(np.zeros((0, 1, 3, 3)))
    with pytest.raises(ValueError, match="scale"):
        viz.plot_features(np.zeros((4, 1, 3, 3)), scale="each")
    with pytest.raises(ValueError, match="max_atoms"):
        viz.plot_features(np.zeros((4, 1, 3, 3)), max_atoms=0)
    with pytest.raises(TypeError, match="weights must be real"):
        viz.plot_features(np.zeros((4, 1, 3, 3), dtype=complex))
    bad = np.zeros((4, 1, 3, 3))
    bad[2, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"weights has 1 non-finite values \(the first at index \(2, 0, 1, 1\)\)"):
        viz.plot_features(bad)
    with pytest.raises(ValueError, match="ncols"):
        viz.plot_features(np.zeros((4, 1, 3, 3)), ncols=0)


def _rel_err(x, r):
    return np.linalg.norm((x - r).ravel()) / np.linalg.norm(x.ravel())


def test_plot_reconstruction_grey_images():
    r = np.random.default_rng(8)
    x = r.standard_normal((6, 1, 5, 4))
    xr = 0.7 * x + 0.1 * r.standard_normal(x.shape)
    fig = viz.plot_reconstruction(x, xr, n_samples=3)
    axes = np.array(_plot_axes(fig)).reshape(3, 3)  # rows: input, reconstruction, residual
    for i in range(3):
        top, mid, bottom = axes[:, i]
        np.testing.assert_array_equal(top.images[0].get_array(), x[i, 0])
        np.testing.assert_array_equal(mid.images[0].get_array(), xr[i, 0])
        np.testing.assert_allclose(bottom.images[0].get_array(), x[i, 0] - xr[i, 0], rtol=0, atol=1e-15)
        # input and reconstruction on one scale; the residual on its own scale centred at 0
        lo, hi = min(x[i].min(), xr[i].min()), max(x[i].max(), xr[i].max())
        for ax in (top, mid):
            assert (ax.images[0].norm.vmin, ax.images[0].norm.vmax) == (lo, hi)
        m = np.abs(x[i] - xr[i]).max()
        assert bottom.images[0].norm.vmin == -m and bottom.images[0].norm.vmax == m
        assert f"{_rel_err(x[i], xr[i]):.3g}" in bottom.get_title()
        for ax in (top, mid, bottom):
            _assert_labelled(ax)
            assert ax.images[0].colorbar is not None
    assert len(_colorbar_axes(fig)) == 9


def test_plot_reconstruction_rgb_and_signals(tmp_path):
    r = np.random.default_rng(9)
    x = r.standard_normal((2, 3, 4, 4))
    xr = 0.5 * x
    axes = np.array(_plot_axes(viz.plot_reconstruction(x, xr))).reshape(3, 2)
    for i in range(2):
        lo, hi = min(x[i].min(), xr[i].min()), max(x[i].max(), xr[i].max())
        np.testing.assert_allclose(axes[0, i].images[0].get_array(), ((x[i] - lo) / (hi - lo)).transpose(1, 2, 0))
        np.testing.assert_allclose(axes[1, i].images[0].get_array(), ((xr[i] - lo) / (hi - lo)).transpose(1, 2, 0))
        res = x[i] - xr[i]
        np.testing.assert_allclose(axes[2, i].images[0].get_array(),
                                   (0.5 + 0.5 * res / np.abs(res).max()).transpose(1, 2, 0))
        assert f"{_rel_err(x[i], xr[i]):.3g}" in axes[2, i].get_title()
    # 1-D signals: lines; flat (N, D) with sample_shape; the file is written, folders created
    s = r.standard_normal((3, 2, 10))
    sr = s + 0.2 * r.standard_normal(s.shape)
    path = tmp_path / "a" / "b" / "rec.png"
    fig = viz.plot_reconstruction(s, sr, n_samples=5, path=path)
    assert path.stat().st_size > 1000
    axes = np.array(_plot_axes(fig)).reshape(3, 3)
    for i in range(3):
        for ch in range(2):
            np.testing.assert_array_equal(axes[0, i].lines[ch].get_ydata(), s[i, ch])
            np.testing.assert_array_equal(axes[1, i].lines[ch].get_ydata(), sr[i, ch])
            np.testing.assert_allclose(axes[2, i].lines[ch].get_ydata(), s[i, ch] - sr[i, ch], atol=1e-15)
        assert f"{_rel_err(s[i], sr[i]):.3g}" in axes[2, i].get_title()
        for ax in axes[:, i]:
            _assert_labelled(ax)
    flat = viz.plot_reconstruction(x.reshape(2, -1)[:, :16], xr.reshape(2, -1)[:, :16], sample_shape=(4, 4))
    np.testing.assert_array_equal(_plot_axes(flat)[0].images[0].get_array(), x.reshape(2, -1)[0, :16].reshape(4, 4))


def test_plot_reconstruction_bad_input():
    x = np.zeros((2, 1, 4, 4))
    with pytest.raises(ValueError, match="recons must have the shape"):
        viz.plot_reconstruction(x, np.zeros((2, 1, 4, 5)))
    with pytest.raises(ValueError, match="inputs has 2 channels"):
        viz.plot_reconstruction(np.zeros((2, 2, 4, 4)), np.zeros((2, 2, 4, 4)))
    with pytest.raises(ValueError, match="inputs must be signals"):
        viz.plot_reconstruction(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="sample_shape"):
        viz.plot_reconstruction(np.zeros((2, 10)), np.zeros((2, 10)), sample_shape=(3, 3))
    with pytest.raises(ValueError, match="n_samples"):
        viz.plot_reconstruction(x, x, n_samples=0)
    with pytest.raises(ValueError, match="recons has 2 non-finite"):
        viz.plot_reconstruction(x, np.where(np.arange(16).reshape(1, 1, 4, 4) == 5, np.inf, x))


def _lines_by_label(ax):
    return {ln.get_label(): ln for ln in ax.lines}


def test_plot_energy_of_a_tracked_lca_encode(tmp_path):
    from sparsecoding.lca import LCA

    r = np.random.default_rng(10)
    layer = LCA(12, 16, lambda_=0.2, lca_iters=40, tau=20, track_metrics=True, dtype="float64", seed=0,
                result_dir=str(tmp_path / "run"))
    s = layer.preprocess(r.standard_normal((5, 16)))
    out = layer.solve(s)
    a, W = np.asarray(out["acts"]), np.asarray(layer.weights)
    # what the last point must be, from the final codes: energy per sample and fraction active
    l2 = 0.5 * np.sum((s - a @ W) ** 2) / 5
    l1 = 0.2 * np.abs(a).sum() / 5
    fig = viz.plot_energy(layer)
    axes = _plot_axes(fig)
    energy, sparsity = axes[0], axes[1]
    lines = _lines_by_label(energy)
    assert set(lines) == {"L1: lambda ||a||_1", "L2: 1/2 ||s - Phi^T a||^2", "total energy"}
    for label, value, key in (("L1: lambda ||a||_1", l1, "L1"), ("L2: 1/2 ||s - Phi^T a||^2", l2, "L2"),
                              ("total energy", l1 + l2, "TotalEnergy")):
        ys = lines[label].get_ydata()
        np.testing.assert_array_equal(lines[label].get_xdata(), np.arange(1, 41))  # iterations 1..T
        np.testing.assert_allclose(ys, layer.metrics[key])
        np.testing.assert_allclose(ys[-1], value, rtol=1e-10)
    frac = sparsity.lines[0].get_ydata()
    assert frac[-1] == np.mean(a != 0) and len(frac) == 40
    for ax in axes:
        _assert_labelled(ax)
    # the LCA result: metrics and the stopping criterion at each check (log scale)
    axes = _plot_axes(viz.plot_energy(out))
    assert len(axes) == 3 and axes[2].get_yscale() == "log"
    np.testing.assert_array_equal(axes[2].lines[0].get_xdata(), [h[0] for h in out.history])
    np.testing.assert_array_equal(axes[2].lines[0].get_ydata(), [h[1] for h in out.history])
    # the metrics.csv the layer wrote (result_dir): the same curves
    axes = _plot_axes(viz.plot_energy(tmp_path / "run" / "metrics.csv"))
    np.testing.assert_allclose(_lines_by_label(axes[0])["total energy"].get_ydata(), layer.metrics["TotalEnergy"],
                               rtol=1e-7)


def test_plot_energy_of_a_solver_result_and_a_dict():
    from sparsecoding.ops.linop import DenseOperator
    from sparsecoding.solvers.lasso import fista

    r = np.random.default_rng(11)
    D = r.standard_normal((10, 8))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    s = r.standard_normal((3, 8))
    res = fista(DenseOperator(D), s, 0.1, max_iter=60, tol=0, check_every=5)
    axes = _plot_axes(viz.plot_energy(res))
    assert [ax.get_title() for ax in axes] == ["stopping criterion at each check", "energy at each check"]
    np.testing.assert_array_equal(axes[0].lines[0].get_xdata(), np.arange(5, 61, 5))
    np.testing.assert_array_equal(axes[0].lines[0].get_ydata(), [h[1] for h in res.history])
    # the total energy at each check: recomputed at the last check from the final codes
    assert axes[1].lines[0].get_ydata()[-1] == pytest.approx(
        0.5 * np.sum((s - res.codes @ D) ** 2) + 0.1 * np.abs(res.codes).sum(), rel=1e-6)
    axes = _plot_axes(viz.plot_energy({"energy": [3.0, 2.0, 1.5], "frac_active": [0.5, 0.2, 0.1], "gap": [1, 0.1, 0.01]}))
    assert [ax.get_title() for ax in axes] == ["energy per sample", "sparsity", "gap"]
    np.testing.assert_array_equal(axes[1].lines[0].get_ydata(), [0.5, 0.2, 0.1])
    with pytest.raises(ValueError, match="track_metrics=True"):
        from sparsecoding.lca import LCA

        viz.plot_energy(LCA(4, 9))
    with pytest.raises(ValueError, match=r"source\['energy'\] must be a 1-D"):
        viz.plot_energy({"energy": np.zeros((2, 2))})
    with pytest.raises(TypeError, match="source must be"):
        viz.plot_energy(3.0)


def _check_history_panels(fig, history, x="epoch"):
    keys = [k for k in dict.fromkeys(k for rec in history for k in rec)
            if k not in ("epoch", "step") and isinstance(history[0][k], (int, float)) and not isinstance(
                history[0][k], bool)]
    axes = _plot_axes(fig)
    assert [ax.get_title() for ax in axes] == keys  # one panel per numeric key, in order
    for ax, key in zip(axes, keys):
        (line,) = ax.lines
        np.testing.assert_array_equal(line.get_xdata(), [rec[x] for rec in history])
        np.testing.assert_allclose(line.get_ydata(), [rec[key] for rec in history], rtol=1e-12)
        assert ax.get_xlabel() == x and ax.get_ylabel() == key
    return keys


def test_plot_history_of_real_fits_of_two_families(tmp_path):
    from sparsecoding.lca import LCA
    from sparsecoding.plasticity.foldiak import FoldiakNetwork

    r = np.random.default_rng(12)
    layer = LCA(8, 16, lambda_=0.1, lca_iters=20, seed=0)
    hist = layer.fit(r.standard_normal((48, 16)), epochs=3, batch_size=16, progress=False, record_steps=True)
    keys = _check_history_panels(viz.plot_history(hist), hist)
    assert {"energy", "L1", "L2", "frac_active"} <= set(keys)
    _check_history_panels(viz.plot_history(hist, steps=True), hist.steps, x="step")
    net = FoldiakNetwork(16, 6, seed=0)
    fold = net.fit((r.random((32, 16)) < 0.2).astype(float), epochs=3, batch_size=8, seed=0)
    assert _check_history_panels(viz.plot_history(fold), fold) == ["activity", "presentations"]
    # the CSV the command lines write (History.to_csv): the same curves, read back from the file
    hist.to_csv(tmp_path / "history.csv")
    _check_history_panels(viz.plot_history(tmp_path / "history.csv", path=tmp_path / "out" / "h.png"), hist)
    assert (tmp_path / "out" / "h.png").stat().st_size > 1000
    # several runs overlaid, one line each; selected keys; log scale
    fig = viz.plot_history({"run a": hist, "run b": str(tmp_path / "history.csv")}, keys=["energy"], logy="energy")
    (ax,) = _plot_axes(fig)
    assert [ln.get_label() for ln in ax.lines] == ["run a", "run b"] and ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.lines[1].get_ydata(), hist.column("energy"))


def test_plot_history_of_a_cli_metrics_csv_and_bad_input(tmp_path):
    # the per-epoch metrics.csv of `sparsecoding lca learn` (a string column is skipped)
    path = tmp_path / "metrics.csv"
    rows = [{"epoch": 1, "lambda": 0.25, "energy": 3.5, "note": "warm"}, {"epoch": 2, "lambda": 0.25, "energy": 2.5,
                                                                         "note": "x"}]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    fig = viz.plot_history(path)
    assert [ax.get_title() for ax in _plot_axes(fig)] == ["lambda", "energy"]
    np.testing.assert_array_equal(_plot_axes(fig)[1].lines[0].get_ydata(), [3.5, 2.5])
    with pytest.raises(ValueError, match=r"keys \['loss'\]"):
        viz.plot_history(path, keys=["loss"])
    with pytest.raises(ValueError, match="no records"):
        viz.plot_history([])
    with pytest.raises(ValueError, match="record_steps=True"):
        from sparsecoding.training import History

        viz.plot_history(History([{"epoch": 1, "e": 1.0}]), steps=True)
    with pytest.raises(ValueError, match="does not exist"):
        viz.plot_history(tmp_path / "missing.csv")
    with pytest.raises(TypeError, match="history must be"):
        viz.plot_history(5)


def test_missing_matplotlib_names_the_plot_extra(monkeypatch):
    # matplotlib absent: importing it fails; every drawing function says how to install the extra
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    calls = [lambda: viz.plot_features(np.ones((2, 1, 2, 2))),
             lambda: viz.plot_reconstruction(np.ones((1, 4)), np.ones((1, 4))),
             lambda: viz.plot_energy({"energy": [1.0, 0.5]}),
             lambda: viz.plot_history([{"epoch": 1, "loss": 1.0}]),
             lambda: viz.save_curves({"a": [1, 2]}, "unused.png")]
    for call in calls:
        with pytest.raises(ImportError, match=r'pip install "sparsecoding\[plot\]"'):
            call()
