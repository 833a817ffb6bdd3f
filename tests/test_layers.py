"""LCA layers: lca-pytorch's interface, dictionary learning step, and bad input."""
import inspect
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import central_difference
from sparsecoding.backend import to_numpy
from sparsecoding.lca import LCA, LCAConv1D, LCAConv2D, LCAConv3D
from sparsecoding.ops import ConvOperator
from sparsecoding.solvers import fista

LCAPT_DEFAULTS = dict(kernel_size=7, stride=1, lambda_=0.25, tau=100, eta=0.01, lca_iters=1000, pad="same",
                      return_vars=("acts",), return_all_ts=False, nonneg=True, track_metrics=False,
                      transfer_func="soft_threshold", input_zero_mean=True, input_unit_var=True,
                      d_update_clip=np.inf, lr_schedule=None)


@pytest.mark.parametrize("cls", [LCAConv1D, LCAConv2D, LCAConv3D])
def test_constructor_keeps_lca_pytorch_names_and_defaults(cls):
    params = inspect.signature(cls.__init__).parameters
    assert list(params)[1:3] == ["out_neurons", "in_neurons"]
    for name, default in LCAPT_DEFAULTS.items():
        assert params[name].default == default, name
    for method in ("encode", "compute_input_drive", "compute_recon", "compute_recon_error", "transfer",
                   "update_weights", "normalize_weights", "forward"):
        assert callable(getattr(cls, method))


