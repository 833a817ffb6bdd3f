"""Pictures: dictionaries, reconstructions, energy and sparsity over iterations, training curves.

matplotlib is an optional extra (``pip install "sparsecoding[plot]"``), imported when a picture is
drawn; without it the drawing functions raise an ImportError that names the extra. Figures are
built on ``matplotlib.figure.Figure`` directly, not through ``pyplot``: no window, no global
figure list to close, any backend (PNG files are written by Agg); nothing here calls ``show``.
Every ``plot_*`` function returns the Figure and, given ``path=``, also saves it there (folders
created). Inputs may live on any backend (cupy arrays are copied to the host).

What the pictures show (arrays channels-first, as everywhere in the library):

* :func:`plot_features`: the atoms ``w_i`` of a dictionary, by the rank of the weights:

  - dense ``(K, D)``: reshaped to ``atom_shape`` (default: a square grey image when ``D`` is a
    square, else a 1-D signal);
  - 1-D ``(K, C, k)``: one small line plot per atom, one line per channel, one y-scale for all;
  - 2-D ``(K, C, kh, kw)`` and 3-D ``(K, C, kt, kh, kw)``, one mosaic image (atom ``i`` at grid row
    ``i // cols``, column ``i % cols``; 3-D: atom ``i`` is row ``i``, its frames in time order left to
    right), ``pad`` pixels between tiles. Grey (``C = 1``): the values themselves on a diverging
    map centred at 0, limits ``+-m`` with ``m = max_i max|w_i|`` (``scale="all"``), or
    ``w_i / max|w_i|`` with limits ``+-1`` (``scale="atom"``), and a colour bar. RGB (``C = 3``):
    each atom rescaled on its own, ``0.5 + 0.5 w_i / max|w_i|`` (mid-grey is 0), as the title says.

* :func:`plot_reconstruction`: per sample ``x`` with reconstruction ``x^`` the three panels ``x``,
  ``x^`` and ``x - x^``, titled with the relative error ``||x - x^|| / ||x||``. Grey images: ``x``
  and ``x^`` share the limits ``[min, max]`` of both, the residual has its own diverging scale
  ``+-max|x - x^|``; each has a colour bar. RGB: ``x`` and ``x^`` mapped by the same
  ``(v - lo) / (hi - lo)`` (``lo, hi`` over both), the residual by ``0.5 + 0.5 r / max|r|``. 1-D:
  lines, ``x`` and ``x^`` on one y-scale.

* :func:`plot_energy`: over the iterations of one encode, the energy terms per sample
  ``lambda ||a||_1`` (L1), ``1/2 ||s - Phi^T a||^2`` (L2) and their sum (TotalEnergy), the fraction
  of active units, and the solver's monitored value (the relative duality gap, log scale) with the
  total energy at each check.

* :func:`plot_history`: every numeric column of a training history against the epoch (or step),
  one panel per column.

:func:`tile_dictionary`, :func:`save_dictionary` and :func:`save_curves` are the earlier helpers;
:func:`make_feature_grid` is lca-pytorch's ``lcapt.analysis.make_feature_grid``.
"""
from __future__ import annotations

import csv
import math
import numbers
import os
from collections.abc import Mapping

import numpy as np

from .backend import to_numpy

__all__ = ["plot_features", "plot_reconstruction", "plot_energy", "plot_history", "tile_dictionary",
           "make_feature_grid", "save_dictionary", "save_curves"]

PLOT_EXTRA = 'pip install "sparsecoding[plot]"'


def _figure(what, **kwargs):
    """A new ``matplotlib.figure.Figure`` (no pyplot); ImportError naming the ``plot`` extra without matplotlib."""
    try:
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(f"{what} draws with matplotlib, an optional extra of sparsecoding that is not installed: "
                          f"{PLOT_EXTRA}") from exc
    return Figure(**kwargs)


def _save(fig, path, dpi=100):
    if path is not None:
        _makedirs(path)
        fig.savefig(path, dpi=dpi)
    return fig


def _real_array(x, name):
    """Host float64 copy of a real numeric array; TypeError naming ``name`` otherwise."""
    a = to_numpy(x)
    if a.dtype.kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {a.dtype} (pass {name}.real or abs({name}))")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    return a.astype(np.float64)


def _check_finite(a, name):
    bad = ~np.isfinite(a)
    if bad.any():
        first = np.argwhere(bad)[0]
        raise ValueError(f"{name} has {int(bad.sum())} non-finite values (the first at index {tuple(int(i) for i in first)}):"
                         f" nothing sensible to draw")
    return a


def _ticks(n, most=16):
    """Indices 0..n-1 thinned to at most ``most`` evenly spaced ones (tick labels stay legible)."""
    step = max(1, math.ceil(n / most))
    return list(range(0, n, step))


def _integer_locator():
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415  (only once a figure exists)

    return MaxNLocator(integer=True)


def _symmetric_max(a):
    m = float(np.max(np.abs(a))) if a.size else 0.0
    return m if m > 0 else 1.0  # an all-zero array still gets a valid colour range


