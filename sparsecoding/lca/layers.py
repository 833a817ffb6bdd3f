"""LCA layers: dense ``LCA`` and convolutional ``LCAConv1D/2D/3D``.

The constructor names and defaults are lca-pytorch's, so its users change
only the import. What is new: ``solver="fista"`` (same fixed point, far fewer
iterations) and ``solver="cd"`` (coordinate descent: the exact dense route for ``LCA``, locally
greedy coordinate descent for the convolutional layers; no ``mask`` there), ``tol`` (early stop once the relative duality gap, a certificate of the
relative distance of the energy to the optimum computed from the residual, is below it;
checked every ``check_every`` steps; for hard thresholds and callable transfers, which
minimise no convex energy, the relative change of the potentials over one step), ``seed``,
``dtype`` and ``backend``. ``solve(inputs)`` returns an
:class:`~sparsecoding.lca.dynamics.LCAResult` (the relaxation runner's result type, item
access by lca-pytorch's variable names); ``encode(inputs)`` returns what lca-pytorch's does
(a tuple with one list per ``return_vars`` name); the layer keeps ``n_iter_`` and ``converged_``.
The convolutional layers take lca-pytorch's positional order
``(out_neurons, in_neurons, result_dir, kernel_size, stride, lambda_, tau, eta, lca_iters, pad, ...)``;
what lca-pytorch lacks is keyword-only. The dense ``LCA`` (lca-pytorch has none) keeps its own
order ``(out_neurons, in_neurons, lambda_, tau, eta, lca_iters, ...)``.
``layer.fit(X, *, epochs, batch_size, seed, callbacks, checkpoint, ...)`` learns the
dictionary on the library's learning loop, as every model family does, and returns the
per-epoch :class:`~sparsecoding.training.History`.

Energy per sample (DESIGN.md §5)::

    E(a) = 1/2 ||s - Phi^T a||^2 + lambda ||a||_1      (a >= 0 when nonneg)

Checks. Every hyperparameter is range-checked in the constructor and on every
later assignment (they are properties): ``lambda_`` finite >= 0, ``tau``
finite > 0 (and ``1/tau <= 2/L`` at encoding time), ``eta`` finite >= 0,
``lca_iters`` and ``check_every`` integers >= 1, ``tol`` None or finite >= 0,
``d_update_clip`` >= 0 (inf allowed), ``lr_schedule`` None or callable,
``transfer_func`` / ``nonneg`` / ``solver`` / ``lateral`` / ``return_vars``
from their choices; messages name the argument and the allowed range.
Arrays (inputs, acts, recon_error, initial_states, drive_scaling) must be
real (complex: ``TypeError``) and finite; other real dtypes (float16,
integers) are cast to the layer's ``dtype``. Inputs so large that the squared
residuals overflow the layer's dtype are reported as such (``ValueError``),
not as a divergence. An empty batch (N = 0) encodes to empty arrays of the
usual shapes (``n_iter_ = 0``, ``converged_ = True``), and ``update_weights``
on it leaves the dictionary unchanged and returns a zero update. A dictionary
step that would make the weights non-finite raises ``FloatingPointError``
naming the likely cause and leaves the previous weights in place.
"""
from __future__ import annotations

import csv
import numbers
import os
from collections.abc import Mapping

import numpy as np

from ..backend import to_numpy, namespace
from ..data.preprocessing import standardize
from ..ops.conv import ConvOperator, conv_output_shape
from ..ops.elementwise import get_transfer
from ..ops.linop import DenseOperator
from ..solvers.cd_conv import conv_coordinate_descent
from ..solvers.lasso import (WeightedOperator, check_integer, check_mask, check_number, check_real_array,
                             coordinate_descent, fista)
from .dynamics import RETURN_VARS, LCAResult, check_tau, run_lca
from .learning import fit_dictionary
from .masks import masked_standardize

__all__ = ["LCA", "LCAConv1D", "LCAConv2D", "LCAConv3D", "LAYER_RETURN_VARS"]

# what ``return_vars`` may name: the variables of the iteration and lca-pytorch's "conns"
LAYER_RETURN_VARS = RETURN_VARS + ("conns",)


def _bool(name, value):
    return bool(value)


def _callable_or_none(name, value):
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be None or a callable taking the forward-pass count and returning eta, "
                        f"got {value!r}")
    return value


def _return_vars(name, value):
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be a sequence of names from {LAYER_RETURN_VARS}, got {value!r}")
    value = tuple(value)
    if any(not isinstance(v, str) or v not in LAYER_RETURN_VARS for v in value):
        raise ValueError(f"{name} must be a sequence of names from {LAYER_RETURN_VARS}, got {value!r}")
    return value


def _result_dir(value):
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"result_dir must be None or a path (str or os.PathLike), got {type(value).__name__} "
                        f"{value!r}; lca-pytorch's positional order is (out_neurons, in_neurons, result_dir, "
                        f"kernel_size, stride, ...): pass kernel_size= by keyword")
    return value


def _weight_init(value):
    """``None`` (truncated standard normal from ``seed``) or lca-pytorch's ``(callable, kwargs)``."""
    if value is None:
        return None, {}
    if not (isinstance(value, tuple) and len(value) == 2 and callable(value[0]) and isinstance(value[1], Mapping)):
        raise TypeError(f"weight_init must be None or a tuple (callable, dict of keyword arguments), as lca-pytorch's "
                        f"(torch.nn.init.trunc_normal_, {{}}); the callable takes an array of the weight shape and "
                        f"returns the initial weights; got {value!r}")
    return value[0], dict(value[1])


def _conv_param(value, d, name):
    """lca-pytorch's kernel_size / stride: an int, or a tuple of ``d`` ints (each >= 1)."""
    def bad(msg):
        return TypeError(f"{name} must be a positive int or a tuple of {d} positive ints, {msg}")

    if isinstance(value, bool):
        raise bad(f"got the bool {value!r}")
    if isinstance(value, numbers.Integral):
        value = (int(value),) * d
    elif isinstance(value, str):
        raise bad(f"got the string {value!r}")
    elif not isinstance(value, tuple):
        raise bad(f"got {type(value).__name__} {value!r} (as lca-pytorch, only int or tuple: write a tuple)")
    elif any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in value):
        raise bad(f"got {value!r}")
    value = tuple(int(v) for v in value)
    if len(value) != d or any(v < 1 for v in value):
        raise ValueError(f"{name} must be a positive int or a tuple of {d} positive ints, got {value!r}")
    return value


class _Hyper:
    """A hyperparameter checked in the constructor and on every later assignment."""

    def __init__(self, check):
        self.check = check

    def __set_name__(self, owner, name):
        self.name, self.slot = name, "_hp_" + name

    def __get__(self, obj, objtype=None):
        return self if obj is None else getattr(obj, self.slot)

    def __set__(self, obj, value):
        setattr(obj, self.slot, self.check(self.name, value))