def test_return_vars_shapes_and_all_timesteps(xp, engines):
    layer = LCAConv2D(6, 3, 5, 2, lca_iters=7, return_vars=("inputs", "input_drives", "states", "acts", "recons",
                                                             "recon_errors"), return_all_ts=True, backend=_name(xp))
    x = xp.asarray(np.random.default_rng(0).standard_normal((2, 3, 12, 10)), dtype=xp.float32)
    out = layer(x)
    shapes = [o.shape for o in out]
    assert shapes[0] == (2, 3, 12, 10, 7) and shapes[2] == (2, 6, 6, 5, 7) and shapes[4] == (2, 3, 12, 10, 7)
    layer.return_all_ts = False
    inputs, drive, states, acts, recons, errs = layer(x)
    np.testing.assert_allclose(to_numpy(errs), to_numpy(inputs - recons), atol=1e-6)
    # per-sample standardisation
    flat = to_numpy(inputs).reshape(2, -1)
    np.testing.assert_allclose(flat.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(flat.std(1), 1, atol=1e-4)


def _name(xp):
    return "numpy" if xp is np else "cupy"


def test_conv_layer_with_full_size_kernel_equals_dense_layer():
    """An LCAConv2D whose kernel covers the whole (valid) image is the dense LCA on flattened images."""
    r = np.random.default_rng(3)
    conv = LCAConv2D(10, 2, (4, 3), pad="valid", tau=20, lca_iters=300, dtype="float64", seed=1,
                     return_vars=("acts", "recons"))
    dense = LCA(10, 24, tau=20, lca_iters=300, dtype="float64", return_vars=("acts", "recons"))
    dense.weights = conv.weights.reshape(10, 24)
    x = r.standard_normal((5, 2, 4, 3))
    a_c, rec_c = conv(x)
    a_d, rec_d = dense(x.reshape(5, 24))
    np.testing.assert_allclose(a_c.reshape(5, 10), a_d, atol=1e-12)
    np.testing.assert_allclose(rec_c.reshape(5, 24), rec_d, atol=1e-12)


@pytest.mark.parametrize("cls,shape", [(LCAConv1D, (2, 2, 11)), (LCAConv2D, (2, 2, 9, 8))])
def test_fista_solver_reaches_lca_minimum(engines, cls, shape):
    x = np.random.default_rng(4).standard_normal(shape)
    kw = dict(kernel_size=3, stride=2, lambda_=0.3, lca_iters=20000, dtype="float64", seed=0, tol=1e-13)
    lca = cls(5, 2, tau=10, **kw)
    fis = cls(5, 2, solver="fista", **kw)
    s = lca.preprocess(x)
    e_lca = lca.energy(s, lca(x)).sum()
    e_fista = fis.energy(s, fis(x)).sum()
    assert fis.n_iter_ < lca.n_iter_
    op = ConvOperator(lca.weights, shape[2:], 2, "same")
    ref = fista(op, s, 0.3, nonneg=True, max_iter=50000, tol=1e-15).energy.sum()
    np.testing.assert_allclose([e_lca, e_fista], ref, rtol=1e-7)


def explicit_update(acts, err, stride, pad, k):
    """sum_{n,o} a[n,k,o] * err_pad[n,:,o*s:o*s+k] with a loop over positions (1-D and 2-D)."""
    errp = np.pad(err, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    out = np.zeros((acts.shape[1], err.shape[1], *k))
    for o in itertools.product(*(range(v) for v in acts.shape[2:])):
        patch = errp[(slice(None), slice(None), *(slice(oi * s, oi * s + kk) for oi, s, kk in zip(o, stride, k)))]
        out += np.einsum("nk,nc...->kc...", acts[(slice(None), slice(None), *o)], patch)
    return out


@given(st.integers(1, 2), st.sampled_from([1, 3, 5]), st.integers(1, 2), st.integers(0, 2**31), st.floats(0.001, 0.1))
def test_builtin_update_matches_lca_pytorch_rule(engines, dims, k, stride, seed, eta):
    r = np.random.default_rng(seed)
    cls = LCAConv1D if dims == 1 else LCAConv2D
    layer = cls(4, 2, k, stride, eta=eta, dtype="float64", seed=seed % 1000, d_update_clip=0.05)
    w0 = layer.weights.copy()
    x = r.standard_normal((3, 2, *([8] * dims)))
    acts = np.maximum(r.standard_normal((3, *layer._operator(x.shape[2:]).out_shape)), 0)
    err = r.standard_normal(x.shape)
    raw = explicit_update(acts, err, layer.stride, [(kk - 1) // 2 for kk in layer.kernel_size], layer.kernel_size)
    n_active = (acts != 0).sum(axis=(0, *range(2, acts.ndim)))
    expect = np.clip(raw * (eta / (n_active + 1)).reshape(-1, *([1] * (dims + 1))), -0.05, 0.05)
    update = layer.update_weights(acts, err)
    np.testing.assert_allclose(update, expect, atol=1e-12)
    new = w0 + expect
    new /= np.sqrt((new**2).reshape(4, -1).sum(1)).reshape(-1, *([1] * (dims + 1)))
    np.testing.assert_allclose(layer.weights, new, atol=1e-10)
    np.testing.assert_allclose(np.sqrt((layer.weights**2).reshape(4, -1).sum(1)), 1, atol=1e-12)


@pytest.mark.parametrize("kind", ["dense", "conv1d", "conv2d"])
def test_dictionary_gradient_equals_finite_differences(kind):
    r = np.random.default_rng(5)
    if kind == "dense":
        layer = LCA(5, 4, dtype="float64", seed=0, lambda_=0.1)
        s, a = r.standard_normal((3, 4)), r.standard_normal((3, 5))
    else:
        cls = LCAConv1D if kind == "conv1d" else LCAConv2D
        dims = 1 if kind == "conv1d" else 2
        layer = cls(3, 2, 3, 2, dtype="float64", seed=0, lambda_=0.1)
        s = r.standard_normal((2, 2, *([7] * dims)))
        a = r.standard_normal((2, *layer._operator(s.shape[2:]).out_shape))
    w0 = layer.weights.copy()
    grad = layer.dictionary_gradient(a, s - layer.compute_recon(a, in_shape=s.shape[2:] if s.ndim > 2 else None))

    fd = central_difference(lambda w: _energy(layer, s, a, w), w0)
    np.testing.assert_allclose(grad, fd, atol=1e-7)


def _energy(layer, s, a, w):
    r = s - layer.compute_recon(a, weights=w, in_shape=s.shape[2:] if s.ndim > 2 else None)
    n = s.shape[0]
    return (0.5 * (r**2).reshape(n, -1).sum(1) + layer.lambda_ * np.abs(a).reshape(n, -1).sum(1)).mean()


def test_metrics_tracked_and_written(tmp_path):
    layer = LCAConv1D(4, 1, 3, lca_iters=30, track_metrics=True, result_dir=str(tmp_path), tau=20)
    layer(np.random.default_rng(0).standard_normal((2, 1, 16)).astype(np.float32))
    m = layer.metrics
    assert set(m) == {"L1", "L2", "TotalEnergy", "FractionActive"} and len(m["L1"]) == 30
    np.testing.assert_allclose(m["TotalEnergy"], m["L1"] + m["L2"], rtol=1e-6)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("ForwardPass,LCAIter,L1") and len(lines) == 31


def test_weights_assignment_checked():
    layer = LCAConv2D(4, 3, 5)
    with pytest.raises(ValueError, match="shape"):
        layer.weights = np.zeros((4, 3, 3, 3), dtype=np.float32)
    with pytest.raises(TypeError, match="dtype"):
        layer.weights = np.zeros((4, 3, 5, 5), dtype=np.float64)
    w = np.random.default_rng(0).standard_normal((4, 3, 5, 5)).astype(np.float32)
    layer.assign_weight_values(w)
    np.testing.assert_allclose(np.sqrt((layer.weights**2).sum((1, 2, 3))), 1, rtol=1e-5)


def test_warm_start_continues_the_trajectory(engines):
    x = np.random.default_rng(1).standard_normal((2, 2, 10)).astype(np.float64)
    kw = dict(tau=10, dtype="float64", seed=3, return_vars=("states", "acts"))
    full = LCAConv1D(3, 2, 3, lca_iters=40, **kw)
    half = LCAConv1D(3, 2, 3, lca_iters=20, **kw)
    u_half, _ = half(x)
    u_resumed, _ = half(x, initial_states=u_half)
    u_full, _ = full(x)
    np.testing.assert_allclose(u_resumed, u_full, atol=1e-12)


@pytest.mark.parametrize(
    "make, call, exc, match",
    [
        (lambda: LCAConv2D(4, 3, 5), lambda m: m(np.zeros((2, 2, 8, 8), np.float32)), ValueError, "channels"),
        (lambda: LCAConv2D(4, 3, 5), lambda m: m(np.zeros((2, 3, 8), np.float32)), ValueError, "shape"),
        (lambda: LCAConv2D(4, 3, 5), lambda m: m(np.full((1, 3, 8, 8), np.nan, np.float32)), ValueError, "NaN"),
        (lambda: LCAConv2D(4, 3, 5, lambda_=-0.1), None, ValueError, "lambda_"),
        (lambda: LCAConv2D(4, 3, 4), None, ValueError, "odd"),
        (lambda: LCAConv2D(4, 3, 5, transfer_func="relu"), None, ValueError, "transfer_func"),
        (lambda: LCAConv2D(4, 3, 5, solver="fista", transfer_func="hard_threshold"), None, ValueError, "soft"),
        (lambda: LCAConv2D(4, 3, 5, return_vars=("acts", "conns")), None, ValueError, "return_vars"),
        (lambda: LCAConv2D(16, 3, 5, tau=1.0), lambda m: m(np.ones((1, 3, 8, 8), np.float32)), ValueError, "unstable"),
        (lambda: LCA(4, 6), lambda m: m(np.zeros((2, 5), np.float32)), ValueError, "in_neurons"),
    ],
)
def test_bad_input_raises_clear_errors(make, call, exc, match):
    with pytest.raises(exc, match=match):
        m = make()
        if call is not None:
            call(m)


def test_dense_gram_lateral_equals_recon_form():
    x = np.random.default_rng(2).standard_normal((4, 8))
    kw = dict(tau=30, lca_iters=200, dtype="float64", seed=1, return_vars=("states",))
    a = LCA(20, 8, lateral="recon", **kw)(x)
    b = LCA(20, 8, lateral="gram", **kw)(x)
    np.testing.assert_allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("cls,shape,stride", [(LCAConv1D, (2, 3, 15), 2), (LCAConv2D, (2, 3, 9, 11), 1),
                                              (LCAConv2D, (2, 3, 11, 10), 3)])
def test_conv_gram_lateral_equals_recon_form_for_valid_padding(cls, shape, stride):
    """Precomputed lateral tensor G = Phi * Phi (opt-in) gives the same trajectory as the re-encoded form."""
    x = np.random.default_rng(3).standard_normal(shape)
    kw = dict(kernel_size=5, stride=stride, pad="valid", tau=30, lca_iters=150, dtype="float64", seed=2,
              return_vars=("states", "acts"))
    u1, a1 = cls(4, 3, lateral="recon", **kw)(x)
    u2, a2 = cls(4, 3, lateral="gram", **kw)(x)
    np.testing.assert_allclose(u2, u1, atol=1e-10)
    np.testing.assert_allclose(a2, a1, atol=1e-10)
    with pytest.raises(ValueError, match="valid"):
        cls(4, 3, 5, lateral="gram", pad="same")


@pytest.mark.parametrize("solver", ["lca", "fista"])
@pytest.mark.parametrize("cls,shape", [(LCAConv1D, (3, 2, 13)), (LCAConv2D, (3, 2, 10, 9))])
def test_engine_families_give_the_same_encoding(solver, cls, shape):
    """The numba engines and the generic-array ones (cupy's path) encode alike: every returned variable,
    the iteration count and the convergence flag."""
    from sparsecoding.backend import use_engines

    x = np.random.default_rng(6).standard_normal(shape)
    out = {}
    for family in ("native", "generic"):
        with use_engines(family):
            layer = cls(5, 2, 3, 2, lambda_=0.2, tau=10, lca_iters=300, tol=1e-9, dtype="float64", seed=1,
                        solver=solver, return_vars=("input_drives", "states", "acts", "recons", "recon_errors"))
            out[family] = (layer(x), layer.n_iter_, layer.converged_)
    (vn, nn, cn), (vg, ng, cg) = out["native"], out["generic"]
    assert (nn, cn) == (ng, cg)
    for a, b in zip(vn, vg):
        np.testing.assert_allclose(a, b, atol=1e-9)