# ------------------------------------------------------------------------------------------ features
def _atoms(weights, atom_shape):
    """The weights as channels-first atoms ``(K, C, *kernel)`` with 1-3 kernel dimensions."""
    w = _real_array(weights, "weights")
    if w.ndim < 2 or w.ndim > 5:
        raise ValueError(f"weights must be dense (K, D), 1-D conv (K, C, k), 2-D conv (K, C, kh, kw) or 3-D conv "
                         f"(K, C, kt, kh, kw), got shape {tuple(w.shape)}")
    if w.shape[0] == 0 or 0 in w.shape:
        raise ValueError(f"weights has no atoms or empty atoms (shape {tuple(w.shape)}): nothing to draw")
    _check_finite(w, "weights")
    if atom_shape is not None and w.ndim != 2:
        raise ValueError(f"atom_shape is for dense (K, D) weights; these are already shaped {tuple(w.shape)}")
    if w.ndim == 2:
        k, d = w.shape
        if atom_shape is None:
            side = math.isqrt(d)
            atom_shape = (side, side) if side * side == d and d > 1 else (d,)
        atom_shape = tuple(int(v) for v in np.atleast_1d(atom_shape))
        if len(atom_shape) not in (1, 2, 3, 4) or math.prod(atom_shape) != d:
            raise ValueError(f"atom_shape {atom_shape} must be (L,), (h, w), (C, h, w) or (C, kt, h, w) with "
                             f"{d} values per atom")
        # (L,) a 1-D signal, (h, w) a grey image: one channel; (C, ...) channels first
        w = w.reshape(k, *((1, *atom_shape) if len(atom_shape) <= 2 else atom_shape))
    return w


def _grid_shape(k, ncols):
    if ncols is not None and (isinstance(ncols, bool) or not isinstance(ncols, numbers.Integral) or ncols < 1):
        raise ValueError(f"ncols must be an integer >= 1 or None, got {ncols!r}")
    cols = int(ncols) if ncols is not None else int(math.ceil(math.sqrt(k)))
    cols = min(cols, k)
    return cols, int(math.ceil(k / cols))


