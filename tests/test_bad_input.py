"""Bad input at every public entry point of the backend, ops, solvers, LCA and viz modules.

Each row of ``BAD`` is (callable, expected exception type, message fragment): the error must
be named and say what is wrong, never an unrelated traceback from deep inside. ``EMPTY`` holds
the empty-batch cases, which return empty results of the documented shape instead, and
``WORKS`` the inputs whose meaning is obvious (float16, case-insensitive backend names).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from sparsecoding import backend
from sparsecoding.backend import asarray, set_backend, use_backend
from sparsecoding.lca import LCA, LCAConv1D, LCAConv2D, LCAConv3D, run_lca
from sparsecoding.lca.dynamics import check_tau
from sparsecoding.ops.conv import ConvOperator, conv, conv_transpose
from sparsecoding.ops.fused import lca_step, momentum, prox_step
from sparsecoding.ops.pool import avg_pool, avg_pool_adjoint, max_pool, max_unpool
from sparsecoding.ops.elementwise import hard_threshold, nonneg_hard_threshold, nonneg_soft_threshold, soft_threshold
from sparsecoding.ops.linop import DenseOperator, power_iteration  # noqa: F401  (public; no array input to check)
from sparsecoding.solvers import coordinate_descent, fista, ista, lasso_energy
from sparsecoding.viz import save_curves, save_dictionary, tile_dictionary

R = np.random.default_rng(0)
W2 = R.standard_normal((4, 3, 3, 3))  # conv weights (K, C, k, k), float64
PHI = R.standard_normal((5, 6))
PHI /= np.linalg.norm(PHI, axis=1, keepdims=True)
X2 = R.standard_normal((2, 3, 8, 8))
Y2 = R.standard_normal((2, 4, 8, 8))
S = R.standard_normal((2, 6))
F32 = np.float32

# layer name -> (factory, input shape without the batch, code shape without the batch)
LAYERS = {
    "LCA": (lambda **kw: LCA(5, 6, **kw), (6,), (5,)),
    "LCAConv1D": (lambda **kw: LCAConv1D(4, 2, kernel_size=3, **kw), (2, 9), (4, 9)),
    "LCAConv2D": (lambda **kw: LCAConv2D(4, 3, kernel_size=3, **kw), (3, 6, 6), (4, 6, 6)),
    "LCAConv3D": (lambda **kw: LCAConv3D(4, 2, kernel_size=3, **kw), (2, 4, 4, 4), (4, 4, 4, 4)),
}


def _layer(name, **kw):
    return LAYERS[name][0](**{"lca_iters": 5, **kw})


def _x(name, n=2, dtype=F32, scale=1.0):
    return (scale * R.standard_normal((n, *LAYERS[name][1]))).astype(dtype)


def _acts(name, n=2, dtype=F32):
    return np.abs(R.standard_normal((n, *LAYERS[name][2]))).astype(dtype)


def _set(obj, attr, value):
    setattr(obj, attr, value)


def _conv_op(**kw):
    return ConvOperator(W2, (8, 8), 1, "same", **kw)


def _dense():
    return DenseOperator(PHI)


def _lca_run(s=S, **kw):
    args = dict(op=_dense(), s=s, lambda_=0.1, tau=10.0, transfer=lambda u: soft_threshold(u, 0.1), n_iter=5)
    args.update(kw)
    return run_lca(**args)


def _nan_residual(name):
    m = _layer(name)
    err = _x(name)
    err[0, 0] = np.nan
    return m.update_weights(_acts(name), err)


def _nan_acts(name):
    m = _layer(name)
    a = _acts(name)
    a[0, 0] = np.inf
    return m.update_weights(a, _x(name))


def _schedule_nan(name):
    m = _layer(name, lr_schedule=lambda step: float("nan"))
    return m.update_weights(_acts(name), _x(name))


C128 = np.complex128
BAD = []
for name in LAYERS:
    BAD += [
        # empty batches are tested below; hyperparameter ranges: constructor and later assignment
        (lambda name=name: _layer(name, check_every=0), ValueError, "check_every must be an integer >= 1"),
        (lambda name=name: _layer(name, check_every=-3), ValueError, "check_every must be an integer >= 1"),
        (lambda name=name: _set(_layer(name), "check_every", 0), ValueError, "check_every must be an integer >= 1"),
        (lambda name=name: _layer(name, tol=-1e-3), ValueError, "tol must be a finite number >= 0 or None"),
        (lambda name=name: _set(_layer(name), "tol", float("nan")), ValueError, "tol must be"),
        (lambda name=name: _layer(name, d_update_clip=-1.0), ValueError, "d_update_clip must be a number >= 0"),
        (lambda name=name: _set(_layer(name), "d_update_clip", float("nan")), ValueError, "d_update_clip must be"),
        (lambda name=name: _layer(name, eta=float("nan")), ValueError, "eta must be a finite number >= 0"),
        (lambda name=name: _set(_layer(name), "eta", float("inf")), ValueError, "eta must be a finite number >= 0"),
        (lambda name=name: _set(_layer(name), "eta", -0.1), ValueError, "eta must be a finite number >= 0"),
        (lambda name=name: _layer(name, lambda_=float("nan")), ValueError, "lambda_ must be a finite number >= 0"),
        (lambda name=name: _set(_layer(name), "lambda_", -1), ValueError, "lambda_ must be a finite number >= 0"),
        (lambda name=name: _layer(name, tau=0), ValueError, "tau must be a finite number > 0"),
        (lambda name=name: _set(_layer(name), "tau", float("inf")), ValueError, "tau must be a finite number > 0"),
        (lambda name=name: _layer(name, lca_iters=0), ValueError, "lca_iters must be an integer >= 1"),
        (lambda name=name: _set(_layer(name), "lca_iters", 2.5), ValueError, "lca_iters must be an integer >= 1"),
        (lambda name=name: _set(_layer(name), "lca_iters", "10"), TypeError, "lca_iters must be an integer"),
        (lambda name=name: _set(_layer(name), "lr_schedule", 0.1), TypeError, "lr_schedule must be None or a callable"),
        (lambda name=name: _set(_layer(name), "solver", "adam"), ValueError, "solver must be 'lca', 'fista' or 'cd'"),
        (lambda name=name: _set(_layer(name), "transfer_func", "relu"), ValueError, "transfer_func"),
        (lambda name=name: _set(_layer(name, solver="fista"), "transfer_func", "hard_threshold"), ValueError,
         "soft_threshold"),
        (lambda name=name: _set(_layer(name), "return_vars", ("acts", "spikes")), ValueError, "return_vars"),
        (lambda name=name: _layer(name, backend="torch"), ValueError, "backend must be one of"),
        # complex arrays: TypeError naming the argument
        (lambda name=name: _layer(name)(_x(name, dtype=C128)), TypeError, "inputs must be real"),
        (lambda name=name: _layer(name).encode(_x(name, dtype=C128)), TypeError, "inputs must be real"),
        (lambda name=name: _layer(name).compute_input_drive(_x(name, dtype=C128)), TypeError, "inputs must be real"),
        (lambda name=name: _layer(name).compute_recon(_acts(name, dtype=C128)), TypeError, "acts must be real"),
        (lambda name=name: _layer(name).update_weights(_acts(name, dtype=C128), _x(name)), TypeError,
         "acts must be real"),
        (lambda name=name: _layer(name).update_weights(_acts(name), _x(name, dtype=C128)), TypeError,
         "recon_error must be real"),
        (lambda name=name: _layer(name).dictionary_gradient(_acts(name), _x(name, dtype=C128)), TypeError,
         "recon_error must be real"),
        (lambda name=name: _layer(name)(_x(name), initial_states=_acts(name, dtype=C128)), TypeError,
         "initial_states must be real"),
        (lambda name=name: _layer(name)(_x(name), drive_scaling=_acts(name, dtype=C128)), TypeError,
         "drive_scaling must be real"),
        # non-finite values and a dictionary step that would make the weights non-finite
        (lambda name=name: _layer(name)(np.full_like(_x(name), np.nan)), ValueError, "inputs contains NaN or Inf"),
        (lambda name=name: _nan_residual(name), FloatingPointError, "recon_error contains NaN or Inf"),
        (lambda name=name: _nan_acts(name), FloatingPointError, "acts contain NaN or Inf"),
        (lambda name=name: _layer(name, eta=1e38).update_weights(_acts(name), 1e3 * _x(name)), FloatingPointError,
         "overflows float32"),
        (lambda name=name: _schedule_nan(name), ValueError, "lr_schedule(1) returned an invalid eta"),
        (lambda name=name: _layer(name).update_weights(_acts(name, n=3), _x(name)), ValueError, "acts must have shape"),
        # finite but too large for float32 arithmetic: reported as overflow, not as "increase tau"
        (lambda name=name: _layer(name)(_x(name, scale=1e30)), ValueError, "too large for float32 arithmetic"),
        (lambda name=name: _layer(name, input_unit_var=False)(_x(name, dtype=np.float64, scale=1e39)), ValueError,
         "too large for float32 arithmetic"),
        (lambda name=name: _layer(name).encode(_x(name, scale=1e30)), ValueError, "too large for float32 arithmetic"),
    ]

BAD += [
    # backend names: case-insensitive, anything else a ValueError listing the choices
    (lambda: set_backend("torch"), ValueError, "backend must be one of ('numpy', 'cupy')"),
    (lambda: set_backend(None), ValueError, "backend must be one of"),
    (lambda: use_backend("Torch").__enter__(), ValueError, "backend must be one of"),
    (lambda: asarray([1.0], backend="jax"), ValueError, "backend must be one of"),
    # solvers: loop arguments, step, tolerance, complex / non-finite / overflowing inputs
    (lambda: fista(_dense(), S, 0.1, check_every=0), ValueError, "check_every must be an integer >= 1"),
    (lambda: ista(_dense(), S, 0.1, check_every=-1), ValueError, "check_every must be an integer >= 1"),
    (lambda: fista(_dense(), S, 0.1, max_iter=0), ValueError, "max_iter must be an integer >= 1"),
    (lambda: coordinate_descent(_dense(), S, 0.1, max_iter=0), ValueError, "max_iter must be an integer >= 1"),
    (lambda: fista(_dense(), S, 0.1, step=0), ValueError, "step must be a finite number > 0"),
    (lambda: ista(_dense(), S, 0.1, step=-0.5), ValueError, "step must be a finite number > 0"),
    (lambda: fista(_dense(), S, 0.1, step=float("nan")), ValueError, "step must be a finite number > 0"),
    (lambda: fista(_dense(), S, 0.1, step=1e3), ValueError, "step must be in (0, 1/L]"),
    (lambda: fista(_dense(), S, 0.1, tol=-1.0), ValueError, "tol must be a finite number >= 0 or None"),
    (lambda: ista(_dense(), S, 0.1, tol=float("nan")), ValueError, "tol must be"),
    (lambda: coordinate_descent(_dense(), S, 0.1, tol=-1.0), ValueError, "tol must be"),
    (lambda: fista(_dense(), S, float("nan")), ValueError, "lambda_ must be a finite number >= 0"),
    (lambda: fista(_dense(), S.astype(C128), 0.1), TypeError, "s must be real"),
    (lambda: ista(_dense(), S, 0.1, a0=np.zeros((2, 5), C128)), TypeError, "a0 must be real"),
    (lambda: coordinate_descent(_dense(), S.astype(C128), 0.1), TypeError, "s must be real"),
    (lambda: coordinate_descent(_dense(), S[0], 0.1), ValueError, "s must be a batch of samples, shape (N, 6)"),
    (lambda: fista(_dense(), S[0], 0.1), ValueError, "(one sample: s[None])"),
    (lambda: coordinate_descent(DenseOperator(np.where(PHI > 0.5, np.nan, PHI)), S, 0.1), ValueError,
     "op.W contains NaN or Inf"),
    (lambda: fista(DenseOperator(np.where(PHI > 0.5, np.inf, PHI)), S, 0.1), ValueError, "W contain NaN or Inf"),
    (lambda: fista(_dense(), np.full((2, 6), np.inf), 0.1), ValueError, "s contains NaN or Inf"),
    (lambda: fista(DenseOperator(PHI.astype(F32)), 1e30 * S.astype(F32), 0.1), ValueError,
     "too large for float32 arithmetic"),
    (lambda: DenseOperator(PHI.astype(np.float16)), TypeError, "W must be a float32 or float64 array"),
    (lambda: DenseOperator(PHI.astype(C128)), TypeError, "W must be a float32 or float64 array"),
    (lambda: _dense().update_weights(PHI[:3]), ValueError, "W must keep shape"),
    (lambda: ConvOperator(W2.astype(np.float16), (8, 8), 1, "same"), TypeError, "w must be float32 or float64"),
    (lambda: ConvOperator(W2, (8, 8), 1, "same").update_weights(W2[:2]), ValueError, "w must keep shape"),
    # LCA dynamics
    (lambda: _lca_run(check_every=0), ValueError, "check_every must be an integer >= 1"),
    (lambda: _lca_run(n_iter=0), ValueError, "n_iter must be an integer >= 1"),
    (lambda: _lca_run(tol=-1.0), ValueError, "tol must be"),
    (lambda: _lca_run(tau=0.0), ValueError, "tau must be a finite number > 0"),
    (lambda: _lca_run(lambda_=-1.0), ValueError, "lambda_ must be"),
    (lambda: _lca_run(s=S.astype(C128)), TypeError, "s must be real"),
    (lambda: _lca_run(initial_states=np.zeros((2, 5), C128)), TypeError, "initial_states must be real"),
    (lambda: _lca_run(drive_scaling=np.full((2, 5), np.nan)), ValueError, "drive_scaling contains NaN or Inf"),
    (lambda: _lca_run(s=1e30 * S.astype(F32), op=DenseOperator(PHI.astype(F32))), ValueError,
     "too large for float32 arithmetic"),
    (lambda: run_lca(_dense(), np.ones((1, 6)), 0.0, 0.05, lambda u: u, 500), FloatingPointError,
     "diverged at iteration"),
    (lambda: check_tau(float("nan"), 1.0), ValueError, "tau must be a finite number > 0"),
    (lambda: check_tau(0.1, 1.0), ValueError, "unstable"),
    # convolutions: complex operands, float16 operators, empty output
    (lambda: conv(X2.astype(C128), W2), TypeError, "x must be real"),
    (lambda: conv(X2, W2.astype(C128)), TypeError, "w must be real"),
    (lambda: conv_transpose(Y2.astype(C128), W2, padding=1), TypeError, "y must be real"),
    (lambda: conv(X2.astype(object), W2), TypeError, "x must be a real numeric array"),
    (lambda: conv([[1.0]], W2), TypeError, "x must be an array"),
    (lambda: ConvOperator(W2.astype(np.float16), (8, 8)), TypeError, "w must be float32 or float64"),
    (lambda: ConvOperator(W2.astype(C128), (8, 8)), TypeError, "w must be real"),
    (lambda: _conv_op().forward(X2.astype(C128)), TypeError, "x must be real"),
    (lambda: _conv_op().adjoint(Y2.astype(C128)), TypeError, "y must be real"),
    (lambda: _conv_op(layout="channels_last").forward(np.moveaxis(X2, 1, -1).astype(C128)), TypeError,
     "x must be real"),
    (lambda: _conv_op().weight_grad(X2, Y2.astype(C128)), TypeError, "y must be real"),
    (lambda: _conv_op().weight_grad(X2, Y2[:1]), ValueError, "same batch size"),
    (lambda: _conv_op().residual_plan(X2.astype(C128)), TypeError, "s must be real"),
    (lambda: (lambda op: op.forward_residual(op.residual_plan(X2), np.zeros((2, 8, 8, 4), C128)))(
        _conv_op(method="im2col")), TypeError, "a must be real"),
    # pools
    (lambda: max_pool(X2.astype(C128), 2), TypeError, "x must be real"),
    (lambda: max_pool(np.moveaxis(X2, 1, -1).astype(C128), 2, channels_last=True), TypeError, "x must be real"),
    (lambda: max_unpool(np.ones((1, 1, 2, 2)), np.full((1, 1, 2, 2), 99), (4, 4)), ValueError,
     "indices must be flat positions in [0, 16)"),
    (lambda: max_unpool(np.ones((1, 1, 2, 2)), np.full((1, 1, 2, 2), -1), (4, 4)), ValueError,
     "indices must be flat positions in [0, 16)"),
    (lambda: max_unpool(np.ones((1, 2, 2, 1)), np.full((1, 2, 2, 1), 16), (4, 4), channels_last=True),
     ValueError, "output_size is too small for these indices"),
    (lambda: max_unpool(np.ones((1, 1, 2, 2)), np.array([[[[0, 2], [8, 10]]]]), (2, 2)), ValueError,
     "output_size is too small for these indices"),
    (lambda: max_unpool(np.ones((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)), (4, 4)), TypeError,
     "indices must be an integer array"),
    (lambda: max_unpool(np.ones((1, 1, 2, 2)), np.zeros((1, 1, 2, 2), np.int64), (4,)), ValueError,
     "output_size must be 2 positive ints"),
    (lambda: max_unpool(np.ones((1, 1, 2, 2), C128), np.zeros((1, 1, 2, 2), np.int64), (4, 4)), TypeError,
     "y must be real"),
    (lambda: avg_pool(X2, 9), ValueError, "smaller than the pool"),
    (lambda: avg_pool_adjoint(Y2, (3, 3), 2), ValueError, "does not pool"),
    # thresholds and fused updates
    (lambda: soft_threshold(S.astype(C128), 0.1), TypeError, "u must be real"),
    (lambda: nonneg_soft_threshold(S.astype(C128), 0.1), TypeError, "u must be real"),
    (lambda: hard_threshold(S, float("nan")), ValueError, "lambda_ must be a number >= 0"),
    (lambda: nonneg_hard_threshold(S, -1.0), ValueError, "lambda_ must be a number >= 0"),
    (lambda: lca_step(S.astype(C128), S, S, 0.1, 0.1, False), TypeError, "u must be a real array"),
    (lambda: prox_step(S, S.astype(C128), S, 0.1, 0.1, False), TypeError, "c must be a real array"),
    (lambda: momentum(S, S.astype(C128), np.zeros(2)), TypeError, "a must be a real array"),
    # pictures
    (lambda: tile_dictionary(np.zeros((0, 1, 3, 3))), ValueError, "weights has no atoms (K = 0"),
    (lambda: tile_dictionary(np.zeros((0, 9))), ValueError, "weights has no atoms (K = 0"),
    (lambda: tile_dictionary(np.zeros((4, 10))), ValueError, "not square images"),
    (lambda: tile_dictionary(np.zeros((4, 10)), shape=(3, 3)), ValueError, "values per atom"),
    (lambda: tile_dictionary(np.zeros((4, 1, 3, 3), C128)), TypeError, "weights must be real"),
    (lambda: save_dictionary(np.zeros((0, 1, 3, 3)), "unused.png"), ValueError, "weights has no atoms (K = 0"),
    (lambda: save_curves({}, "unused.png"), ValueError, "curves is empty"),
]


@pytest.mark.parametrize("call, exc, fragment", BAD)
def test_bad_input_raises_named_error(call, exc, fragment):
    with pytest.raises(exc) as info:
        call()
    assert fragment in str(info.value), str(info.value)


def test_failed_assignment_and_failed_step_keep_the_previous_state():
    m = _layer("LCAConv2D", eta=0.05)
    with pytest.raises(ValueError, match="tau"):
        m.tau = -1
    assert m.tau == 100.0 and m.eta == 0.05
    before = m.get_weights()
    err = _x("LCAConv2D")
    err[0, 0, 0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="previous weights kept"):
        m.update_weights(_acts("LCAConv2D"), err)
    np.testing.assert_array_equal(m.get_weights(), before)


def test_backend_names_are_case_insensitive():
    with use_backend("NumPy") as xp:
        assert xp is np and backend.get_backend() == "numpy"
    set_backend(" NUMPY ")
    assert backend.get_backend() == "numpy"
    assert asarray([1, 2], backend="Numpy", dtype=F32).dtype == F32
    assert isinstance(LCA(3, 4, backend="NumPy").weights, np.ndarray)


def test_environment_variable_error_names_the_variable():
    code = "import sparsecoding.backend as b; print(b.get_backend())"
    env = dict(os.environ, SPARSECODING_BACKEND="NumPy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "numpy"
    env["SPARSECODING_BACKEND"] = "torch"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "backend must be one of ('numpy', 'cupy')" in bad.stderr and "SPARSECODING_BACKEND" in bad.stderr


# ---------------------------------------------------------------- empty batches: documented empty results
def _empty_update(name):
    m = _layer(name)
    before = m.get_weights()
    update = m.update_weights(_acts(name, n=0), _x(name, n=0))
    np.testing.assert_array_equal(m.get_weights(), before)  # unchanged
    return update


EMPTY = []
for name, (make, in_shape, code_shape) in LAYERS.items():
    w_shape = _layer(name).weight_shape
    EMPTY += [
        (lambda name=name: _layer(name)(_x(name, n=0)), (0, *code_shape)),
        (lambda name=name: _layer(name, solver="fista")(_x(name, n=0)), (0, *code_shape)),
        (lambda name=name: _layer(name, track_metrics=True)(_x(name, n=0)), (0, *code_shape)),
        (lambda name=name: _layer(name, return_all_ts=True)(_x(name, n=0)), (0, *code_shape, 0)),
        (lambda name=name: _layer(name).solve(_x(name, n=0))["recons"], (0, *in_shape)),
        (lambda name=name: _layer(name).solve(_x(name, n=0))["states"], (0, *code_shape)),
        (lambda name=name: _layer(name).compute_input_drive(_x(name, n=0)), (0, *code_shape)),
        (lambda name=name, in_shape=in_shape: _layer(name).compute_recon(_acts(name, n=0), in_shape=in_shape[1:] or None),
         (0, *in_shape)),
        (lambda name=name: _layer(name).energy(_x(name, n=0), _acts(name, n=0)), (0,)),
        (lambda name=name: _empty_update(name), w_shape),
        (lambda name=name: _layer(name).dictionary_gradient(_acts(name, n=0), _x(name, n=0)), w_shape),
    ]

EMPTY += [
    (lambda: fista(_dense(), np.zeros((0, 6)), 0.1).codes, (0, 5)),
    (lambda: ista(_dense(), np.zeros((0, 6)), 0.1).codes, (0, 5)),
    (lambda: coordinate_descent(_dense(), np.zeros((0, 6)), 0.1).codes, (0, 5)),
    (lambda: fista(_dense(), np.zeros((0, 6)), 0.1).energy, (0,)),
    (lambda: fista(ConvOperator(W2, (8, 8), 1, "same"), np.zeros((0, 3, 8, 8)), 0.1).codes, (0, 4, 8, 8)),
    (lambda: lasso_energy(_dense(), np.zeros((0, 6)), np.zeros((0, 5)), 0.1), (0,)),
    (lambda: _lca_run(s=np.zeros((0, 6)))["acts"], (0, 5)),
    (lambda: _lca_run(s=np.zeros((0, 6)))["recons"], (0, 6)),
    (lambda: conv(np.zeros((0, 3, 8, 8)), W2, padding="same"), (0, 4, 8, 8)),
    (lambda: conv(np.zeros((0, 3, 8, 8)), W2, method="fft"), (0, 4, 6, 6)),
    (lambda: conv_transpose(np.zeros((0, 4, 6, 6)), W2), (0, 3, 8, 8)),
    (lambda: _conv_op(method="im2col").forward(np.zeros((0, 3, 8, 8))), (0, 4, 8, 8)),
    (lambda: _conv_op(method="im2col", code_layout="channels_last").forward(np.zeros((0, 3, 8, 8))), (0, 8, 8, 4)),
    (lambda: _conv_op(method="fft").adjoint(np.zeros((0, 4, 8, 8))), (0, 3, 8, 8)),
    (lambda: _conv_op(method="im2col", code_layout="channels_last").adjoint(np.zeros((0, 8, 8, 4))), (0, 3, 8, 8)),
    (lambda: _conv_op(layout="channels_last").forward(np.zeros((0, 8, 8, 3))), (0, 8, 8, 4)),
    (lambda: _conv_op(layout="channels_last").adjoint(np.zeros((0, 8, 8, 4))), (0, 8, 8, 3)),
    (lambda: _conv_op().weight_grad(np.zeros((0, 3, 8, 8)), np.zeros((0, 4, 8, 8))), (4, 3, 3, 3)),
    (lambda: _conv_op(layout="channels_last").weight_grad(np.zeros((0, 8, 8, 3)), np.zeros((0, 8, 8, 4))),
     (4, 3, 3, 3)),
    (lambda: (lambda op: op.forward_residual(op.residual_plan(np.zeros((0, 3, 8, 8))), np.zeros((0, 8, 8, 4)))[0])(
        _conv_op(method="im2col", code_layout="channels_last")), (0, 8, 8, 4)),
    (lambda: max_pool(np.zeros((0, 3, 8, 8)), 2)[0], (0, 3, 4, 4)),
    (lambda: max_pool(np.zeros((0, 8, 8, 3)), 2, channels_last=True)[1], (0, 4, 4, 3)),
    (lambda: max_unpool(np.zeros((0, 4, 4, 3)), np.zeros((0, 4, 4, 3), np.int64), (8, 8), channels_last=True),
     (0, 8, 8, 3)),
    (lambda: max_unpool(np.zeros((0, 3, 4, 4)), np.zeros((0, 3, 4, 4), np.int64), (8, 8)), (0, 3, 8, 8)),
    (lambda: avg_pool(np.zeros((0, 3, 8, 8)), 2), (0, 3, 4, 4)),
    (lambda: avg_pool_adjoint(np.zeros((0, 3, 4, 4)), (8, 8), 2), (0, 3, 8, 8)),
    (lambda: soft_threshold(np.zeros((0, 5)), 0.1), (0, 5)),
    (lambda: lca_step(np.zeros((0, 5)), np.zeros((0, 5)), np.zeros((0, 5)), 0.1, 0.1, True)[1], (0, 5)),
    (lambda: prox_step(np.zeros((0, 5)), np.zeros((0, 5)), np.zeros((0, 5)), 0.1, 0.1, False)[1], (0,)),
    (lambda: momentum(np.zeros((0, 5)), np.zeros((0, 5)), np.zeros(0)), (0, 5)),
    (lambda: _dense().forward(np.zeros((0, 6))), (0, 5)),
    (lambda: ConvOperator(W2, (8, 8), 1, "same").adjoint(np.zeros((0, 4, 8, 8))), (0, 3, 8, 8)),
]


@pytest.mark.parametrize("call, shape", EMPTY)
def test_empty_batch_gives_empty_result_of_the_documented_shape(call, shape):
    out = call()
    assert tuple(out.shape) == shape


def test_empty_batch_solver_result_and_layer_state():
    res = fista(_dense(), np.zeros((0, 6)), 0.1)
    assert res.n_iter == 0 and res.converged and res.history == []
    m = _layer("LCAConv2D", track_metrics=True)
    m(_x("LCAConv2D", n=0))
    assert m.n_iter_ == 0 and m.converged_ and all(v.shape == (0,) for v in m.metrics.values())


# --------------------------------------------------------- float16: obvious meaning, so it works
@pytest.mark.parametrize("name", list(LAYERS))
def test_float16_inputs_are_cast_to_the_layer_dtype(name):
    x = _x(name)
    m16, m32 = _layer(name, seed=1), _layer(name, seed=1)
    a16 = m16(x.astype(np.float16))
    a32 = m32(x.astype(np.float16).astype(F32))
    assert a16.dtype == F32
    np.testing.assert_array_equal(a16, a32)
    assert m16.update_weights(_acts(name).astype(np.float16), x.astype(np.float16)).dtype == F32


def test_float16_conv_computes_in_float32():
    x16, w16 = X2.astype(np.float16), W2.astype(np.float16)
    y = conv(x16, w16, padding="same")
    assert y.dtype == F32
    np.testing.assert_allclose(y, conv(x16.astype(F32), w16.astype(F32), padding="same"), rtol=1e-6, atol=1e-6)
    xt = conv_transpose(Y2.astype(np.float16), w16, padding=1)
    assert xt.dtype == F32
    assert conv(x16, W2).dtype == np.float64  # float32/float64 weights set the dtype, as before
    assert conv(X2, w16).dtype == np.float64  # float16 weights with float64 data: float64


def test_float16_elsewhere_works():
    # solvers cast float16 data to the dictionary's dtype; pools and thresholds keep float16
    res = fista(DenseOperator(PHI.astype(F32)), S.astype(np.float16), 0.1)
    assert res.codes.dtype == F32
    y, idx = max_pool(X2.astype(np.float16), 2)
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, max_pool(X2.astype(np.float16).astype(F32), 2)[0].astype(np.float16))
    back = max_unpool(np.moveaxis(y, 1, -1), np.moveaxis(idx, 1, -1), (8, 8), channels_last=True)
    assert back.dtype == np.float16 and back.shape == (2, 8, 8, 3)
    u, a = lca_step(S.astype(np.float16), S.astype(np.float16), S.astype(np.float16), 0.1, 0.1, True)
    assert a.dtype == np.float16
