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
    layer = LCAConv2D(6, 3, kernel_size=5, stride=2, lca_iters=7,
                      return_vars=("inputs", "input_drives", "states", "acts", "recons", "recon_errors"),
                      return_all_ts=True, backend=_name(xp))
    x = xp.asarray(np.random.default_rng(0).standard_normal((2, 3, 12, 10)), dtype=xp.float32)
    out = layer(x)
    shapes = [o.shape for o in out]
    assert shapes[0] == (2, 3, 12, 10, 7) and shapes[2] == (2, 6, 6, 5, 7) and shapes[4] == (2, 3, 12, 10, 7)
    layer.return_all_ts = False
    inputs, drive, states, acts, recons, errs = layer(x)
    np.testing.assert_allclose(to_numpy(errs), to_numpy(inputs - recons), atol=1e-6)
    # per-sample standardisation (unit variance with ddof=1 as lca-pytorch's make_unit_var; this test
    # checked the population std, ddof=0, before issue 13)
    flat = to_numpy(inputs).reshape(2, -1)
    np.testing.assert_allclose(flat.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(flat.std(1, ddof=1), 1, atol=1e-4)


def _name(xp):
    return "numpy" if xp is np else "cupy"


def test_conv_layer_with_full_size_kernel_equals_dense_layer():
    """An LCAConv2D whose kernel covers the whole (valid) image is the dense LCA on flattened images."""
    r = np.random.default_rng(3)
    # (4, 2): lca-pytorch refuses mixed odd/even kernel sizes (this test used (4, 3) before issue 13)
    conv = LCAConv2D(10, 2, kernel_size=(4, 2), pad="valid", tau=20, lca_iters=300, dtype="float64", seed=1,
                     return_vars=("acts", "recons"))
    dense = LCA(10, 16, tau=20, lca_iters=300, dtype="float64", return_vars=("acts", "recons"))
    dense.weights = conv.weights.reshape(10, 16)
    x = r.standard_normal((5, 2, 4, 2))
    a_c, rec_c = conv(x)
    a_d, rec_d = dense(x.reshape(5, 16))
    np.testing.assert_allclose(a_c.reshape(5, 10), a_d, atol=1e-12)
    np.testing.assert_allclose(rec_c.reshape(5, 16), rec_d, atol=1e-12)


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


@pytest.mark.parametrize("cls,shape", [(LCAConv1D, (2, 2, 11)), (LCAConv2D, (2, 2, 9, 8)), (LCA, (4, 6))])
def test_cd_solver_gives_the_fista_energy(cls, shape):
    """solver="cd" (locally greedy coordinate descent on the conv layers, the exact dense route on LCA) reaches the
    energy of a tight FISTA solve of the same layer, to its tolerance; "cd" needs the soft threshold."""
    x = np.random.default_rng(5).standard_normal(shape)
    kw = dict(lambda_=0.3, lca_iters=20000, dtype="float64", seed=0, tol=1e-10)
    if cls is not LCA:
        kw.update(kernel_size=3, stride=2)
    fis = cls(5, 2 if cls is not LCA else 6, solver="fista", **kw)
    cd = cls(5, 2 if cls is not LCA else 6, solver="cd", **kw)
    cd.weights = fis.weights
    s = fis.preprocess(x)
    e_fista, e_cd = fis.energy(s, fis(x)).sum(), cd.energy(s, cd(x)).sum()
    assert cd.converged_
    np.testing.assert_allclose(e_cd, e_fista, rtol=1e-9)
    with pytest.raises(ValueError, match="soft"):
        cls(5, 2, solver="cd", transfer_func="hard_threshold")


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
    layer = cls(4, 2, kernel_size=k, stride=stride, eta=eta, dtype="float64", seed=seed % 1000, d_update_clip=0.05)
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
        layer = cls(3, 2, kernel_size=3, stride=2, dtype="float64", seed=0, lambda_=0.1)
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
    layer = LCAConv1D(4, 1, kernel_size=3, lca_iters=30, track_metrics=True, result_dir=str(tmp_path), tau=20)
    layer(np.random.default_rng(0).standard_normal((2, 1, 16)).astype(np.float32))
    m = layer.metrics
    assert set(m) == {"L1", "L2", "TotalEnergy", "FractionActive"} and len(m["L1"]) == 30
    np.testing.assert_allclose(m["TotalEnergy"], m["L1"] + m["L2"], rtol=1e-6)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("ForwardPass,LCAIter,L1") and len(lines) == 31


def test_weights_assignment_checked():
    layer = LCAConv2D(4, 3, kernel_size=5)
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
    full = LCAConv1D(3, 2, kernel_size=3, lca_iters=40, **kw)
    half = LCAConv1D(3, 2, kernel_size=3, lca_iters=20, **kw)
    u_half, _ = half(x)
    u_resumed, _ = half(x, initial_states=u_half)
    u_full, _ = full(x)
    np.testing.assert_allclose(u_resumed, u_full, atol=1e-12)


@pytest.mark.parametrize(
    "make, call, exc, match",
    [
        (lambda: LCAConv2D(4, 3, kernel_size=5), lambda m: m(np.zeros((2, 2, 8, 8), np.float32)), ValueError, "channels"),
        (lambda: LCAConv2D(4, 3, kernel_size=5), lambda m: m(np.zeros((2, 3, 8), np.float32)), ValueError, "shape"),
        (lambda: LCAConv2D(4, 3, kernel_size=5), lambda m: m(np.full((1, 3, 8, 8), np.nan, np.float32)), ValueError, "NaN"),
        (lambda: LCAConv2D(4, 3, kernel_size=5, lambda_=-0.1), None, ValueError, "lambda_"),
        (lambda: LCAConv2D(4, 3, kernel_size=4), None, ValueError, "odd"),
        (lambda: LCAConv2D(4, 3, kernel_size=5, transfer_func="relu"), None, ValueError, "transfer_func"),
        (lambda: LCAConv2D(4, 3, kernel_size=5, solver="fista", transfer_func="hard_threshold"), None, ValueError, "soft"),
        (lambda: LCAConv2D(4, 3, kernel_size=5, return_vars=("acts", "weights")), None, ValueError, "return_vars"),
        (lambda: LCAConv2D(16, 3, kernel_size=5, tau=1.0), lambda m: m(np.ones((1, 3, 8, 8), np.float32)), ValueError, "unstable"),
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
        cls(4, 3, kernel_size=5, lateral="gram", pad="same")


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
            layer = cls(5, 2, kernel_size=3, stride=2, lambda_=0.2, tau=10, lca_iters=300, tol=1e-9, dtype="float64",
                        seed=1, solver=solver, return_vars=("input_drives", "states", "acts", "recons", "recon_errors"))
            out[family] = (layer(x), layer.n_iter_, layer.converged_)
    (vn, nn, cn), (vg, ng, cg) = out["native"], out["generic"]
    assert (nn, cn) == (ng, cg)
    for a, b in zip(vn, vg):
        np.testing.assert_allclose(a, b, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# lca-pytorch compatibility (issue 13). lca-pytorch's semantics are written out below as explicit
# loops; nothing here runs lca-pytorch.

LCAPT_ORDER = ["out_neurons", "in_neurons", "result_dir", "kernel_size", "stride", "lambda_", "tau", "eta",
               "lca_iters", "pad", "return_vars", "return_all_ts", "nonneg", "track_metrics", "transfer_func",
               "input_zero_mean", "input_unit_var", "cudnn_benchmark", "d_update_clip", "lr_schedule", "req_grad",
               "weight_init"]  # LCAConv1D/2D; LCAConv3D adds no_time_pad after weight_init


def _correlate(x, w, stride, pad):
    """conv (cross-correlation) of x (N, C, *L) with w (K, C, *k), zero padding ``pad`` per axis, by loops."""
    n, c = x.shape[:2]
    k = w.shape[0]
    xp_ = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    out_shape = [(L + 2 * p - kk) // s + 1 for L, p, kk, s in zip(x.shape[2:], pad, w.shape[2:], stride)]
    out = np.zeros((n, k, *out_shape))
    for o in itertools.product(*(range(v) for v in out_shape)):
        for j in itertools.product(*(range(v) for v in w.shape[2:])):
            pos = tuple(oi * s + ji for oi, s, ji in zip(o, stride, j))
            out[(slice(None), slice(None), *o)] += xp_[(slice(None), slice(None), *pos)] @ w[(slice(None), slice(None),
                                                                                              *j)].T
    return out


def _synthesis(a, w, stride, pad, in_shape):
    """The adjoint of _correlate onto inputs of spatial shape in_shape (cropped at the borders), by loops."""
    n = a.shape[0]
    full = np.zeros((n, w.shape[1], *[L + 2 * p for L, p in zip(in_shape, pad)]))
    for o in itertools.product(*(range(v) for v in a.shape[2:])):
        for j in itertools.product(*(range(v) for v in w.shape[2:])):
            pos = tuple(oi * s + ji for oi, s, ji in zip(o, stride, j))
            if all(p < v for p, v in zip(pos, full.shape[2:])):
                full[(slice(None), slice(None), *pos)] += a[(slice(None), slice(None), *o)] @ w[(slice(None),
                                                                                                   slice(None), *j)]
    return full[(slice(None), slice(None), *(slice(p, p + L) for p, L in zip(pad, in_shape)))]


def _soft_nonneg(u, lam):
    return np.maximum(u - lam, 0)


@pytest.mark.parametrize("cls", [LCAConv1D, LCAConv2D, LCAConv3D])
def test_positional_arguments_in_lca_pytorch_order(cls):
    params = inspect.signature(cls.__init__).parameters
    positional = [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD][1:]
    expect = LCAPT_ORDER + (["no_time_pad"] if cls is LCAConv3D else [])
    assert positional == expect
    assert all(params[n].kind is inspect.Parameter.KEYWORD_ONLY for n in ("seed", "dtype", "tol", "solver", "backend"))
    # every positional argument lands where lca-pytorch puts it
    layer = cls(10, 3, "results", 5, 2, 0.5, 50, 0.02, 30, "valid", ["acts", "states"], True, False, True,
                "hard_threshold", False, False, False, 0.1, None, False, None)
    assert (layer.out_neurons, layer.in_neurons, layer.result_dir) == (10, 3, "results")
    assert layer.kernel_size == (5,) * layer._spatial_dims and layer.stride == (2,) * layer._spatial_dims
    assert (layer.lambda_, layer.tau, layer.eta, layer.lca_iters, layer.pad) == (0.5, 50, 0.02, 30, "valid")
    assert layer.return_vars == ("acts", "states") and layer.return_all_ts and not layer.nonneg
    assert layer.track_metrics and layer.transfer_func == "hard_threshold"
    assert not layer.input_zero_mean and not layer.input_unit_var and not layer.cudnn_benchmark
    assert layer.d_update_clip == 0.1 and layer.lr_schedule is None and layer.weight_init is None


def test_lca_pytorch_positional_call_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    layer = LCAConv2D(10, 3, "results", 5)
    assert layer.kernel_size == (5, 5) and layer.result_dir == "results"
    layer.lca_iters = 3
    assert layer(np.random.default_rng(0).standard_normal((1, 3, 9, 9)).astype(np.float32)).shape == (1, 10, 9, 9)
    assert not (tmp_path / "results").exists()  # files only with track_metrics (lca-pytorch always writes params)
    # the old order (kernel_size third) is reported, not misread
    with pytest.raises(TypeError, match="result_dir.*kernel_size"):
        LCAConv2D(4, 3, 5)
    # the dense layer keeps its own order (lca-pytorch has no dense layer)
    dense = LCA(8, 16, 0.3, 40)
    assert (dense.lambda_, dense.tau) == (0.3, 40)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(transfer_func=["soft_threshold"]), TypeError, "transfer_func"),
    (dict(transfer_func=np.zeros(3)), TypeError, "transfer_func"),
    (dict(transfer_func=3), TypeError, "transfer_func"),
    (dict(transfer_func="relu"), ValueError, "transfer_func"),
    (dict(kernel_size="35"), TypeError, "kernel_size.*string '35'"),
    (dict(kernel_size=[3, 5]), TypeError, "kernel_size.*list"),
    (dict(kernel_size=np.array([3, 3])), TypeError, "kernel_size"),
    (dict(kernel_size=True), TypeError, "kernel_size"),
    (dict(kernel_size=(3, 3, 3)), ValueError, "kernel_size"),
    (dict(kernel_size=(3, 0)), ValueError, "kernel_size"),
    (dict(kernel_size=(4, 5), pad="valid"), ValueError, "kernel_size mixes odd and even"),
    (dict(kernel_size=(5, 4), pad="same"), ValueError, "kernel_size mixes odd and even"),
    (dict(kernel_size=(4, 4), pad="same"), ValueError, "odd"),
    (dict(stride=[2, 2]), TypeError, "stride"),
    (dict(stride="2"), TypeError, "stride"),
    (dict(pad="full"), ValueError, "pad"),
    (dict(pad=["same"]), ValueError, "pad"),
    (dict(req_grad=True), ValueError, "req_grad"),
    (dict(weight_init=np.random.standard_normal), TypeError, "weight_init"),
    (dict(weight_init=(np.ones, None)), TypeError, "weight_init"),
    (dict(result_dir=3), TypeError, "result_dir"),
    (dict(return_vars=("acts", "weights")), ValueError, "return_vars"),
])
def test_bad_constructor_arguments_are_named(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        LCAConv2D(4, 3, **kwargs)


def test_kernel_sizes_lca_pytorch_accepts():
    assert LCAConv2D(4, 3, kernel_size=(1, 4), pad="valid").kernel_size == (1, 4)  # sizes of 1 do not count
    assert LCAConv2D(4, 3, kernel_size=(4, 6), pad="valid").kernel_size == (4, 6)
    assert LCAConv3D(4, 3, kernel_size=(1, 3, 5)).kernel_size == (1, 3, 5)
    assert LCAConv1D(4, 3, kernel_size=(7,), stride=np.int64(2)).stride == (2,)
    with pytest.raises(ValueError, match="odd and even"):
        LCAConv3D(4, 1, kernel_size=(4, 3, 4), pad="valid")
    with pytest.raises(TypeError, match="transfer_func"):
        LCAConv2D(4, 3).transfer_func = ["hard_threshold"]


def test_final_values_equal_the_last_step_and_follow_one_convention():
    """The issue's example: returned acts / recons / recon_errors beside the final states are those of the
    last step, with or without return_all_ts, and every slice t is the state after step t with its own acts:
    u_t, a_t = T(u_t), Phi^T a_t (explicit loop below, float64)."""
    names = ("states", "acts", "recons", "recon_errors")
    x = np.random.default_rng(0).standard_normal((3, 2, 16))
    kw = dict(kernel_size=7, lambda_=0.1, tau=20, lca_iters=5, return_vars=names, seed=0)
    final = LCAConv1D(6, 2, **kw)(x.astype(np.float32))
    steps = LCAConv1D(6, 2, return_all_ts=True, **kw)(x.astype(np.float32))
    for a, b in zip(final, steps):
        np.testing.assert_allclose(a, b[..., -1], atol=1e-6)

    layer = LCAConv1D(6, 2, return_all_ts=True, dtype="float64", **kw)
    steps = layer(x)
    s = layer.preprocess(x)
    w = layer.weights
    b = _correlate(s, w, (1,), (3,))
    u = np.zeros_like(b)
    ours, lcapt = [], []
    for t in range(5):
        a_prev = _soft_nonneg(u, 0.1)
        r_prev = _synthesis(a_prev, w, (1,), (3,), (16,))
        u = u + (b - u - (_correlate(r_prev, w, (1,), (3,)) - a_prev)) / 20  # Phi Phi^T a - a, exact borders
        a = _soft_nonneg(u, 0.1)
        r = _synthesis(a, w, (1,), (3,), (16,))
        ours.append((u, a, r, s - r))
        lcapt.append((u, a_prev, r_prev, s - r_prev))  # lca-pytorch: states after the step, acts it used
    for t in range(5):
        for got, want in zip(steps, ours[t]):
            np.testing.assert_allclose(got[..., t], want, atol=1e-12)
    # lca-pytorch's slice t of acts / recons / recon_errors is ours of step t - 1; the states agree
    for t in range(1, 5):
        for got, want in zip(steps[1:], lcapt[t][1:]):
            np.testing.assert_allclose(got[..., t - 1], want, atol=1e-12)
        np.testing.assert_allclose(steps[0][..., t], lcapt[t][0], atol=1e-12)
    np.testing.assert_array_equal(lcapt[0][1], 0)  # its first acts: T(u_0) = 0 from a cold start


@pytest.mark.parametrize("solver", ["lca", "fista"])
def test_encode_returns_lca_pytorch_tuple_of_lists(solver):
    x = np.random.default_rng(1).standard_normal((2, 2, 9, 8))
    kw = dict(kernel_size=3, stride=2, lambda_=0.2, tau=20, lca_iters=6, dtype="float64", seed=0, solver=solver,
              return_vars=("acts", "recon_errors", "states"))
    layer = LCAConv2D(4, 2, **kw)
    s = layer.preprocess(x)
    out = layer.encode(s)
    assert type(out) is tuple and len(out) == 3 and all(type(v) is list and len(v) == 1 for v in out)
    ref = layer.solve(s)
    for got, name in zip(out, kw["return_vars"]):
        np.testing.assert_array_equal(got[0], ref[name])
    assert layer.forward_pass == 1  # encode does not count a forward pass; forward does
    np.testing.assert_array_equal(layer(x)[0], out[0][0])
    assert layer.forward_pass == 2
    layer.return_all_ts = True
    steps = layer.encode(s)
    n = 6 if solver == "lca" else 1
    assert [len(v) for v in steps] == [n] * 3
    stacked = layer(x)
    for got, st in zip(steps, stacked):
        np.testing.assert_array_equal(np.stack(got, axis=-1), st)


def _lateral_reference(w, stride):
    """conns[k1, k2, d] = sum_{c, j} w[k1, c, s d + j] w[k2, c, j] for |d_i| <= (k_i - 1) // s_i, self term 0."""
    K = w.shape[0]
    kern = w.shape[2:]
    reach = [(k - 1) // s for k, s in zip(kern, stride)]
    conns = np.zeros((K, K, *[2 * r + 1 for r in reach]))
    for d in itertools.product(*(range(-r, r + 1) for r in reach)):
        for j in itertools.product(*(range(k) for k in kern)):
            m = tuple(s * di + ji for s, di, ji in zip(stride, d, j))
            if all(0 <= mi < k for mi, k in zip(m, kern)):
                conns[(slice(None), slice(None), *(di + r for di, r in zip(d, reach)))] += \
                    w[(slice(None), slice(None), *m)] @ w[(slice(None), slice(None), *j)].T
    for k in range(K):
        conns[(k, k, *reach)] = 0
    return conns


@pytest.mark.parametrize("cls, kernel, stride, pad", [
    (LCAConv1D, 7, 1, "same"), (LCAConv1D, 8, 3, "valid"), (LCAConv1D, 5, 5, "same"),
    (LCAConv2D, (3, 5), (2, 1), "same"), (LCAConv2D, (4, 2), 2, "valid"), (LCAConv3D, (3, 1, 3), (1, 1, 2), "same"),
])
def test_lateral_connectivity_equals_lca_pytorch_definition(cls, kernel, stride, pad):
    layer = cls(4, 2, kernel_size=kernel, stride=stride, pad=pad, dtype="float64", seed=3)
    np.testing.assert_allclose(layer.compute_lateral_connectivity(), _lateral_reference(layer.weights, layer.stride),
                               atol=1e-12)
    w2 = np.random.default_rng(0).standard_normal(layer.weight_shape)  # any weights, not only the layer's
    np.testing.assert_allclose(layer.compute_lateral_connectivity(w2), _lateral_reference(w2, layer.stride), atol=1e-12)


def test_lateral_connectivity_sizes_of_lca_pytorch():
    # lca-pytorch's size tables: odd kernel 7 at strides 1..7, even kernel 8 ("valid") at strides 1..8
    for stride, size in zip(range(1, 8), [13, 7, 5, 3, 3, 3, 1]):
        assert LCAConv1D(15, 3, kernel_size=7, stride=stride).compute_lateral_connectivity().shape == (15, 15, size)
    for stride, size in zip(range(1, 9), [15, 7, 5, 3, 3, 3, 3, 1]):
        conns = LCAConv2D(15, 3, kernel_size=8, stride=stride, pad="valid").compute_lateral_connectivity()
        assert conns.shape == (15, 15, size, size)
    assert LCAConv3D(10, 3, kernel_size=1).compute_lateral_connectivity().shape == (10, 10, 1, 1, 1)
    dense = LCA(5, 8, dtype="float64", seed=0)
    phi = dense.weights
    np.testing.assert_allclose(dense.compute_lateral_connectivity(), phi @ phi.T - np.diag(np.diag(phi @ phi.T)))


@pytest.mark.parametrize("cls, shape, kernel, stride", [(LCAConv1D, (2, 2, 13), 5, 2), (LCAConv2D, (2, 2, 9, 8), 3, 1),
                                                        (LCA, (3, 10), None, None)])
def test_lca_pytorch_loop_with_conns_equals_ours_for_valid_padding(cls, shape, kernel, stride):
    """lca-pytorch's iteration u <- u + (b - u - lateral_competition(T(u), conns)) / tau, written with the
    layer's lca-pytorch methods, gives our trajectory when the padding is "valid" (unit-norm features)."""
    x = np.random.default_rng(4).standard_normal(shape)
    kw = dict(lambda_=0.15, tau=15, lca_iters=8, dtype="float64", seed=1, return_vars=("states",),
              return_all_ts=True)
    layer = cls(5, shape[1], **kw) if cls is LCA else cls(5, shape[1], kernel_size=kernel, stride=stride,
                                                          pad="valid", **kw)
    states = layer(x)
    s = layer.preprocess(x)
    b = layer.compute_input_drive(s, layer.weights)
    conns = layer.compute_lateral_connectivity(layer.weights)
    u = np.zeros_like(b)
    for t in range(8):
        u = u + (b - u - layer.lateral_competition(layer.transfer(u), conns)) / 15
        np.testing.assert_allclose(states[..., t], u, atol=1e-12)


def test_same_padding_lateral_term_is_exact_at_the_borders():
    """With pad="same" our lateral term is Phi (Phi^T a) - a of the cropped reconstruction (the gradient of the
    energy); lca-pytorch's conv with conns equals it away from the borders and differs next to them."""
    layer = LCAConv1D(4, 2, kernel_size=5, dtype="float64", seed=2)
    a = np.maximum(np.random.default_rng(5).standard_normal((2, 4, 20)), 0)
    exact = layer.compute_input_drive(layer.compute_recon(a, in_shape=(20,))) - a
    lcapt = layer.lateral_competition(a, layer.compute_lateral_connectivity())
    np.testing.assert_allclose(lcapt[..., 4:-4], exact[..., 4:-4], atol=1e-12)
    assert np.abs(lcapt[..., :2] - exact[..., :2]).max() > 1e-3


def test_conns_return_variable():
    x = np.random.default_rng(6).standard_normal((2, 3, 10, 10))
    layer = LCAConv2D(4, 3, kernel_size=3, stride=2, lca_iters=4, return_vars=("acts", "conns"), dtype="float64")
    acts, conns = layer(x)
    np.testing.assert_array_equal(conns, layer.compute_lateral_connectivity())
    assert conns.shape == (4, 4, 3, 3)
    layer.return_all_ts = True
    acts, conns_t = layer(x)
    assert conns_t.shape == (4, 4, 3, 3, 4) and acts.shape[-1] == 4
    np.testing.assert_array_equal(conns_t, np.stack([conns] * 4, axis=-1))
    layer.return_vars = ("conns",)
    assert layer(x).shape == (4, 4, 3, 3, 4)
    assert layer.solve(layer.preprocess(x))["conns"].shape == (4, 4, 3, 3)


def test_weight_init_callable_and_kwargs():
    seen = {}

    def ramp(w, scale=1.0):
        seen["shape"], seen["dtype"] = w.shape, w.dtype
        return scale * np.arange(w.size, dtype=np.float64).reshape(w.shape) + 1

    layer = LCAConv2D(3, 2, kernel_size=3, weight_init=(ramp, {"scale": 2.0}), dtype="float64")
    assert seen == {"shape": (3, 2, 3, 3), "dtype": np.float64}
    raw = 2.0 * np.arange(54.0).reshape(3, 2, 3, 3) + 1
    np.testing.assert_allclose(layer.weights, raw / np.sqrt((raw**2).sum((1, 2, 3), keepdims=True)), rtol=1e-12)
    assert layer.weight_init is ramp and layer.weight_init_kwargs == {"scale": 2.0}

    def fill(w):  # an in-place initialiser returning None
        w[...] = 1.0

    dense = LCA(4, 9, weight_init=(fill, {}))
    np.testing.assert_allclose(dense.weights, 1 / 3, rtol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        LCAConv1D(3, 2, kernel_size=3, weight_init=(lambda w: np.ones(5), {}))
    with pytest.raises(ValueError, match="finite"):
        LCAConv1D(3, 2, kernel_size=3, weight_init=(lambda w: w + np.nan, {}))
    # the default stays the seeded truncated normal
    np.testing.assert_array_equal(LCAConv1D(3, 2, kernel_size=3, seed=4).weights,
                                  LCAConv1D(3, 2, kernel_size=3, seed=4, weight_init=None).weights)


def test_no_time_pad_for_3d():
    """lca-pytorch's no_time_pad: with pad="same", no padding along the first spatial axis."""
    layer = LCAConv3D(10, 3, kernel_size=(5, 7, 7), lca_iters=3, no_time_pad=True, return_vars=("acts", "recons"))
    assert layer.input_pad == (0, 3, 3) and LCAConv3D(10, 3, kernel_size=7).input_pad == (3, 3, 3)
    x = np.random.default_rng(7).standard_normal((1, 3, 5, 20, 20)).astype(np.float32)
    acts, recons = layer(x)
    assert acts.shape == (1, 10, 1, 20, 20) and recons.shape == x.shape
    assert LCAConv3D(10, 3, kernel_size=(5, 7, 7), pad="valid", no_time_pad=True).input_pad == (0, 0, 0)
    # drive and reconstruction against explicit loops with padding (0, 1, 1)
    small = LCAConv3D(2, 2, kernel_size=3, stride=(1, 2, 1), no_time_pad=True, dtype="float64", seed=1)
    s = np.random.default_rng(8).standard_normal((2, 2, 4, 5, 4))
    b = small.compute_input_drive(s)
    np.testing.assert_allclose(b, _correlate(s, small.weights, (1, 2, 1), (0, 1, 1)), atol=1e-12)
    np.testing.assert_allclose(small.compute_recon(b, in_shape=(4, 5, 4)),
                               _synthesis(b, small.weights, (1, 2, 1), (0, 1, 1), (4, 5, 4)), atol=1e-12)
    with pytest.raises(TypeError):
        LCAConv2D(4, 3, no_time_pad=True)  # as lca-pytorch: 3-D only