def _mosaic(tiles, layout, pad, fill):
    """``tiles[i]`` ``(h, w[, 3])`` placed at ``layout[i] = (row, col)`` with ``pad`` pixels of ``fill``."""
    h, w = tiles.shape[1:3]
    rows = 1 + max(r for r, _ in layout)
    cols = 1 + max(c for _, c in layout)
    img = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, *tiles.shape[3:]), fill)
    for tile, (r, c) in zip(tiles, layout):
        img[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = tile
    return img


def plot_features(weights, *, atom_shape=None, scale="all", max_atoms=None, ncols=None, pad=1, title=None,
                  path=None, dpi=100):
    """Draw the atoms of a dictionary; returns the matplotlib Figure (saved to ``path`` when given).

    Parameters
    ----------
    weights : channels-first atoms (host or device array): dense ``(K, D)``, 1-D conv ``(K, C, k)``,
        2-D conv ``(K, C, kh, kw)`` or 3-D conv ``(K, C, kt, kh, kw)`` (``C`` 1 or 3 for images)
    atom_shape : dense weights only: the shape of one atom, ``(L,)`` (1-D signal), ``(h, w)`` (grey
        image), ``(C, h, w)`` or ``(C, kt, h, w)``; default ``(sqrt D, sqrt D)`` when ``D`` is a
        square, else ``(D,)``
    scale : grey images: ``"all"`` shows the values on one colour scale ``+-max|w|`` (atoms comparable),
        ``"atom"`` each atom divided by its own ``max|w_i|`` (scale ``+-1``); 1-D: ``"all"`` one y-scale,
        ``"atom"`` each atom divided by its ``max|w_i|``. RGB atoms are always rescaled per atom
    max_atoms : draw only the first ``max_atoms`` atoms (the title says so)
    ncols : atoms per row (1-D and 2-D; default ``ceil(sqrt(K))``)
    pad : pixels between image tiles
    title : figure title (default: what is drawn and how it is scaled)
    path : optional file to save the figure to (folders created)

    The mosaic layout and the normalisations are those of the module docstring. ValueError for
    shapes it cannot draw (an image atom with other than 1 or 3 channels, a rank outside 2-5, an
    ``atom_shape`` that does not fit); TypeError for complex or non-numeric weights.
    """
    if scale not in ("all", "atom"):
        raise ValueError(f"scale must be 'all' or 'atom', got {scale!r}")
    if isinstance(pad, bool) or not isinstance(pad, numbers.Integral) or pad < 0:
        raise ValueError(f"pad must be an integer >= 0, got {pad!r}")
    w = _atoms(weights, atom_shape)
    k_all = w.shape[0]
    if max_atoms is not None:
        if isinstance(max_atoms, bool) or not isinstance(max_atoms, numbers.Integral) or max_atoms < 1:
            raise ValueError(f"max_atoms must be an integer >= 1 or None, got {max_atoms!r}")
        w = w[:max_atoms]
    k, c = w.shape[:2]
    shown = f"{k} atoms" if k == k_all else f"first {k} of {k_all} atoms"
    if w.ndim == 3:
        return _save(_features_1d(w, shown, scale, ncols, title), path, dpi)
    if c not in (1, 3):
        raise ValueError(f"weights has {c} channels: image atoms are drawn grey (1 channel) or RGB (3 channels); "
                         f"pass weights[:, [c]] to see channel c alone")
    return _save(_features_image(w, shown, scale, ncols, pad, title), path, dpi)


def _features_1d(w, shown, scale, ncols, title):
    k, c, length = w.shape
    if scale == "atom":
        w = w / np.maximum(np.abs(w).max(axis=(1, 2), keepdims=True), 1e-300)
    m = _symmetric_max(w)
    cols, rows = _grid_shape(k, ncols)
    fig = _figure("plot_features", figsize=(min(1.9 * cols + 0.8, 16), min(1.5 * rows + 1.0, 40)),
                  layout="constrained")
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    taps = np.arange(length)
    for i, ax in enumerate(axes):
        if i >= k:
            ax.remove()
            continue
        for ch in range(c):
            ax.plot(taps, w[i, ch], lw=1.2, label=f"channel {ch}")
        ax.axhline(0.0, color="0.6", lw=0.6)
        ax.set_title(f"atom {i}", fontsize=8)
        ax.tick_params(labelsize=7)
        if i + cols >= k:  # nothing below: the bottom of its column
            ax.set_xlabel("tap (kernel position)", fontsize=8)
        if i % cols == 0:
            ax.set_ylabel("weight" if scale == "all" else "w / max|w|", fontsize=8)
    axes[0].set_ylim(-1.08 * m, 1.08 * m)
    if c > 1:
        axes[0].legend(fontsize=6)
    how = (f"one y-scale for all atoms, +-{m:.3g}" if scale == "all" else "each atom divided by its max|w|")
    fig.suptitle(f"{title}\n{how}" if title else f"{shown}, 1-D, {c} channel(s): {how}", fontsize=10)
    return fig


def _features_image(w, shown, scale, ncols, pad, title):
    k, c = w.shape[:2]
    frames = w.ndim == 5
    if frames:  # (K, C, kt, h, w): atom i is row i, its frames t left to right
        kt = w.shape[2]
        tiles = w.transpose(0, 2, 1, 3, 4).reshape(k * kt, c, *w.shape[3:])
        layout = [(i, t) for i in range(k) for t in range(kt)]
        owner = np.repeat(np.arange(k), kt)
    else:
        cols_grid, _ = _grid_shape(k, ncols)
        tiles = w
        layout = [divmod(i, cols_grid) for i in range(k)]
        owner = np.arange(k)
    h, ww = tiles.shape[2:]
    rows_n = 1 + max(r for r, _ in layout)
    cols_n = 1 + max(q for _, q in layout)
    width_px, height_px = cols_n * (ww + pad) + pad, rows_n * (h + pad) + pad
    zoom = min(9.0 / width_px, 9.0 / height_px, 0.12)  # inches per pixel: legible, at most 9 inches
    fig = _figure("plot_features", figsize=(max(width_px * zoom + 1.6, 4.0), max(height_px * zoom + 1.2, 3.0)),
                  layout="constrained")
    ax = fig.add_subplot()
    atom_max = np.abs(w).reshape(k, -1).max(axis=1)
    if c == 1:
        import matplotlib  # noqa: PLC0415  (present: _figure succeeded)

        if scale == "atom":
            vals = tiles[:, 0] / np.maximum(atom_max[owner], 1e-300)[:, None, None]
            m, label, how = 1.0, "w / max|w| of the atom", "each atom divided by its max|w|"
        else:
            vals = tiles[:, 0]
            m, label, how = _symmetric_max(w), "weight", "values on one scale"
        img = np.ma.masked_invalid(_mosaic(vals, layout, pad, np.nan))
        cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.3")  # the gaps dark, apart from 0 (white)
        im = ax.imshow(img, cmap=cmap, vmin=-m, vmax=m, interpolation="nearest")
        fig.colorbar(im, ax=ax, label=label, shrink=0.8)
        kind = "grey"
        if not frames and k % cols_grid:  # the unused cells of the last row: blank, not gap-coloured
            from matplotlib.patches import Rectangle  # noqa: PLC0415

            r0, q0 = divmod(k, cols_grid)
            x0, y0 = pad + q0 * (ww + pad) - 0.5, pad + r0 * (h + pad) - 0.5
            ax.add_patch(Rectangle((x0, y0), img.shape[1] - 0.5 - x0, img.shape[0] - 0.5 - y0, facecolor="white",
                                   edgecolor="none"))
    else:
        rgb = 0.5 + 0.5 * tiles / np.maximum(atom_max[owner], 1e-300)[:, None, None, None]
        im = ax.imshow(_mosaic(rgb.transpose(0, 2, 3, 1), layout, pad, 1.0), interpolation="nearest")
        how = "each atom rescaled on its own to 0.5 + 0.5 w / max|w| (grey = 0)"
        kind = "RGB"
    centres_x = [pad + q * (ww + pad) + (ww - 1) / 2 for q in range(cols_n)]
    centres_y = [pad + r * (h + pad) + (h - 1) / 2 for r in range(rows_n)]
    xs, ys = _ticks(cols_n), _ticks(rows_n)
    ax.set_xticks([centres_x[q] for q in xs], [str(q) for q in xs], fontsize=7)
    if frames:
        ax.set_yticks([centres_y[r] for r in ys], [str(r) for r in ys], fontsize=7)
        ax.set_xlabel("frame t (time, left to right)")
        ax.set_ylabel("atom")
        what = f"{shown}, 3-D {kind} ({w.shape[2]} frames of {h}x{ww})"
    else:
        ax.set_yticks([centres_y[r] for r in ys], [str(r * cols_n) for r in ys], fontsize=7)
        ax.set_xlabel("column c (atom = first atom of the row + c)")
        ax.set_ylabel("first atom of the row")
        what = f"{shown}, 2-D {kind} {h}x{ww}"
    ax.set_title(f"{title}\n{how}" if title else f"{what}: {how}", fontsize=9)
    return fig


# ------------------------------------------------------------------------------------ reconstruction
def _samples(x, name, sample_shape):
    """Samples as channels-first ``(N, C, L)`` signals or ``(N, C, H, W)`` images."""
    a = _real_array(x, name)
    if sample_shape is not None:
        if a.ndim != 2:
            raise ValueError(f"sample_shape is for flat (N, D) {name}; these are already shaped {tuple(a.shape)}")
        shape = tuple(int(v) for v in np.atleast_1d(sample_shape))
        if len(shape) not in (1, 2, 3) or math.prod(shape) != a.shape[1]:
            raise ValueError(f"sample_shape {shape} must be (L,), (H, W) or (C, H, W) with {a.shape[1]} values "
                             f"per sample")
        a = a.reshape(a.shape[0], *((1, *shape) if len(shape) <= 2 else shape))
    elif a.ndim == 2:
        a = a[:, None]  # (N, L): single-channel signals
    if a.ndim not in (3, 4):
        raise ValueError(f"{name} must be signals (N, L) / (N, C, L) or images (N, C, H, W) (flat (N, D) with "
                         f"sample_shape), got shape {tuple(to_numpy(x).shape)}")
    if a.shape[0] == 0 or 0 in a.shape:
        raise ValueError(f"{name} has no samples or empty samples (shape {tuple(a.shape)}): nothing to draw")
    _check_finite(a, name)
    if a.ndim == 4 and a.shape[1] not in (1, 3):
        raise ValueError(f"{name} has {a.shape[1]} channels: images are drawn grey (1 channel) or RGB (3 channels); "
                         f"pass {name}[:, [c]] to see channel c alone")
    return a


def _relative_errors(inputs, recons):
    """``||x_i - x^_i|| / ||x_i||`` per sample (inf where ``x_i = 0`` and ``x^_i != 0``, 0 where both are 0)."""
    x = to_numpy(inputs).reshape(len(inputs), -1).astype(np.float64)
    r = to_numpy(recons).reshape(len(recons), -1).astype(np.float64)
    num, den = np.linalg.norm(x - r, axis=1), np.linalg.norm(x, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(num == 0, 0.0, num / den)


def plot_reconstruction(inputs, recons, *, n_samples=4, sample_shape=None, title=None, path=None, dpi=100):
    """Input / reconstruction / residual panels of the first ``n_samples`` samples; returns the Figure.

    Parameters
    ----------
    inputs, recons : the samples ``x`` and their reconstructions ``x^`` (e.g. an LCA layer's
        preprocessed inputs and ``Phi^T a``), the same shape: 1-D signals ``(N, L)`` / ``(N, C, L)``,
        grey or RGB images ``(N, 1|3, H, W)``, or flat ``(N, D)`` with ``sample_shape``; host or device
    n_samples : how many samples (columns) to draw, the first ones
    sample_shape : flat inputs only: ``(L,)``, ``(H, W)`` or ``(C, H, W)`` of one sample
    title, path : figure title; optional file to save to (folders created)

    Rows: input, reconstruction, residual ``x - x^``; each column's residual is titled with
    the relative error ``||x - x^|| / ||x||``. Scales as in the module docstring.
    """
    x = _samples(inputs, "inputs", sample_shape)
    r = _samples(recons, "recons", sample_shape)
    if x.shape != r.shape:
        raise ValueError(f"recons must have the shape of inputs {tuple(x.shape)}, got {tuple(r.shape)}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    n = min(int(n_samples), x.shape[0])
    x, r = x[:n], r[:n]
    res = x - r
    err = _relative_errors(x, r)
    image = x.ndim == 4
    fig = _figure("plot_reconstruction", figsize=(max(2.9 * n, 4.5), 7.8 if image else 6.6), layout="constrained")
    axes = fig.subplots(3, n, squeeze=False)
    import matplotlib  # noqa: PLC0415  (present: _figure succeeded)

    for i in range(n):
        top, mid, bottom = axes[:, i]
        top.set_title(f"sample {i}: input", fontsize=9)
        mid.set_title("reconstruction", fontsize=9)
        bottom.set_title(f"residual, ||x - x^||/||x|| = {err[i]:.3g}", fontsize=9)
        if not image:
            pos = np.arange(x.shape[2])
            lo, hi = min(x[i].min(), r[i].min()), max(x[i].max(), r[i].max())
            margin = 0.05 * (hi - lo) if hi > lo else 1.0
            for ax, data in ((top, x[i]), (mid, r[i]), (bottom, res[i])):
                for ch in range(data.shape[0]):
                    ax.plot(pos, data[ch], lw=1.0, label=f"channel {ch}")
                ax.set_xlabel("position", fontsize=8)
                ax.set_ylabel("value", fontsize=8)
                ax.tick_params(labelsize=7)
            top.set_ylim(lo - margin, hi + margin)
            mid.set_ylim(lo - margin, hi + margin)
            if x.shape[1] > 1 and i == 0:
                top.legend(fontsize=6)
            continue
        for ax in (top, mid, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("x (pixel)", fontsize=8)
            ax.set_ylabel("y (pixel)", fontsize=8)
        lo, hi = min(x[i].min(), r[i].min()), max(x[i].max(), r[i].max())
        m = _symmetric_max(res[i])
        if x.shape[1] == 1:
            for ax, data in ((top, x[i, 0]), (mid, r[i, 0])):
                im = ax.imshow(data, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
                fig.colorbar(im, ax=ax, shrink=0.85).ax.tick_params(labelsize=7)
            im = bottom.imshow(res[i, 0], cmap=matplotlib.colormaps["RdBu_r"], vmin=-m, vmax=m,
                               interpolation="nearest")
            fig.colorbar(im, ax=bottom, shrink=0.85).ax.tick_params(labelsize=7)
        else:
            span = hi - lo if hi > lo else 1.0
            for ax, data in ((top, x[i]), (mid, r[i])):
                ax.imshow(np.clip((data - lo) / span, 0, 1).transpose(1, 2, 0), interpolation="nearest")
            bottom.imshow(np.clip(0.5 + 0.5 * res[i] / m, 0, 1).transpose(1, 2, 0), interpolation="nearest")
    how = ("\nRGB: x and x^ on one scale (v - lo) / (hi - lo), residual 0.5 + 0.5 r / max|r| (grey = 0)"
           if image and x.shape[1] == 3 else "")
    fig.suptitle((title or "input x, reconstruction x^, residual x - x^") + how, fontsize=10)
    return _save(fig, path, dpi)


# ------------------------------------------------------------------------------------------- energy
_ENERGY_TERMS = {"L1": "L1: lambda ||a||_1", "L2": "L2: 1/2 ||s - Phi^T a||^2", "TotalEnergy": "total energy"}


def _is_sparsity(name):
    low = name.lower()
    return "active" in low or "sparsity" in low


def _is_energy(name):
    return name in _ENERGY_TERMS or "energy" in name.lower()


def _curve(values, name):
    a = _real_array(values, name)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of values over iterations, got shape {tuple(a.shape)}")
    return a


def _read_csv(path):
    """Rows of a CSV file as dicts of floats (cells that are not numbers are dropped)."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rec = {}
            for key, cell in row.items():
                if key is None or cell is None or cell == "":
                    continue
                try:
                    rec[key] = float(cell)
                except ValueError:
                    rec[key] = cell
            rows.append(rec)
    return rows


def _energy_panels(source):
    """``[(panel title, y label, log y, {curve label: (x, y)})]`` and the x label."""
    panels = []
    metrics, result = None, None
    if isinstance(source, (str, os.PathLike)):
        # a layer's result_dir/metrics.csv: ForwardPass, LCAIter, L1, L2, TotalEnergy, FractionActive
        rows = _read_csv(source)
        if not rows or "LCAIter" not in rows[0]:
            raise ValueError(f"source {os.fspath(source)!r} is not an LCA layer's metrics.csv (columns ForwardPass, "
                             f"LCAIter, L1, L2, TotalEnergy, FractionActive)")
        last = max(r.get("ForwardPass", 0) for r in rows)
        rows = [r for r in rows if r.get("ForwardPass", 0) == last]
        metrics = {k: np.array([r[k] for r in rows]) for k in ("L1", "L2", "TotalEnergy", "FractionActive")
                   if all(k in r for r in rows)}
    elif isinstance(source, Mapping):
        metrics = {str(k): _curve(v, f"source[{k!r}]") for k, v in source.items()}
        if not metrics:
            raise ValueError("source is an empty dict: nothing to plot")
    elif hasattr(source, "history") and hasattr(source, "n_iter"):  # a RelaxResult / SolveResult / LCAResult
        result = source
        metrics = getattr(source, "metrics", None)
    elif hasattr(source, "metrics"):  # an LCA layer after an encode
        metrics = source.metrics
        if metrics is None:
            raise ValueError("source has no metrics: construct the layer with track_metrics=True and encode, or pass "
                             "the result of layer.solve(...)")
    else:
        raise TypeError(f"source must be an LCA layer with track_metrics=True, a solver result (SolveResult, "
                        f"LCAResult), a dict of arrays or a metrics.csv path, got {type(source).__name__}")
    x_label = "LCA iteration" if not isinstance(source, Mapping) else "iteration"
    if metrics:
        metrics = {k: _curve(v, f"metrics[{k!r}]") for k, v in metrics.items()}
        energy = {(_ENERGY_TERMS.get(k, k)): (np.arange(1, len(v) + 1), v) for k, v in metrics.items()
                  if _is_energy(k) or k in ("L1", "L2")}
        sparse = {k: (np.arange(1, len(v) + 1), v) for k, v in metrics.items() if _is_sparsity(k)}
        if energy:
            panels.append(("energy per sample", "energy", False, energy))
        if sparse:
            panels.append(("sparsity", "fraction of active units", False, sparse))
        for k, v in metrics.items():
            if k not in ("L1", "L2") and not _is_energy(k) and not _is_sparsity(k):
                panels.append((k, k, False, {k: (np.arange(1, len(v) + 1), v)}))
    if result is not None:
        hist = list(result.history or [])
        if hist:
            steps = np.array([h[0] for h in hist], dtype=np.float64)
            values = np.array([h[1] for h in hist], dtype=np.float64)
            from .lca.dynamics import LCAResult  # noqa: PLC0415
            from .solvers.lasso import SolveResult  # noqa: PLC0415

            if isinstance(result, LCAResult):
                what = "relative duality gap\n(relative change of u: other transfers)"
            elif isinstance(result, SolveResult):
                what = "relative duality gap"
            else:
                what = "monitored value"
            positive = values[values > 0]
            panels.append(("stopping criterion at each check", what, positive.size > 0, {what: (steps, values)}))
            eh = np.asarray(getattr(result, "energy_history", []) or [], dtype=np.float64)
            if eh.size == steps.size and not metrics:
                panels.append(("energy at each check", "total energy over the batch", False,
                               {"total energy": (steps, eh)}))
        if not panels:
            raise ValueError("source has no history to draw: the solve ran no check (n_iter < check_every?) and "
                             "tracked no metrics (track_metrics=True)")
        x_label = "iteration"
    if not panels:
        raise ValueError("source has nothing to draw (no energy or sparsity values)")
    return panels, x_label


def plot_energy(source, *, title=None, path=None, dpi=100):
    """Energy and sparsity over the iterations of one encode; returns the Figure.

    Parameters
    ----------
    source : what the solvers give:

        - an LCA layer (``track_metrics=True``) after an encode: its ``metrics`` (per LCA
          iteration ``L1 = lambda ||a||_1``, ``L2 = 1/2 ||s - Phi^T a||^2``, ``TotalEnergy`` per
          sample and ``FractionActive``; a FISTA layer has one value, of the final codes);
        - a solver result (``SolveResult`` from ``ista``/``fista``/``coordinate_descent``, the
          ``LCAResult`` of ``layer.solve``, a ``RelaxResult``): its ``history`` of ``(iteration,
          monitored value)`` at each check (the relative duality gap; log scale) and
          ``energy_history`` (total energy over the batch at each check), plus ``metrics`` when
          tracked;
        - a dict ``name -> 1-D array`` (energy-like names, containing "energy" or L1/L2, share
          one panel; names containing "active" or "sparsity" the sparsity panel; others a
          panel each);
        - the path of a layer's ``result_dir/metrics.csv`` (its last forward pass).

    title, path : figure title; optional file to save to (folders created)
    """
    panels, x_label = _energy_panels(source)
    n = len(panels)
    fig = _figure("plot_energy", figsize=(4.4 * n, 3.6), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, ylabel, logy, curves) in zip(axes, panels):
        for label, (xs, ys) in curves.items():
            ax.plot(xs, ys, marker="o" if len(xs) <= 20 else None, ms=3, lw=1.3, label=label)
        if logy:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(x_label)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.xaxis.set_major_locator(_integer_locator())
        if len(curves) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title or "energy and sparsity over the iterations", fontsize=11)
    return _save(fig, path, dpi)


# ------------------------------------------------------------------------------------------ history
_COUNTERS = ("epoch", "step")


def _is_number(v):
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, numbers.Real):
        return True
    dtype = getattr(v, "dtype", None)
    return dtype is not None and getattr(v, "shape", None) == () and np.dtype(dtype).kind in "iuf"


def _records(history, steps, name="history"):
    """A training history as a list of dict records (numbers as floats)."""
    if isinstance(history, (str, os.PathLike)):
        if not os.path.exists(history):
            raise ValueError(f"{name} file {os.fspath(history)!r} does not exist")
        return _read_csv(history)
    if steps:
        if not hasattr(history, "steps"):
            raise ValueError(f"steps=True needs a History with per-step records ({name} is a "
                             f"{type(history).__name__})")
        history = history.steps
        if not history:
            raise ValueError(f"{name} has no per-step records: fit with record_steps=True")
    if isinstance(history, Mapping):  # columns: name -> values
        cols = {str(k): np.atleast_1d(to_numpy(v)) for k, v in history.items()}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            raise ValueError(f"the columns of {name} must have one length, got lengths {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        return [{k: v[i] for k, v in cols.items()} for i in range(n)]
    try:
        records = list(history)
    except TypeError:
        raise TypeError(f"{name} must be a History (list of dict records), a dict of columns or a CSV path, got "
                        f"{type(history).__name__}") from None
    if not all(isinstance(r, Mapping) for r in records):
        raise TypeError(f"{name} must be a list of dict records (a History), a dict of columns or a CSV path")
    return records


def _is_runs(history):
    """A mapping ``run label -> history`` (not a mapping of columns)."""
    if not isinstance(history, Mapping) or not history:
        return False
    return all(isinstance(v, (str, os.PathLike)) or (isinstance(v, (list, tuple)) and v and
                                                     all(isinstance(r, Mapping) for r in v))
               for v in history.values())


def plot_history(history, *, keys=None, steps=False, labels=None, logy=(), ncols=3, title=None, path=None,
                 dpi=100):
    """Training curves: one panel per numeric column of a history, against the epoch; returns the Figure.

    Parameters
    ----------
    history : what any model's ``fit`` returns (a :class:`~sparsecoding.training.History`: a list of
        per-epoch dict records), a list of dicts, a dict of columns ``name -> values``, or the path of a
        CSV file the command lines write (``history.csv``, ``metrics.csv``); or a dict
        ``run label -> one of those`` to overlay several runs (one line per run in each panel)
    keys : the columns to draw, in order (default: every numeric column but the x column and the
        counters ``epoch`` / ``step``, in order of first appearance); ValueError for a key no record has
    steps : draw ``history.steps`` (per-batch records, ``fit(..., record_steps=True)``) against the step
    labels : optional dict ``column -> y-axis label`` (default: the column's name)
    logy : columns drawn on a log scale (a name, or an iterable of names; True for all)
    ncols : panels per row
    title, path : figure title; optional file to save to (folders created)

    The x axis is the ``step`` column when the records have one (per-step records, ``steps=True``),
    else ``epoch``, else the record's position (1-based). A record without a column (or with a value
    that is not a number) leaves a gap in that column's curve; booleans and strings are not drawn.
    """
    runs = dict(history) if _is_runs(history) else {None: history}
    tables = {label: _records(h, steps, "history" if label is None else f"history[{label!r}]")
              for label, h in runs.items()}
    if all(not t for t in tables.values()):
        raise ValueError("history has no records: nothing to plot")
    first = next(t for t in tables.values() if t)
    # per-step records carry both counters: the finer one, step, is the x axis
    x_key = "step" if steps else next((k for k in ("step", "epoch") if any(k in r for r in first)), None)
    found = list(dict.fromkeys(k for t in tables.values() for r in t for k, v in r.items()
                               if _is_number(v) and k not in _COUNTERS and k != x_key))
    if keys is None:
        keys = found
    else:
        keys = [keys] if isinstance(keys, str) else list(keys)
        missing = [k for k in keys if k not in found]
        if missing:
            raise ValueError(f"keys {missing} are not numeric columns of history (it has {found})")
    if not keys:
        raise ValueError(f"history has no numeric column to plot (columns: "
                         f"{list(dict.fromkeys(k for t in tables.values() for r in t for k in r))})")
    if logy is True:
        logy = set(keys)
    else:
        logy = {logy} if isinstance(logy, str) else set(logy or ())
    if isinstance(ncols, bool) or not isinstance(ncols, numbers.Integral) or ncols < 1:
        raise ValueError(f"ncols must be an integer >= 1, got {ncols!r}")
    cols = min(int(ncols), len(keys))
    rows = int(math.ceil(len(keys) / cols))
    fig = _figure("plot_history", figsize=(4.2 * cols, 3.2 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(keys):]:
        ax.remove()
    for ax, key in zip(axes, keys):
        for label, table in tables.items():
            xs, ys = [], []
            for i, rec in enumerate(table):
                v = rec.get(key)
                x = rec.get(x_key, i + 1) if x_key is not None else i + 1
                xs.append(float(x) if _is_number(x) else float(i + 1))
                ys.append(float(v) if _is_number(v) else np.nan)
            ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, ms=3, lw=1.3, label=label)
        if key in logy:
            ax.set_yscale("log")
        ax.set_title(key, fontsize=10)
        ax.set_ylabel((labels or {}).get(key, key))
        ax.set_xlabel(x_key or "record")
        ax.xaxis.set_major_locator(_integer_locator())
        if len(tables) > 1:
            ax.legend(fontsize=8)
    n = max(len(t) for t in tables.values())
    what = f"{n} {x_key or 'record'}{'s' if n != 1 else ''}"
    fig.suptitle(title or f"training history ({what})", fontsize=11)
    return _save(fig, path, dpi)


# ------------------------------------------------------------------------ earlier helpers, lca-pytorch
def tile_dictionary(weights, shape=None, pad=1, per_atom=True):
    """Arrange atoms into one image.

    Parameters
    ----------
    weights : (K, C, h, w) conv atoms, or (K, D) dense atoms with ``shape=(C, h, w)`` or ``(h, w)``
    per_atom : scale each atom to [0, 1] symmetrically around 0 (else one scale for all)

    Returns
    -------
    (H, W, 3) or (H, W) float image in [0, 1]

    Raises
    ------
    ValueError for zero atoms (K = 0), a bad shape (``(K, D)`` atoms that do not fill
    ``shape``, or a non-square D without ``shape``) or a negative ``pad``; TypeError for
    complex or non-numeric weights.
    """
    w = to_numpy(weights)
    if w.dtype.kind == "c":
        raise TypeError(f"weights must be real, got complex dtype {w.dtype} (pass weights.real or abs(weights))")
    if w.dtype.kind not in "biuf":
        raise TypeError(f"weights must be a real numeric array, got dtype {w.dtype}")
    w = w.astype(np.float64)
    pad = int(pad)
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if w.ndim in (2, 4) and w.shape[0] == 0:
        raise ValueError(f"weights has no atoms (K = 0, shape {tuple(w.shape)}): nothing to tile")
    if w.ndim == 2:
        if shape is None:
            side = int(round(math.sqrt(w.shape[1])))
            if side * side != w.shape[1]:
                raise ValueError(f"dense atoms of length {w.shape[1]} are not square images: pass shape=(h, w) "
                                 f"or (C, h, w)")
            shape = (side, side)
        shape = tuple(int(v) for v in shape)
        if len(shape) not in (2, 3) or math.prod(shape) != w.shape[1]:
            raise ValueError(f"shape {shape} must be (h, w) or (C, h, w) with {w.shape[1]} values per atom")
        w = w.reshape(w.shape[0], *((1, *shape) if len(shape) == 2 else shape))
    if w.ndim != 4:
        raise ValueError(f"weights must be (K, C, h, w) or (K, D), got shape {tuple(w.shape)}")
    k, c, h, ww = w.shape
    if 0 in (c, h, ww):
        raise ValueError(f"weights has empty atoms (shape {tuple(w.shape)}): nothing to tile")
    if c not in (1, 3):
        w = w[:, :1]
        c = 1
    axes = (1, 2, 3)
    scale = np.abs(w).max(axis=axes, keepdims=True) if per_atom else np.abs(w).max()
    w = 0.5 + 0.5 * w / np.maximum(scale, 1e-12)
    cols = int(math.ceil(math.sqrt(k)))
    rows = int(math.ceil(k / cols))
    img = np.ones((rows * (h + pad) + pad, cols * (ww + pad) + pad, c))
    for i in range(k):
        r, q = divmod(i, cols)
        img[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (ww + pad): pad + q * (ww + pad) + ww] = \
            w[i].transpose(1, 2, 0)
    return img[..., 0] if c == 1 else img


def _make_grid(images, nrow, scale_each, padding=2, pad_value=0.5):
    """torchvision's ``make_grid(images, nrow, padding=2, normalize=True, scale_each, pad_value=0.5)``
    on a host array ``(B, C, H, W)``: single-channel images become three channels; values
    min-max scaled to [0, 1] (over all images, or per image with ``scale_each``; a constant
    range divides by 1e-5); ``min(nrow, B)`` images per row, ``padding`` pixels of ``pad_value``
    around and between them. One image is returned alone, scaled, without padding. Returns
    ``(C', H_grid, W_grid)``."""
    if images.shape[1] == 1:
        images = np.concatenate([images] * 3, axis=1)
    if scale_each:
        low = images.min(axis=(1, 2, 3), keepdims=True)
        high = images.max(axis=(1, 2, 3), keepdims=True)
    else:
        low, high = images.min(), images.max()
    images = (images - low) / np.maximum(high - low, 1e-5)
    b, c, h, w = images.shape
    if b == 1:
        return images[0]
    cols = min(nrow, b)
    rows = int(math.ceil(b / cols))
    grid = np.full((c, (h + padding) * rows + padding, (w + padding) * cols + padding), pad_value, images.dtype)
    for i in range(b):
        r, q = divmod(i, cols)
        y, x = r * (h + padding) + padding, q * (w + padding) + padding
        grid[:, y:y + h, x:x + w] = images[i]
    return grid


def make_feature_grid(weights, scale_each=False):
    """lca-pytorch's ``lcapt.analysis.make_feature_grid``: the dictionary as one picture.

    ``int(sqrt(K))`` features per row, 2 pixels of 0.5 around and between them, values min-max
    scaled to [0, 1] over the whole dictionary (per feature with ``scale_each``); single-channel
    features are repeated to three channels first (torchvision's ``make_grid``):

    - dense ``(K, D)`` and 1-D ``(K, 1, L)``: the weights themselves, ``(K, D)`` / ``(K, L)``, unscaled;
    - 1-D ``(K, C, L)`` with ``C > 1``: each feature a ``C x L`` gray image; ``(H_grid, W_grid)``;
    - 2-D ``(K, C, H, W)``: ``(H_grid, W_grid, C')`` with ``C' = 3`` for ``C == 1``, else ``C``;
    - 3-D ``(K, C, T, H, W)``: the 2-D grid of ``weights[:, :, 0]`` when ``T == 1``, else one grid per
      time step stacked, ``(T, H_grid, W_grid, C')`` (each step scaled on its own).

    With ``rows = ceil(K / cols)``, ``cols = min(int(sqrt(K)), K)``: ``H_grid = rows (h + 2) + 2``,
    ``W_grid = cols (w + 2) + 2``. A single feature (K = 1) comes back alone, scaled, unpadded.
    Returns a host (numpy) array of the weights' float dtype. ``ValueError`` for other ranks or
    K = 0 (lca-pytorch: ``RuntimeError``); ``TypeError`` for complex or non-numeric weights.
    See :func:`tile_dictionary` for this library's own layout (symmetric scaling around 0).
    """
    w = to_numpy(weights)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"weights must be a real numeric array, got dtype {w.dtype}")
    w = w.astype(w.dtype if w.dtype.kind == "f" else np.float64, copy=True)
    if w.ndim not in (2, 3, 4, 5):
        raise ValueError(f"weights given to make_feature_grid must be 2-D, 3-D, 4-D or 5-D (K, ...), "
                         f"got shape {tuple(w.shape)}")
    if w.shape[0] == 0 or 0 in w.shape:
        raise ValueError(f"weights has no features or empty features (shape {tuple(w.shape)}): nothing to show")
    nrow = int(math.sqrt(w.shape[0]))
    if w.ndim == 2:
        return w
    if w.ndim == 3:
        if w.shape[1] == 1:
            return w[:, 0]
        return _make_grid(w[:, None], nrow, scale_each)[0]
    if w.ndim == 4:
        return _make_grid(w, nrow, scale_each).transpose(1, 2, 0)
    if w.shape[2] == 1:
        return _make_grid(w[:, :, 0], nrow, scale_each).transpose(1, 2, 0)
    return np.stack([_make_grid(w[:, :, t], nrow, scale_each) for t in range(w.shape[2])]).transpose(0, 2, 3, 1)


def _makedirs(path):
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)


def save_dictionary(weights, path, shape=None, title=None, scale=8):
    """Save the tiled dictionary (:func:`tile_dictionary`) as a PNG (nearest-neighbour upscaled by ``scale``)."""
    img = tile_dictionary(weights, shape)
    fig = _figure("save_dictionary", figsize=(img.shape[1] * scale / 100,
                                              img.shape[0] * scale / 100 + (0.3 if title else 0)), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1 if not title else 0.93])
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest", vmin=0, vmax=1)
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    _makedirs(path)
    fig.savefig(path)
    return path


def save_curves(curves, path, xlabel="step", ylabel="", title=None, logy=False):
    """Save a line plot of ``curves`` (name -> sequence of values); ValueError when there is no curve."""
    if not curves:
        raise ValueError("curves is empty: nothing to plot")
    fig = _figure("save_curves", figsize=(6, 4))
    ax = fig.add_subplot()
    for name, values in curves.items():
        ax.plot(np.asarray(values), label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    _makedirs(path)
    fig.savefig(path)
    return path