class _LCABase:
    _spatial_dims = None  # None for dense

    # the constructor sets these in this order (the first bad one is reported)
    lambda_ = _Hyper(lambda name, v: check_number(name, v, 0.0))
    tau = _Hyper(lambda name, v: check_number(name, v, 0.0, strict=True))
    eta = _Hyper(lambda name, v: check_number(name, v, 0.0))
    lca_iters = _Hyper(lambda name, v: check_integer(name, v, 1))
    return_vars = _Hyper(_return_vars)
    return_all_ts = _Hyper(_bool)
    track_metrics = _Hyper(_bool)
    input_zero_mean = _Hyper(_bool)
    input_unit_var = _Hyper(_bool)
    d_update_clip = _Hyper(lambda name, v: check_number(name, v, 0.0, allow_inf=True))
    lr_schedule = _Hyper(_callable_or_none)
    tol = _Hyper(lambda name, v: check_number(name, v, 0.0, allow_none=True))
    check_every = _Hyper(lambda name, v: check_integer(name, v, 1))

    @property
    def transfer_func(self):
        """The transfer function: "soft_threshold", "hard_threshold" or a callable ``u -> a`` (checked)."""
        return self._transfer_func

    @transfer_func.setter
    def transfer_func(self, value):
        self._set_coding(value, getattr(self, "_nonneg", False), getattr(self, "_solver", "lca"))

    @property
    def nonneg(self):
        """Non-negative codes (bool)."""
        return self._nonneg

    @nonneg.setter
    def nonneg(self, value):
        self._set_coding(self._transfer_func, bool(value), self._solver)

    @property
    def solver(self):
        """The encoder: "lca" (the dynamics), "fista" or "cd" (coordinate descent; both soft threshold only)."""
        return self._solver

    @solver.setter
    def solver(self, value):
        self._set_coding(self._transfer_func, self._nonneg, value)

    def _set_coding(self, transfer_func, nonneg, solver):
        """Validate the transfer function / sign constraint / solver together, then set all three."""
        if not callable(transfer_func) and not isinstance(transfer_func, str):
            raise TypeError(f"transfer_func must be 'soft_threshold', 'hard_threshold' or a callable u -> a, got "
                            f"{type(transfer_func).__name__} {transfer_func!r}")
        transfer = get_transfer(transfer_func, nonneg)  # validates the name
        if solver not in ("lca", "fista", "cd"):
            raise ValueError(f"solver must be 'lca', 'fista' or 'cd', got {solver!r}")
        if solver != "lca" and (callable(transfer_func) or transfer_func != "soft_threshold"):
            raise ValueError(f"solver={solver!r} solves the L1 problem: it needs transfer_func='soft_threshold'")
        self._transfer_func, self._nonneg, self._solver, self._transfer = transfer_func, bool(nonneg), solver, transfer

    @property
    def lateral(self):
        """The lateral term: "recon" or "gram" (checked on assignment)."""
        return self._lateral

    @lateral.setter
    def lateral(self, value):
        if value not in ("recon", "gram"):
            raise ValueError(f"lateral must be 'recon' or 'gram', got {value!r}")
        if value == "gram" and self._spatial_dims is not None and getattr(self, "pad", "valid") != "valid":
            raise ValueError("lateral='gram' (the precomputed lateral tensor) is exact only for pad='valid'; "
                             "with 'same' it is not the gradient of the cropped objective at the borders")
        self._lateral = value

    def __init__(self, out_neurons, in_neurons, *, result_dir=None, lambda_=0.25, tau=100, eta=0.01,
                 lca_iters=1000, pad="valid", return_vars=("acts",), return_all_ts=False, nonneg=True,
                 track_metrics=False, transfer_func="soft_threshold", input_zero_mean=True, input_unit_var=True,
                 cudnn_benchmark=True, d_update_clip=np.inf, lr_schedule=None, req_grad=False, weight_init=None,
                 seed=None, dtype="float32", tol=None, solver="lca", check_every=10, backend=None, lateral="recon",
                 conv_method="auto"):
        given = locals()
        self.out_neurons = check_integer("out_neurons", out_neurons, 1)
        self.in_neurons = check_integer("in_neurons", in_neurons, 1)
        self.result_dir = _result_dir(result_dir)
        for name, attr in vars(_LCABase).items():  # the checked hyperparameters, in their order
            if isinstance(attr, _Hyper):
                setattr(self, name, given[name])
        self._set_coding(transfer_func, nonneg, solver)
        self.cudnn_benchmark = bool(cudnn_benchmark)  # accepted for lca-pytorch's signature; no cuDNN here
        if req_grad:
            raise ValueError("req_grad=True (autograd through the LCA loop) is not available: sparsecoding has no "
                             "autograd; learn the dictionary with update_weights, dictionary_gradient or fit")
        self.req_grad = False
        self.weight_init, self.weight_init_kwargs = _weight_init(weight_init)
        self.pad, self.conv_method = pad, conv_method
        self.lateral = lateral  # checked against pad
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
        self.seed = seed
        self.forward_pass = 1
        self.metrics = None
        self._ops = {}
        xp = namespace(backend)
        self.xp = xp
        self._weights = xp.asarray(self._initial_weights(seed), dtype=self.dtype)
        self.normalize_weights()

    # ------------------------------------------------------------- weights
    @property
    def weight_shape(self):
        raise NotImplementedError

    def _initial_weights(self, seed):
        """The weights before normalisation: ``weight_init``'s, or a truncated standard normal
        (``|w| <= 2``, lca-pytorch's default ``torch.nn.init.trunc_normal_``) drawn from ``seed``."""
        if self.weight_init is None:
            rng = np.random.default_rng(seed)
            w = rng.standard_normal(self.weight_shape)
            while True:
                bad = np.abs(w) > 2
                if not bad.any():
                    return w
                w[bad] = rng.standard_normal(int(bad.sum()))
        empty = np.zeros(self.weight_shape, dtype=self.dtype)
        name = getattr(self.weight_init, "__name__", repr(self.weight_init))
        out = self.weight_init(empty, **self.weight_init_kwargs)
        out = empty if out is None else to_numpy(out)  # an in-place initialiser may return None
        if tuple(np.shape(out)) != tuple(self.weight_shape):
            raise ValueError(f"weight_init's callable {name} returned shape {tuple(np.shape(out))}, expected the "
                             f"weight shape {tuple(self.weight_shape)}")
        out = np.asarray(out)
        if out.dtype.kind not in "biuf" or not np.isfinite(out).all():
            raise ValueError(f"weight_init's callable {name} must return finite real weights")
        return out

    @property
    def weights(self):
        """Dictionary ``Phi``: (K, D) dense, (K, C, *kernel) convolutional; unit-norm features."""
        return self._weights

    @weights.setter
    def weights(self, value):
        self.assign_weight_values(value, normalize=False)

    def assign_weight_values(self, value, normalize=True):
        """Set the dictionary (shape and dtype checked); optionally renormalise the features."""
        if tuple(value.shape) != tuple(self.weight_shape):
            raise ValueError(f"weights must have shape {tuple(self.weight_shape)}, got {tuple(value.shape)}")
        if np.dtype(value.dtype) != self.dtype:
            raise TypeError(f"weights must have dtype {self.dtype}, got {value.dtype}")
        xp = self.xp
        value = xp.asarray(value)
        if not bool(xp.isfinite(value).all()):
            raise ValueError("weights contain NaN or Inf")
        self._weights[...] = value  # in place: optimisers keep a reference to this array
        self._weights_changed()
        if normalize:
            self.normalize_weights()

    def normalize_weights(self, eps=1e-12):
        """Scale every feature (row of the dictionary) to unit L2 norm."""
        xp = self.xp
        axes = tuple(range(1, self._weights.ndim))
        norm = xp.sqrt(xp.sum(self._weights * self._weights, axis=axes, keepdims=True))
        self._weights /= norm + eps  # in place: optimisers keep a reference to this array
        self._weights_changed()

    def _weights_changed(self):
        for op in self._ops.values():
            op.update_weights(self._weights)

    # ------------------------------------------------------------ operator
    def _check_inputs(self, inputs):
        raise NotImplementedError

    def _operator(self, in_shape):
        raise NotImplementedError

    def lipschitz(self, in_shape=None):
        """Largest eigenvalue ``L`` of ``Phi Phi^T`` (code space of inputs of spatial shape ``in_shape``)."""
        return self._operator(in_shape).lipschitz()

    # ------------------------------------------------------- lca-pytorch API
    def transfer(self, states):
        """``a = T_lambda(u)``: the configured transfer function."""
        if callable(self.transfer_func):
            return self.transfer_func(states)
        return self._transfer(states, self.lambda_)

    def compute_input_drive(self, inputs, weights=None):
        """``b = Phi s`` (dense: ``s @ Phi.T``; conv: ``conv(s, Phi)``)."""
        inputs = self._check_inputs(inputs)
        return self._operator_for(inputs, weights).forward(inputs)

    def compute_recon(self, acts, weights=None, in_shape=None):
        """Reconstruction ``Phi^T a`` (conv: ``conv_transpose(a, Phi)``).

        For strided convolutions several input sizes give the same code size;
        the reconstruction takes ``in_shape`` (spatial), else the size of the
        last encoded input when it matches, else lca-pytorch's
        ``(O - 1) s - 2p + k + (s - 1)``.
        """
        op = self._recon_operator(acts, weights, in_shape)
        return op.adjoint(self._array(acts, "acts", overflow=False, finite=False))

    def compute_recon_error(self, inputs, recons):
        return inputs - recons

    def compute_lateral_connectivity(self, weights=None):
        """lca-pytorch's lateral connections: ``Phi Phi^T`` between features, self-connection zeroed.

        Convolutional: ``conns[k1, k2, d] = sum_{c, j} Phi[k1, c, s d + j] Phi[k2, c, j]`` (``Phi``
        zero outside its kernel) for code offsets ``d`` with ``|d_i| <= D_i = (k_i - 1) // s_i``:
        shape ``(K, K, 2 D_1 + 1, ...)``, with ``conns[k, k, D] = 0`` (lca-pytorch's
        ``conv(Phi, Phi, stride=s, padding=s D)`` times its identity mask). Dense: ``Phi Phi^T``
        with a zero diagonal, ``(K, K)``. The lateral input of the dynamics is
        :meth:`lateral_competition` of the acts with it; for unit-norm features it equals
        ``(Phi Phi^T - I) a``, which the layers compute as the re-encoded reconstruction instead
        (exact at "same" borders; see ``lateral=``). ``weights`` defaults to the layer's.
        Returned with ``"conns"`` in ``return_vars`` (one copy per step with ``return_all_ts``).
        Unlike lca-pytorch (always 5-D), the shape has the layer's number of spatial axes.
        """
        xp = self.xp
        phi = self._weights if weights is None else self._array(weights, "weights")
        if tuple(phi.shape) != tuple(self.weight_shape):
            raise ValueError(f"weights must have shape {tuple(self.weight_shape)}, got {tuple(phi.shape)}")
        if self._spatial_dims is None:
            conns = phi @ phi.T
            idx = xp.arange(self.out_neurons)
            conns[idx, idx] = 0
            return conns
        reach = tuple((k - 1) // s for k, s in zip(self.kernel_size, self.stride))
        conns = ConvOperator(phi, self.kernel_size, self.stride, tuple(s * r for s, r in zip(self.stride, reach)),
                             self.conv_method).forward(phi)
        idx = xp.arange(self.out_neurons)
        conns[(idx, idx, *reach)] = 0
        return conns

    def lateral_competition(self, acts, conns):
        """lca-pytorch's lateral input ``conv(a, conns, stride=1, padding=D)`` (dense: ``a conns^T``):
        ``sum_{k2, d} conns[k1, k2, d] a[k2, p + d]`` with :meth:`compute_lateral_connectivity`'s
        ``conns`` of shape ``(K, K, 2 D + 1)`` per spatial axis."""
        acts = self._array(acts, "acts", overflow=False)
        conns = self._array(conns, "conns", overflow=False)
        K = self.out_neurons
        if self._spatial_dims is None:
            if tuple(conns.shape) != (K, K) or acts.ndim != 2 or acts.shape[1] != K:
                raise ValueError(f"acts (N, {K}) and conns ({K}, {K}) expected, got {tuple(acts.shape)} and "
                                 f"{tuple(conns.shape)}")
            return acts @ conns.T
        d = self._spatial_dims
        if conns.ndim != d + 2 or conns.shape[:2] != (K, K) or any(g % 2 == 0 for g in conns.shape[2:]):
            raise ValueError(f"conns must have shape ({K}, {K}, *odd sizes) with {d} spatial axes, got "
                             f"{tuple(conns.shape)}")
        if acts.ndim != d + 2 or acts.shape[1] != K:
            raise ValueError(f"acts must have shape (N, {K}, *spatial), got {tuple(acts.shape)}")
        reach = tuple((g - 1) // 2 for g in conns.shape[2:])
        return ConvOperator(conns, acts.shape[2:], 1, reach, self.conv_method).forward(acts)

    def preprocess(self, inputs, mask=None):
        """Per-sample zero mean / unit variance as configured (``input_zero_mean``, ``input_unit_var``).

        lca-pytorch's ``make_zero_mean`` / ``make_unit_var``: ``s - mean(s)``, then
        ``s / (std(s) + 1e-12)`` with the unbiased standard deviation (``ddof=1``), over all
        non-batch axes of each sample (:func:`~sparsecoding.data.preprocessing.standardize`).

        With ``mask`` (weights ``W >= 0`` broadcastable to the inputs) the statistics are weighted by
        ``W^2`` (for a 0/1 mask: those of the observed entries) and the masked entries (``W == 0``)
        of the result are 0 (:func:`~sparsecoding.lca.masks.masked_standardize`).
        """
        inputs = self._check_inputs(inputs)
        if mask is not None:
            mask = check_mask(mask, inputs.shape, self.dtype, self.xp)
            return masked_standardize(inputs, mask, self.input_zero_mean, self.input_unit_var, eps=1e-12, ddof=1)
        return standardize(inputs, self.input_zero_mean, self.input_unit_var, eps=1e-12, ddof=1)

    def energy(self, inputs, acts, mask=None):
        """Per-sample energy ``1/2||s - Phi^T a||^2 + lambda||a||_1`` for preprocessed inputs
        (with ``mask``: ``1/2||W . (s - Phi^T a)||^2 + lambda||a||_1``)."""
        xp = self.xp
        inputs = self._check_inputs(inputs)
        r = inputs - self.compute_recon(acts, in_shape=inputs.shape[2:] if inputs.ndim > 2 else None)
        if mask is not None:
            r = check_mask(mask, inputs.shape, self.dtype, xp) * r
        n = inputs.shape[0]
        per_sample = lambda t: xp.sum(t.reshape(n, t.size // n if n else 0), axis=1)  # noqa: E731
        return 0.5 * per_sample(r * r) + self.lambda_ * per_sample(xp.abs(acts))

    def _array(self, x, name, overflow=True, finite=True):
        """``x`` on the layer's backend in its dtype: real (TypeError for complex), finite (with
        ``finite``), and (with ``overflow``) small enough for the layer dtype's arithmetic."""
        x = self.xp.asarray(x)
        return check_real_array(x, name, self.dtype, overflow=overflow, finite=finite,
                                advice="rescale the inputs or use dtype='float64'")

    def encode(self, inputs, drive_scaling=None, initial_states=None, mask=None):
        """lca-pytorch's ``encode``: the sparse code of already-preprocessed inputs, as a tuple with one
        list per name in ``return_vars``: the value at every step with ``return_all_ts`` (one entry per
        iteration run), else a one-entry list with the final value.

        Shapes are the layer's public ones (lca-pytorch's are 5-D inside ``encode``); what is
        recorded at each step is described in :meth:`forward`. Does not count a forward pass.
        :meth:`solve` returns all variables at once (an :class:`LCAResult`).
        """
        out = self.solve(inputs, drive_scaling, initial_states, mask)
        if self.return_all_ts:
            return tuple(list(out.all_ts[k]) for k in self.return_vars)
        return tuple([out[k]] for k in self.return_vars)

    def solve(self, inputs, drive_scaling=None, initial_states=None, mask=None):
        """Sparse code of already-preprocessed inputs; returns the :class:`LCAResult` of all variables
        (``states``, ``acts``, ``recons``, ``recon_errors``, ``input_drives``, ``inputs``, ``conns``
        when in ``return_vars``, ``n_iter``, ``converged``, ``metrics``, ``energy``; ``all_ts`` with
        ``return_all_ts``).

        Inputs are checked (shape, real, finite, magnitude) and cast to the layer dtype; an
        empty batch gives empty arrays of the usual shapes. ``mask``: data weights ``W >= 0`` (or a
        0/1 mask of missing entries) broadcastable to the inputs: the code minimises
        ``1/2 ||W . (s - Phi^T a)||^2 + lambda ||a||_1`` (both solvers; the LCA drive is
        ``Phi (W^2 . s)``, the stable step is checked against ``max(W^2) L``, ``tol`` is the weighted
        duality gap; ``energy`` and the L2 metric are weighted, ``recons`` / ``recon_errors``
        are ``Phi^T a`` and ``s - Phi^T a``, so ``recons`` fills the masked entries).
        """
        return self._encode(self._check_inputs(inputs), drive_scaling, initial_states, mask)

    def _encode(self, inputs, drive_scaling=None, initial_states=None, mask=None):
        xp = self.xp
        mask = check_mask(mask, inputs.shape, self.dtype, xp)
        op = self._operator_for(inputs)
        self._last_in_shape = tuple(inputs.shape[2:])
        code_shape = (inputs.shape[0], *op.out_shape)
        for name, arr in (("drive_scaling", drive_scaling), ("initial_states", initial_states)):
            if arr is not None and tuple(arr.shape) != tuple(code_shape):
                raise ValueError(f"{name} must have the code shape {code_shape}, got {tuple(arr.shape)}")
        if drive_scaling is not None:
            drive_scaling = self._array(drive_scaling, "drive_scaling")
        if initial_states is not None:
            initial_states = self._array(initial_states, "initial_states")
        L = op.lipschitz() if mask is None else WeightedOperator(op, mask).lipschitz()  # <= max(W^2) L
        if self.solver == "lca":
            check_tau(self.tau, L)
        out = self._encode_with(op, inputs, drive_scaling, initial_states, mask)
        if "conns" in self.return_vars:
            out.conns = self.compute_lateral_connectivity()
            if out.all_ts is not None:
                steps = [len(v) for v in out.all_ts.values()]
                steps = steps[0] if steps else (out.n_iter if self.solver == "lca" else 1)
                out.all_ts["conns"] = [out.conns] * steps
        self.metrics = out["metrics"]
        self.n_iter_ = out["n_iter"]
        self.converged_ = out["converged"]
        if self.metrics is not None and self.result_dir is not None:
            self._write_metrics(self.metrics)
        return out

    def _encode_with(self, op, inputs, drive_scaling, initial_states, mask=None):
        xp = self.xp
        if self.solver == "lca":
            lateral = None
            if self.lateral == "gram" and mask is not None:
                raise ValueError("mask= needs lateral='recon': the precomputed lateral tensor has no room for "
                                 "the data weights")
            if self.lateral == "gram":
                if isinstance(op, DenseOperator):
                    G = op.gram() - xp.eye(self.out_neurons, dtype=self.dtype)
                    lateral = lambda a: a @ G  # noqa: E731  (G symmetric)
                else:
                    gop = lateral_operator(self._weights, self.stride, op.geometry.out_shape)
                    lateral = lambda a: gop.forward(a) - a  # noqa: E731
            soft = (self.lambda_, self.nonneg) if self.transfer_func == "soft_threshold" else None
            return run_lca(op, inputs, self.lambda_, self.tau, self.transfer, self.lca_iters,
                           initial_states=initial_states, drive_scaling=drive_scaling, tol=self.tol,
                           check_every=self.check_every, track_metrics=self.track_metrics,
                           record=self._recorded(), record_all=self.return_all_ts, lateral=lateral, soft=soft,
                           mask=mask)
        return self._encode_fista(op, inputs, drive_scaling, initial_states, mask)

    def _solve_l1(self, op, inputs, a0, mask):
        """The L1 problem by the chosen solver: FISTA, or coordinate descent ("cd": the dense exact route
        :func:`~sparsecoding.solvers.coordinate_descent` for ``LCA``, locally greedy coordinate descent
        :func:`~sparsecoding.solvers.conv_coordinate_descent` for the convolutional layers, ``lca_iters``
        sweeps at most; ``tol=None`` there means the solver's own default, 1e-8 dense and 1e-4 conv,
        since a sweep is no iteration count a user would set)."""
        if self.solver == "fista":
            return fista(op, inputs, self.lambda_, nonneg=self.nonneg, max_iter=self.lca_iters, tol=self.tol, a0=a0,
                         check_every=self.check_every, mask=mask)
        kw = {} if self.tol is None else {"tol": self.tol}
        if isinstance(op, DenseOperator):
            return coordinate_descent(op, inputs, self.lambda_, nonneg=self.nonneg, max_iter=self.lca_iters, a0=a0,
                                      mask=mask, **kw)
        if mask is not None:
            raise ValueError("mask= is not available with solver='cd' on the convolutional layers (no data "
                             "weights in the coordinate-descent kernels); use solver='fista'")
        return conv_coordinate_descent(op, inputs, self.lambda_, nonneg=self.nonneg, max_iter=self.lca_iters, a0=a0,
                                       **kw)

    def _encode_fista(self, op, inputs, drive_scaling, initial_states, mask=None):
        if drive_scaling is not None:
            raise ValueError("drive_scaling is defined for solver='lca' only")
        xp = self.xp
        a0 = None if initial_states is None else self._transfer(initial_states, self.lambda_)
        res = self._solve_l1(op, inputs, a0, mask)
        # the LCA variables at the codes, in the solvers' layout (one fused residual step); with a mask
        # those of the weighted problem: c = Phi (W^2 r), b = Phi (W^2 s)
        wop, winputs = (op, inputs) if mask is None else (WeightedOperator(op, mask), mask * inputs)
        view = wop.iteration_view()
        with view.frozen():
            a = view.to_inner(res.codes)
            c, resid = view.forward_residual(view.residual_plan(winputs), a)
            b = view.forward(winputs)
        # membrane potentials consistent with the LCA fixed point: u = b - (Phi Phi^T - I) a = c + a
        u, b, a = view.to_outer(c + a), view.to_outer(b), res.codes
        if mask is not None:
            resid = inputs - op.adjoint(a)  # the unweighted residual s - Phi^T a
        recon = inputs - resid
        n = inputs.shape[0]
        metrics = None
        if self.track_metrics and n == 0:
            metrics = {k: np.zeros(0) for k in ("L1", "L2", "TotalEnergy", "FractionActive")}
        elif self.track_metrics:
            l1 = self.lambda_ * float(xp.sum(xp.abs(a))) / n
            l2 = 0.5 * float(xp.sum((resid if mask is None else mask * resid) ** 2)) / n
            metrics = {"L1": np.array([l1]), "L2": np.array([l2]), "TotalEnergy": np.array([l1 + l2]),
                       "FractionActive": np.array([float(xp.mean((a != 0).astype(a.dtype)))])}
        all_ts = None
        if self.return_all_ts:
            vals = {"inputs": inputs, "input_drives": b, "states": u, "acts": a, "recons": recon, "recon_errors": resid}
            all_ts = {k: [vals[k]] for k in self._recorded()}
        return LCAResult(u, res.n_iter, res.converged, res.history, codes=a, energy=res.energy,
                         energy_history=res.energy_history, inputs=inputs, input_drives=b, recons=recon,
                         recon_errors=resid, metrics=metrics, all_ts=all_ts)

    def _recorded(self):
        """The ``return_vars`` the iteration records (``conns`` is added after it)."""
        return tuple(k for k in self.return_vars if k != "conns")

    def forward(self, inputs, drive_scaling=None, initial_states=None, mask=None):
        """Preprocess, encode, and return ``return_vars`` (one array, or a tuple).

        Which step's values: every returned variable describes one instant. Without
        ``return_all_ts`` they are those after the last step ``T`` that ran: ``states`` ``u_T``,
        ``acts`` ``a_T = T_lambda(u_T)``, ``recons`` ``Phi^T a_T``, ``recon_errors`` ``s - Phi^T a_T``
        (so ``acts`` are the code whose energy ``tol`` certified and the pair that
        :meth:`update_weights` expects); with ``return_all_ts`` slice ``t`` (``t = 1..T``, last axis)
        holds the same variables after step ``t``, so the last slice equals the final values, and
        tracked metrics (``track_metrics``) are those of ``a_t`` too. lca-pytorch returns the states
        after step ``t`` beside the acts the step started from, ``T_lambda(u_{t-1})`` (and their
        reconstruction and metrics): its ``acts[..., t]`` is ours ``acts[..., t - 1]`` (its first slice
        is ``T_lambda(u_0)``, zero from a cold start); ``states`` agree slice by slice.
        ``inputs``, ``input_drives`` and ``conns`` do not change over the steps.

        ``mask``: data weights / 0/1 mask broadcastable to the inputs (:meth:`preprocess` and
        :meth:`encode` describe what it does).
        """
        xp = self.xp
        inputs = self.preprocess(inputs, mask)
        out = self._encode(inputs, drive_scaling, initial_states, mask)
        self.forward_pass += 1
        if self.return_all_ts:
            # an empty batch runs no step: a length-0 time axis
            res = tuple(xp.stack(out["all"][k], axis=-1) if out["all"][k] else
                        xp.zeros((*out[k].shape, 0), out[k].dtype) for k in self.return_vars)
        else:
            res = tuple(out[k] for k in self.return_vars)
        return res[0] if len(res) == 1 else res

    __call__ = forward

    # ------------------------------------------------------ dictionary step
    def compute_weight_update(self, acts, recon_error):
        """``sum_{batch, positions} a_k * patch(residual)``: minus the gradient of the summed
        reconstruction term ``1/2 sum_n ||s_n - Phi^T a_n||^2`` with respect to ``Phi``."""
        raise NotImplementedError

    def _check_step_arrays(self, acts, recon_error):
        """``acts`` (N, K, *O) and ``recon_error`` (N, C, *L) as real arrays of the layer dtype with
        matching shapes (finiteness is diagnosed where it matters, in :meth:`update_weights`)."""
        acts = self._array(acts, "acts", overflow=False, finite=False)
        recon_error = self._array(recon_error, "recon_error", overflow=False, finite=False)
        d = self._spatial_dims
        if d is None:
            expect_r = (recon_error.shape[0], self.in_neurons)
            ok = recon_error.ndim == 2 and tuple(recon_error.shape) == expect_r
            expect_a = (recon_error.shape[0], self.out_neurons)
        else:
            ok = recon_error.ndim == d + 2 and recon_error.shape[1] == self.in_neurons
            expect_r = f"(N, {self.in_neurons}, *spatial) with {d} spatial dims"
            if ok:
                out = conv_output_shape(recon_error.shape[2:], self.kernel_size, self.stride, self._padding)
                expect_a = (recon_error.shape[0], self.out_neurons, *out)
        if not ok:
            raise ValueError(f"recon_error must have shape {expect_r}, got {tuple(recon_error.shape)}")
        if tuple(acts.shape) != expect_a:
            raise ValueError(f"acts must have shape {expect_a} for recon_error of shape {tuple(recon_error.shape)}, "
                             f"got {tuple(acts.shape)}")
        return acts, recon_error

    def dictionary_gradient(self, acts, recon_error):
        """Gradient of the batch-mean energy with respect to ``Phi`` (for ``sparsecoding.optim``);
        zero for an empty batch."""
        acts, recon_error = self._check_step_arrays(acts, recon_error)
        if acts.shape[0] == 0:
            return self.xp.zeros(self.weight_shape, dtype=self.dtype)
        return -self.compute_weight_update(acts, recon_error) / acts.shape[0]

    def update_weights(self, acts, recon_error, normalize=True):
        """Built-in dictionary step (lca-pytorch's rule).

        ``dPhi_k = eta / (n_active_k + 1) * sum a_k patch(residual)``, clipped to
        ``[-d_update_clip, d_update_clip]``, added, then features renormalised.
        ``eta`` follows ``lr_schedule(forward_pass)`` when given. Returns the update.

        An empty batch leaves the dictionary unchanged and returns a zero update. A step
        that would make the weights non-finite raises ``FloatingPointError`` naming the
        likely cause (non-finite ``acts`` / ``recon_error``, or an update overflowing the
        dtype) and leaves the previous weights in place.
        """
        xp = self.xp
        acts, recon_error = self._check_step_arrays(acts, recon_error)
        if acts.shape[0] == 0:
            return xp.zeros(self.weight_shape, dtype=self.dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite results are reported below
            update_sum = self.compute_weight_update(acts, recon_error)
        axes = (0,) + tuple(range(2, acts.ndim))
        times_active = xp.sum((acts != 0).astype(self.dtype), axis=axes)
        return self.apply_update_sums(update_sum, times_active, normalize,
                                      failure=lambda update: self._update_failure(acts, recon_error, update))

    def apply_update_sums(self, update_sum, times_active, normalize=True, failure=None):
        """lca-pytorch's rule from a batch's sums (what :meth:`update_weights` computes, or the sums of its
        shards added up): ``update_sum = sum a_k patch(residual)`` (the weights' shape) and ``times_active``
        (per atom, the number of non-zero code entries). ``dPhi_k = eta / (times_active_k + 1) update_sum_k``,
        clipped, added, atoms renormalised (with ``normalize``), then ``lr_schedule``. Returns the update;
        a step that would make the weights non-finite raises ``FloatingPointError`` (``failure(update)`` is
        its message) and leaves the previous weights in place."""
        xp = self.xp
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite results are reported below
            update = xp.asarray(update_sum, dtype=self.dtype)
            times_active = xp.asarray(times_active, dtype=self.dtype) + 1
            update = update * (self.eta / times_active).reshape((-1,) + (1,) * (update.ndim - 1))
            update = xp.clip(update, -self.d_update_clip, self.d_update_clip).astype(self.dtype)
            new = self._weights + update
        if not bool(xp.isfinite(new).all()):  # one check per dictionary step, outside any loop
            raise FloatingPointError(failure(update) if failure is not None else
                                     "the dictionary update would make the weights non-finite (previous weights "
                                     "kept): non-finite sums, or eta too large for the dtype")
        self._weights[...] = new  # in place: optimisers keep a reference to this array
        self._weights_changed()
        if normalize:
            self.normalize_weights()
        if self.lr_schedule is not None:
            eta = self.lr_schedule(self.forward_pass)
            try:
                self.eta = eta
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"lr_schedule({self.forward_pass}) returned an invalid eta: {exc}") from exc
        return update

    # ------------------------------------------------------------- learning
    def fit(self, X, y=None, *, epochs=1, batch_size=128, seed=0, callbacks=(), checkpoint=None,
            checkpoint_every=None, allow_changes=False, settings=None, optimizer=None, lambda_schedule=None,
            progress=True, callback=None, max_steps=None, record_steps=False, mask=None, client=None):
        """Learn the dictionary on ``X``; returns the per-epoch :class:`~sparsecoding.training.History`.

        Runs on the learning loop (:func:`sparsecoding.training.fit_loop`): epoch ``e`` visits
        the samples in the order ``default_rng([seed, e]).permutation(N)`` in batches of
        ``batch_size`` (full batches only; all of ``X`` in one batch when ``batch_size > N``).
        Each step preprocesses the batch (:meth:`preprocess`), encodes it and takes one
        dictionary step: the built-in rule (:meth:`update_weights`, lca-pytorch's) or, with
        ``optimizer``, a ``sparsecoding.optim`` step on :meth:`dictionary_gradient` followed by
        :meth:`normalize_weights`.

        Parameters
        ----------
        X : array (N, in_neurons) for ``LCA``, (N, C, *spatial) for the convolutional layers
            (host or device; moved to the layer's backend batch by batch)
        y : ignored: dictionary learning is unsupervised (accepted for the scikit-learn convention)
        epochs, batch_size, seed : the schedule
        callbacks : ``f(record)`` after every epoch
        checkpoint : optional .npz path, written atomically every ``checkpoint_every`` steps, after
            every epoch, at ``max_steps`` and on Ctrl-C (then
            :class:`~sparsecoding.training.TrainingInterrupted` is raised). It holds the dictionary,
            the optimiser's buffers, the layer's ``forward_pass``, ``eta`` and ``lambda_`` and the
            position in the run; an existing one is resumed, and a resumed run ends bit-identical
            to an uninterrupted one. ``epochs`` and ``max_steps`` may grow between runs.
        checkpoint_every : also checkpoint every this many steps (default: once per epoch)
        allow_changes : resume even if the stored settings (the batch size, seed, number and shape
            of the samples, optimiser class, the layer's class, weight shape, ``lambda_``, ``eta``,
            ``solver``, ``lca_iters``, ``tol``, ``nonneg`` and the extra ``settings``) differ; the
            current ``lambda_`` / ``eta`` are then kept. Otherwise
            :class:`~sparsecoding.training.SettingsChanged` names the changed ones.
        settings : JSON-able dict stored in the checkpoint and compared on resume
        optimizer : None for the built-in rule, or a ``sparsecoding.optim`` optimiser constructed
            on ``[layer.weights]`` (or ``{"weights": layer.weights}``)
        lambda_schedule : optional callable ``step -> lambda_`` (0-based step; a finite value >= 0)
        progress : progress bar
        callback : optional ``f(step, record)`` after every step (1-based step; the record as below)
        max_steps : stop after this many steps in total (a checkpoint is written there)
        record_steps : also keep per-step records in ``History.steps``
        mask : optional data weights / 0/1 mask of missing entries: an array broadcastable to ``X``
            (with a leading axis of length N, one per sample, taken with the batch; otherwise shared),
            or a callable ``batch -> mask`` (the raw batch on the layer's backend). Every step then
            preprocesses and encodes with the mask and takes the dictionary step on the weighted
            residual ``W^2 . (s - Phi^T a)`` (minus the gradient of the weighted energy); the
            energy and L2 records are weighted. A mask is a checkpoint setting (its shape, or
            "callable").
        client : optional ``distributed.Client`` (Dask): data-parallel learning, each batch split into
            one shard per worker (:func:`sparsecoding.distributed.fit`; the built-in rule only, no
            ``optimizer``, ``lambda_schedule``, ``mask`` or ``callback``); same history and checkpoints

        Returns
        -------
        History (also kept in ``self.history_``): one record per epoch with ``epoch`` (1-based) and
        the means over its steps of ``energy`` (per sample, of the batch before its step), ``L1``,
        ``L2``, ``frac_active``, ``lambda_`` and ``lca_iters_run``; with ``record_steps`` the
        per-step values are in ``History.steps`` (with ``step`` and ``epoch``).
        """
        if client is not None:
            unsupported = [name for name, value in (("optimizer", optimizer), ("lambda_schedule", lambda_schedule),
                                                    ("mask", mask), ("callback", callback)) if value is not None]
            if unsupported:
                raise ValueError(f"fit(client=...) runs the built-in rule only: drop {', '.join(unsupported)}")
            from ..distributed import fit as distributed_fit  # noqa: PLC0415

            return distributed_fit(self, X, client=client, epochs=epochs, batch_size=batch_size, seed=seed,
                                   callbacks=callbacks, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                                   allow_changes=allow_changes, settings=settings, progress=progress,
                                   max_steps=max_steps, record_steps=record_steps)
        return fit_dictionary(self, X, epochs=epochs, batch_size=batch_size, seed=seed, callbacks=callbacks,
                              checkpoint=checkpoint, checkpoint_every=checkpoint_every, allow_changes=allow_changes,
                              settings=settings, optimizer=optimizer, lambda_schedule=lambda_schedule,
                              progress=progress, callback=callback, max_steps=max_steps, record_steps=record_steps,
                              mask=mask)

    def _update_failure(self, acts, recon_error, update):
        """Message for a dictionary step that would make the weights non-finite (error path only)."""
        xp = self.xp
        head = "the dictionary update would make the weights non-finite (previous weights kept): "
        if not bool(xp.isfinite(acts).all()):
            return head + "acts contain NaN or Inf (did the encoding diverge?)"
        if not bool(xp.isfinite(recon_error).all()):
            return head + "recon_error contains NaN or Inf"
        with np.errstate(over="ignore", invalid="ignore"):
            umax = float(xp.max(xp.abs(update)))
        return (head + f"the update overflows {self.dtype} (max |update| = {umax:.3g} with eta={self.eta:g}); "
                f"reduce eta, set d_update_clip, or rescale the inputs")

    # --------------------------------------------------------------- files
    def _write_metrics(self, metrics):
        os.makedirs(self.result_dir, exist_ok=True)
        path = os.path.join(self.result_dir, "metrics.csv")
        new = not os.path.exists(path)
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["ForwardPass", "LCAIter", "L1", "L2", "TotalEnergy", "FractionActive"])
            for i in range(len(metrics["L1"])):
                w.writerow([self.forward_pass, i + 1] + [f"{metrics[k][i]:.8g}" for k in
                                                         ("L1", "L2", "TotalEnergy", "FractionActive")])

    def get_weights(self):
        """Host copy of the dictionary."""
        return to_numpy(self._weights).copy()

    def _operator_for(self, inputs, weights=None):
        op = self._operator(inputs.shape[2:] if inputs.ndim > 2 else None)
        if weights is None:
            return op
        return self._fresh_operator(inputs.shape[2:] if inputs.ndim > 2 else None, weights)

    def _recon_operator(self, acts, weights=None):
        raise NotImplementedError


class LCA(_LCABase):
    """Fully connected LCA (which lca-pytorch lacks): dictionary ``(out_neurons, in_neurons)``.

    Shapes: inputs (N, in_neurons); codes (N, out_neurons); weights (K, D) with
    atoms as rows. ``lateral="gram"`` precomputes ``G = Phi Phi^T - I`` (one
    K x K product per step, cheaper when K < D/2); the default re-encodes the
    reconstruction (two K x D products per step).
    """

    def __init__(self, out_neurons, in_neurons, lambda_=0.25, tau=100, eta=0.01, lca_iters=1000,
                 return_vars=("acts",), return_all_ts=False, nonneg=True, track_metrics=False,
                 transfer_func="soft_threshold", input_zero_mean=True, input_unit_var=True, d_update_clip=np.inf,
                 lr_schedule=None, seed=None, dtype="float32", tol=None, solver="lca", check_every=10,
                 result_dir=None, backend=None, lateral="recon", weight_init=None):
        super().__init__(out_neurons, in_neurons, result_dir=result_dir, lambda_=lambda_, tau=tau, eta=eta,
                         lca_iters=lca_iters, pad="valid", return_vars=return_vars, return_all_ts=return_all_ts,
                         nonneg=nonneg, track_metrics=track_metrics, transfer_func=transfer_func,
                         input_zero_mean=input_zero_mean, input_unit_var=input_unit_var, d_update_clip=d_update_clip,
                         lr_schedule=lr_schedule, weight_init=weight_init, seed=seed, dtype=dtype, tol=tol,
                         solver=solver, check_every=check_every, backend=backend, lateral=lateral)

    @property
    def weight_shape(self):
        return (self.out_neurons, self.in_neurons)

    def _check_inputs(self, inputs):
        inputs = self.xp.asarray(inputs)
        if inputs.ndim != 2:
            raise ValueError(f"inputs must have shape (N, {self.in_neurons}), got shape {tuple(inputs.shape)}")
        if inputs.shape[1] != self.in_neurons:
            raise ValueError(f"inputs have {inputs.shape[1]} features, expected in_neurons={self.in_neurons}")
        return self._array(inputs, "inputs")

    def _operator(self, in_shape=None):
        if None not in self._ops:
            self._ops[None] = DenseOperator(self._weights)
        return self._ops[None]

    def _fresh_operator(self, in_shape, weights):
        return DenseOperator(weights)

    def _recon_operator(self, acts, weights=None, in_shape=None):
        if acts.ndim != 2 or acts.shape[1] != self.out_neurons:
            raise ValueError(f"acts must have shape (N, {self.out_neurons}), got {tuple(acts.shape)}")
        return self._operator() if weights is None else DenseOperator(weights)

    def compute_weight_update(self, acts, recon_error):
        return acts.T @ recon_error


def lateral_operator(phi, stride, code_shape):
    """The precomputed lateral tensor ``G = Phi * Phi`` as a stride-1 convolution on the code grid.

    ``G[k1, k2, d] = sum_{c, j} Phi[k1, c, j + s d] Phi[k2, c, j]`` for offsets ``|s d| <= k - 1``;
    then ``(Phi Phi^T a) = conv(a, G, padding=D)``. Exact when the reconstruction is not
    cropped ("valid" padding). Per step it costs ``2 M K^2 (2D+1)^d`` flops against
    ``4 M K C k^d`` for the re-encoded reconstruction: cheaper only when C is much larger than K.
    """
    kernel = phi.shape[2:]
    D = tuple((k - 1) // s for k, s in zip(kernel, stride))
    # conv of the atoms with the atoms, stride s, padding s*D: output (K, K, 2D+1, ...)
    G = ConvOperator(phi, kernel, stride, tuple(s * dd for s, dd in zip(stride, D))).forward(phi)
    return ConvOperator(G, tuple(code_shape), 1, D)


class _LCAConv(_LCABase):
    # lca-pytorch's positional order (out_neurons, in_neurons, result_dir, kernel_size, stride, lambda_, tau, eta,
    # lca_iters, pad, return_vars, ...); what lca-pytorch lacks is keyword-only
    def __init__(self, out_neurons, in_neurons, result_dir=None, kernel_size=7, stride=1, lambda_=0.25, tau=100,
                 eta=0.01, lca_iters=1000, pad="same", return_vars=("acts",), return_all_ts=False, nonneg=True,
                 track_metrics=False, transfer_func="soft_threshold", input_zero_mean=True, input_unit_var=True,
                 cudnn_benchmark=True, d_update_clip=np.inf, lr_schedule=None, req_grad=False, weight_init=None, *,
                 seed=None, dtype="float32", tol=None, solver="lca", check_every=10, backend=None,
                 conv_method="auto", lateral="recon"):
        kw = dict(locals())
        del kw["self"]
        self._setup(no_time_pad=False, **kw)

    def _setup(self, *, kernel_size, stride, pad, no_time_pad, lateral, **kw):
        d = self._spatial_dims
        _result_dir(kw["result_dir"])  # a kernel size given as third positional argument is reported first
        self.kernel_size = _conv_param(kernel_size, d, "kernel_size")
        self.stride = _conv_param(stride, d, "stride")
        if not isinstance(pad, str) or pad not in ("same", "valid"):
            raise ValueError(f"pad must be 'same' or 'valid', got {pad!r}")
        sizes = [k for k in self.kernel_size if k != 1]
        if any(k % 2 == 0 for k in sizes) and not all(k % 2 == 0 for k in sizes):
            raise ValueError(f"kernel_size mixes odd and even sizes, got {self.kernel_size}: the sizes other than 1 "
                             f"must be all odd or all even (as lca-pytorch requires)")
        if pad == "same" and sizes and sizes[0] % 2 == 0:
            raise ValueError(f"pad='same' needs odd kernel sizes, got kernel_size={self.kernel_size}")
        if lateral == "gram" and pad != "valid":
            raise ValueError("lateral='gram' (the precomputed lateral tensor) is exact only for pad='valid'; "
                             "with 'same' it is not the gradient of the cropped objective at the borders")
        self.no_time_pad = bool(no_time_pad)
        same = [k // 2 for k in self.kernel_size] if pad == "same" else [0] * d
        if self.no_time_pad:
            same[0] = 0
        self.input_pad = tuple(same)  # per spatial dimension, as lca-pytorch's attribute of that name
        # the operators' padding argument: the name, or the explicit sizes where no_time_pad changes them
        self._padding = pad if (pad == "valid" or not self.no_time_pad) else self.input_pad
        _LCABase.__init__(self, pad=pad, lateral=lateral, **kw)

    @property
    def weight_shape(self):
        return (self.out_neurons, self.in_neurons, *self.kernel_size)

    def _check_inputs(self, inputs):
        inputs = self.xp.asarray(inputs)
        d = self._spatial_dims
        if inputs.ndim != d + 2:
            raise ValueError(
                f"inputs must have shape (N, C, {', '.join('LHW'[-d:] if d < 3 else 'DHW')}) for "
                f"{type(self).__name__}, got shape {tuple(inputs.shape)}")
        if inputs.shape[1] != self.in_neurons:
            raise ValueError(f"inputs have {inputs.shape[1]} channels, expected in_neurons={self.in_neurons}")
        return self._array(inputs, "inputs")

    def _operator(self, in_shape):
        key = tuple(in_shape)
        if key not in self._ops:
            if len(self._ops) > 8:
                self._ops.clear()
            self._ops[key] = ConvOperator(self._weights, key, self.stride, self._padding, self.conv_method)
        return self._ops[key]

    def _fresh_operator(self, in_shape, weights):
        return ConvOperator(weights, tuple(in_shape), self.stride, self._padding, self.conv_method)

    def _recon_operator(self, acts, weights=None, in_shape=None):
        d = self._spatial_dims
        if acts.ndim != d + 2 or acts.shape[1] != self.out_neurons:
            raise ValueError(f"acts must have shape (N, {self.out_neurons}, *spatial), got {tuple(acts.shape)}")
        last = getattr(self, "_last_in_shape", None)
        if in_shape is None and last is not None and conv_output_shape(last, self.kernel_size, self.stride,
                                                                       self._padding) == tuple(acts.shape[2:]):
            in_shape = last
        if in_shape is None:
            # lca-pytorch's output size: (O - 1) s - 2p + k + (s - 1) for odd kernels
            p = self.input_pad
            opad = [s - 1 if (k % 2 == 1) else 0 for s, k in zip(self.stride, self.kernel_size)]
            in_shape = tuple((o - 1) * s - 2 * pp + k + op for o, s, pp, k, op in
                             zip(acts.shape[2:], self.stride, p, self.kernel_size, opad))
        in_shape = tuple(in_shape)
        if weights is None:
            return self._operator(in_shape)
        return self._fresh_operator(in_shape, weights)

    def compute_weight_update(self, acts, recon_error):
        op = self._operator(recon_error.shape[2:])
        return op.weight_grad(recon_error.astype(self.dtype, copy=False), acts.astype(self.dtype, copy=False))


class LCAConv1D(_LCAConv):
    """LCA with 1-D convolutional dictionary. Inputs (N, C, L); weights (K, C, k)."""

    _spatial_dims = 1


class LCAConv2D(_LCAConv):
    """LCA with 2-D convolutional dictionary (lca-pytorch's ``LCAConv2D``).

    Parameters (lca-pytorch's names, defaults and positional order up to ``weight_init``; the rest
    keyword-only)
    ----------
    out_neurons : int, K features
    in_neurons : int, C input channels
    result_dir : None (default: no files) or a folder for ``metrics.csv`` when ``track_metrics``
        (lca-pytorch: default "./lca_results", always created, with params.yaml and metrics.xz)
    kernel_size : int or tuple (kh, kw), default 7; sizes other than 1 all odd or all even
    stride : int or tuple, default 1 (lists and strings are refused, as in lca-pytorch)
    lambda_ : float, threshold / sparsity weight, default 0.25
    tau : float, time constant; step 1/tau, default 100
    eta : float, built-in dictionary learning rate, default 0.01
    lca_iters : int, iterations per forward pass, default 1000
    pad : "same" (odd kernels, p = k // 2 at any stride) or "valid"
    return_vars : names from ("inputs", "input_drives", "states", "acts", "recons", "recon_errors", "conns")
    return_all_ts : stack every iteration's values on a new last axis (see :meth:`forward` for which step's)
    nonneg : non-negative codes, default True
    track_metrics : per-iteration L1, L2, TotalEnergy, FractionActive in ``self.metrics``
        (and appended to ``result_dir/metrics.csv`` when ``result_dir`` is set)
    transfer_func : "soft_threshold", "hard_threshold" or a callable ``u -> a``
    input_zero_mean, input_unit_var : per-sample standardisation of the inputs (unit variance with
        the unbiased standard deviation, as lca-pytorch)
    cudnn_benchmark : accepted and ignored (no cuDNN)
    d_update_clip : clip for the built-in dictionary update
    lr_schedule : callable forward_pass -> eta
    req_grad : must be False (no autograd; ``ValueError`` otherwise)
    weight_init : None (truncated standard normal on [-2, 2] from ``seed``, lca-pytorch's default
        distribution) or ``(callable, kwargs)``: ``callable(array, **kwargs)`` gets a zero host array of
        the weight shape and returns the initial weights (or fills it and returns None); normalised after
    seed, dtype, backend : initialisation, float32/float64, "numpy"/"cupy" (keyword-only, as those below)
    tol : early stop on the relative duality gap (soft thresholds; the relative change of the potentials
        otherwise), checked every ``check_every`` steps
    solver : "lca" (the dynamics), "fista" (same minimiser, far fewer iterations) or "cd" (locally greedy
        coordinate descent, :func:`~sparsecoding.solvers.conv_coordinate_descent`; ``lca_iters`` sweeps at most)
    lateral : "recon" (re-encode the reconstruction: two convolutions a step, exact for any padding)
        or "gram" (lca-pytorch's precomputed lateral tensor; pad="valid" only; cheaper when C >> K)
    conv_method : the convolution engine ("auto", "im2col", "fft")

    Shapes: inputs (N, C, H, W); drives, states, acts (N, K, H_out, W_out);
    recons, recon_errors (N, C, H, W); weights (K, C, kh, kw).
    """

    _spatial_dims = 2


class LCAConv3D(_LCAConv):
    """LCA with 3-D convolutional dictionary. Inputs (N, C, D, H, W); weights (K, C, kd, kh, kw).

    The arguments of :class:`LCAConv2D`, plus lca-pytorch's ``no_time_pad`` (after ``weight_init``):
    with ``pad="same"``, no padding along the first spatial axis (depth / time), so the code has
    ``D - kd + 1`` steps there, while the other axes keep "same" (``input_pad`` is
    ``(0, kh // 2, kw // 2)``); with ``pad="valid"`` it changes nothing.
    """

    _spatial_dims = 3

    def __init__(self, out_neurons, in_neurons, result_dir=None, kernel_size=7, stride=1, lambda_=0.25, tau=100,
                 eta=0.01, lca_iters=1000, pad="same", return_vars=("acts",), return_all_ts=False, nonneg=True,
                 track_metrics=False, transfer_func="soft_threshold", input_zero_mean=True, input_unit_var=True,
                 cudnn_benchmark=True, d_update_clip=np.inf, lr_schedule=None, req_grad=False, weight_init=None,
                 no_time_pad=False, *, seed=None, dtype="float32", tol=None, solver="lca", check_every=10,
                 backend=None, conv_method="auto", lateral="recon"):
        kw = dict(locals())
        del kw["self"]
        self._setup(**kw)
