"""LCA layers: dense ``LCA`` and convolutional ``LCAConv1D/2D/3D``.

The constructor names and defaults are lca-pytorch's, so its users change
only the import. What is new: ``solver="fista"`` (same fixed point, far fewer
iterations), ``tol`` (early stop once the relative duality gap, a certificate of the
relative distance of the energy to the optimum computed from the residual, is below it;
checked every ``check_every`` steps; for hard thresholds and callable transfers, which
minimise no convex energy, the relative change of the potentials over one step), ``seed``,
``dtype`` and ``backend``. Every encode returns an
:class:`~sparsecoding.lca.dynamics.LCAResult` (the relaxation runner's result type, item
access by lca-pytorch's variable names); the layer keeps ``n_iter_`` and ``converged_``.
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
import os

import numpy as np

from ..backend import to_numpy, namespace
from ..data.preprocessing import standardize
from ..ops.conv import ConvOperator, conv_output_shape
from ..ops.elementwise import get_transfer
from ..ops.linop import DenseOperator
from ..solvers.lasso import check_integer, check_number, check_real_array, fista
from .dynamics import RETURN_VARS, LCAResult, check_tau, run_lca
from .learning import fit_dictionary

__all__ = ["LCA", "LCAConv1D", "LCAConv2D", "LCAConv3D"]


def _bool(name, value):
    return bool(value)


def _callable_or_none(name, value):
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be None or a callable taking the forward-pass count and returning eta, "
                        f"got {value!r}")
    return value


def _return_vars(name, value):
    if isinstance(value, str) or not hasattr(value, "__iter__") or any(v not in RETURN_VARS for v in value):
        raise ValueError(f"{name} must be a sequence of names from {RETURN_VARS}, got {value!r}")
    return tuple(value)


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
        """The encoder: "lca" (the dynamics) or "fista" (soft threshold only)."""
        return self._solver

    @solver.setter
    def solver(self, value):
        self._set_coding(self._transfer_func, self._nonneg, value)

    def _set_coding(self, transfer_func, nonneg, solver):
        """Validate the transfer function / sign constraint / solver together, then set all three."""
        transfer = get_transfer(transfer_func, nonneg)  # validates the name
        if solver not in ("lca", "fista"):
            raise ValueError(f"solver must be 'lca' or 'fista', got {solver!r}")
        if solver == "fista" and (callable(transfer_func) or transfer_func != "soft_threshold"):
            raise ValueError("solver='fista' solves the L1 problem: it needs transfer_func='soft_threshold'")
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

    def __init__(self, out_neurons, in_neurons, kernel_size=7, stride=1, lambda_=0.25, tau=100, eta=0.01,
                 lca_iters=1000, pad="same", return_vars=("acts",), return_all_ts=False, nonneg=True,
                 track_metrics=False, transfer_func="soft_threshold", input_zero_mean=True, input_unit_var=True,
                 d_update_clip=np.inf, lr_schedule=None, seed=None, dtype="float32", tol=None, solver="lca",
                 check_every=10, result_dir=None, backend=None, lateral="recon", conv_method="auto"):
        given = locals()
        self.out_neurons = check_integer("out_neurons", out_neurons, 1)
        self.in_neurons = check_integer("in_neurons", in_neurons, 1)
        for name, attr in vars(_LCABase).items():  # the checked hyperparameters, in their order
            if isinstance(attr, _Hyper):
                setattr(self, name, given[name])
        self._set_coding(transfer_func, nonneg, solver)
        self.pad, self.result_dir, self.conv_method = pad, result_dir, conv_method
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
        self._weights = xp.asarray(self._init_weights(np.random.default_rng(seed)), dtype=self.dtype)
        self.normalize_weights()

    # ------------------------------------------------------------- weights
    @property
    def weight_shape(self):
        raise NotImplementedError

    def _init_weights(self, rng):
        # truncated standard normal (|w| <= 2), as lca-pytorch's default init
        w = rng.standard_normal(self.weight_shape)
        while True:
            bad = np.abs(w) > 2
            if not bad.any():
                return w
            w[bad] = rng.standard_normal(int(bad.sum()))

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

    def preprocess(self, inputs):
        """Per-sample zero mean / unit variance as configured (``input_zero_mean``, ``input_unit_var``)."""
        inputs = self._check_inputs(inputs)
        return standardize(inputs, self.input_zero_mean, self.input_unit_var)

    def energy(self, inputs, acts):
        """Per-sample energy ``1/2||s - Phi^T a||^2 + lambda||a||_1`` for preprocessed inputs."""
        xp = self.xp
        inputs = self._check_inputs(inputs)
        r = inputs - self.compute_recon(acts, in_shape=inputs.shape[2:] if inputs.ndim > 2 else None)
        n = inputs.shape[0]
        per_sample = lambda t: xp.sum(t.reshape(n, t.size // n if n else 0), axis=1)  # noqa: E731
        return 0.5 * per_sample(r * r) + self.lambda_ * per_sample(xp.abs(acts))

    def _array(self, x, name, overflow=True, finite=True):
        """``x`` on the layer's backend in its dtype: real (TypeError for complex), finite (with
        ``finite``), and (with ``overflow``) small enough for the layer dtype's arithmetic."""
        x = self.xp.asarray(x)
        return check_real_array(x, name, self.dtype, overflow=overflow, finite=finite,
                                advice="rescale the inputs or use dtype='float64'")

    def encode(self, inputs, drive_scaling=None, initial_states=None):
        """Sparse code of already-preprocessed inputs; returns the :class:`LCAResult` of all variables.

        Inputs are checked (shape, real, finite, magnitude) and cast to the layer dtype; an
        empty batch gives empty arrays of the usual shapes.
        """
        return self._encode(self._check_inputs(inputs), drive_scaling, initial_states)

    def _encode(self, inputs, drive_scaling=None, initial_states=None):
        xp = self.xp
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
        L = op.lipschitz()
        if self.solver == "lca":
            check_tau(self.tau, L)
        out = self._encode_with(op, inputs, drive_scaling, initial_states)
        self.metrics = out["metrics"]
        self.n_iter_ = out["n_iter"]
        self.converged_ = out["converged"]
        if self.metrics is not None and self.result_dir is not None:
            self._write_metrics(self.metrics)
        return out

    def _encode_with(self, op, inputs, drive_scaling, initial_states):
        xp = self.xp
        if self.solver == "lca":
            lateral = None
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
                           record=self.return_vars, record_all=self.return_all_ts, lateral=lateral, soft=soft)
        return self._encode_fista(op, inputs, drive_scaling, initial_states)

    def _encode_fista(self, op, inputs, drive_scaling, initial_states):
        if drive_scaling is not None:
            raise ValueError("drive_scaling is defined for solver='lca' only")
        xp = self.xp
        a0 = None if initial_states is None else self._transfer(initial_states, self.lambda_)
        res = fista(op, inputs, self.lambda_, nonneg=self.nonneg, max_iter=self.lca_iters, tol=self.tol, a0=a0,
                    check_every=self.check_every)
        # the LCA variables at the codes, in the solvers' layout (one fused residual step)
        view = op.iteration_view()
        with view.frozen():
            a = view.to_inner(res.codes)
            c, resid = view.forward_residual(view.residual_plan(inputs), a)
            b = view.forward(inputs)
        # membrane potentials consistent with the LCA fixed point: u = b - (Phi Phi^T - I) a = c + a
        u, b, a = view.to_outer(c + a), view.to_outer(b), res.codes
        recon = inputs - resid
        n = inputs.shape[0]
        metrics = None
        if self.track_metrics and n == 0:
            metrics = {k: np.zeros(0) for k in ("L1", "L2", "TotalEnergy", "FractionActive")}
        elif self.track_metrics:
            l1 = self.lambda_ * float(xp.sum(xp.abs(a))) / n
            l2 = 0.5 * float(xp.sum(resid * resid)) / n
            metrics = {"L1": np.array([l1]), "L2": np.array([l2]), "TotalEnergy": np.array([l1 + l2]),
                       "FractionActive": np.array([float(xp.mean((a != 0).astype(a.dtype)))])}
        all_ts = None
        if self.return_all_ts:
            vals = {"inputs": inputs, "input_drives": b, "states": u, "acts": a, "recons": recon, "recon_errors": resid}
            all_ts = {k: [vals[k]] for k in self.return_vars}
        return LCAResult(u, res.n_iter, res.converged, res.history, codes=a, energy=res.energy,
                         energy_history=res.energy_history, inputs=inputs, input_drives=b, recons=recon,
                         recon_errors=resid, metrics=metrics, all_ts=all_ts)

    def forward(self, inputs, drive_scaling=None, initial_states=None):
        """Preprocess, encode, and return ``return_vars`` (one array, or a tuple)."""
        xp = self.xp
        inputs = self.preprocess(inputs)
        out = self._encode(inputs, drive_scaling, initial_states)
        self.forward_pass += 1
        if self.return_all_ts:
            # an empty batch runs no step: a length-0 time axis
            res = tuple(xp.stack(out["all"][k], axis=-1) if out["all"][k] else xp.zeros((*out[k].shape, 0), out[k].dtype)
                        for k in self.return_vars)
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
                out = conv_output_shape(recon_error.shape[2:], self.kernel_size, self.stride, self.pad)
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
            update = self.compute_weight_update(acts, recon_error)
            axes = (0,) + tuple(range(2, acts.ndim))
            times_active = xp.sum((acts != 0).astype(self.dtype), axis=axes) + 1
            update = update * (self.eta / times_active).reshape((-1,) + (1,) * (update.ndim - 1))
            update = xp.clip(update, -self.d_update_clip, self.d_update_clip).astype(self.dtype)
            new = self._weights + update
        if not bool(xp.isfinite(new).all()):  # one check per dictionary step, outside any loop
            raise FloatingPointError(self._update_failure(acts, recon_error, update))
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
            progress=True, callback=None, max_steps=None, record_steps=False):
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

        Returns
        -------
        History (also kept in ``self.history_``): one record per epoch with ``epoch`` (1-based) and
        the means over its steps of ``energy`` (per sample, of the batch before its step), ``L1``,
        ``L2``, ``frac_active``, ``lambda_`` and ``lca_iters_run``; with ``record_steps`` the
        per-step values are in ``History.steps`` (with ``step`` and ``epoch``).
        """
        return fit_dictionary(self, X, epochs=epochs, batch_size=batch_size, seed=seed, callbacks=callbacks,
                              checkpoint=checkpoint, checkpoint_every=checkpoint_every, allow_changes=allow_changes,
                              settings=settings, optimizer=optimizer, lambda_schedule=lambda_schedule,
                              progress=progress, callback=callback, max_steps=max_steps, record_steps=record_steps)

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
                 result_dir=None, backend=None, lateral="recon"):
        super().__init__(out_neurons, in_neurons, 1, 1, lambda_, tau, eta, lca_iters, "valid", return_vars,
                         return_all_ts, nonneg, track_metrics, transfer_func, input_zero_mean, input_unit_var,
                         d_update_clip, lr_schedule, seed, dtype, tol, solver, check_every, result_dir, backend,
                         lateral)

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
    def __init__(self, out_neurons, in_neurons, kernel_size=7, stride=1, lambda_=0.25, tau=100, eta=0.01,
                 lca_iters=1000, pad="same", return_vars=("acts",), return_all_ts=False, nonneg=True,
                 track_metrics=False, transfer_func="soft_threshold", input_zero_mean=True, input_unit_var=True,
                 d_update_clip=np.inf, lr_schedule=None, seed=None, dtype="float32", tol=None, solver="lca",
                 check_every=10, result_dir=None, backend=None, conv_method="auto", lateral="recon"):
        d = self._spatial_dims
        self.kernel_size = _tuple(kernel_size, d, "kernel_size")
        self.stride = _tuple(stride, d, "stride")
        if pad not in ("same", "valid"):
            raise ValueError(f"pad must be 'same' or 'valid', got {pad!r}")
        if pad == "same" and any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"pad='same' needs odd kernel sizes, got kernel_size={self.kernel_size}")
        if lateral == "gram" and pad != "valid":
            raise ValueError("lateral='gram' (the precomputed lateral tensor) is exact only for pad='valid'; "
                             "with 'same' it is not the gradient of the cropped objective at the borders")
        super().__init__(out_neurons, in_neurons, kernel_size, stride, lambda_, tau, eta, lca_iters, pad,
                         return_vars, return_all_ts, nonneg, track_metrics, transfer_func, input_zero_mean,
                         input_unit_var, d_update_clip, lr_schedule, seed, dtype, tol, solver, check_every,
                         result_dir, backend, lateral, conv_method)

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
            self._ops[key] = ConvOperator(self._weights, key, self.stride, self.pad, self.conv_method)
        return self._ops[key]

    def _fresh_operator(self, in_shape, weights):
        return ConvOperator(weights, tuple(in_shape), self.stride, self.pad, self.conv_method)

    def _recon_operator(self, acts, weights=None, in_shape=None):
        d = self._spatial_dims
        if acts.ndim != d + 2 or acts.shape[1] != self.out_neurons:
            raise ValueError(f"acts must have shape (N, {self.out_neurons}, *spatial), got {tuple(acts.shape)}")
        last = getattr(self, "_last_in_shape", None)
        if in_shape is None and last is not None and conv_output_shape(last, self.kernel_size, self.stride,
                                                                       self.pad) == tuple(acts.shape[2:]):
            in_shape = last
        if in_shape is None:
            # lca-pytorch's output size: (O - 1) s - 2p + k + (s - 1) for odd kernels
            p = [(k - 1) // 2 if self.pad == "same" else 0 for k in self.kernel_size]
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


def _tuple(v, d, name):
    if isinstance(v, (int, np.integer)):
        v = (int(v),) * d
    v = tuple(int(x) for x in v)
    if len(v) != d or any(x < 1 for x in v):
        raise ValueError(f"{name} must be a positive int or a {d}-tuple of positive ints, got {v!r}")
    return v


class LCAConv1D(_LCAConv):
    """LCA with 1-D convolutional dictionary. Inputs (N, C, L); weights (K, C, k)."""

    _spatial_dims = 1


class LCAConv2D(_LCAConv):
    """LCA with 2-D convolutional dictionary (lca-pytorch's ``LCAConv2D``).

    Parameters (lca-pytorch names and defaults)
    ----------
    out_neurons : int, K features
    in_neurons : int, C input channels
    kernel_size : int or (kh, kw), default 7
    stride : int or tuple, default 1
    lambda_ : float, threshold / sparsity weight, default 0.25
    tau : float, time constant; step 1/tau, default 100
    eta : float, built-in dictionary learning rate, default 0.01
    lca_iters : int, iterations per forward pass, default 1000
    pad : "same" (odd kernels, p = k // 2 at any stride) or "valid"
    return_vars : names from ("inputs", "input_drives", "states", "acts", "recons", "recon_errors")
    return_all_ts : stack every iteration's values on a new last axis
    nonneg : non-negative codes, default True
    track_metrics : per-iteration L1, L2, TotalEnergy, FractionActive in ``self.metrics``
        (and appended to ``result_dir/metrics.csv`` when ``result_dir`` is set)
    transfer_func : "soft_threshold", "hard_threshold" or a callable ``u -> a``
    input_zero_mean, input_unit_var : per-sample standardisation of the inputs
    d_update_clip : clip for the built-in dictionary update
    lr_schedule : callable forward_pass -> eta
    seed, dtype, backend : initialisation, float32/float64, "numpy"/"cupy"
    tol : early stop on the relative duality gap (soft thresholds; the relative change of the potentials
        otherwise), checked every ``check_every`` steps
    solver : "lca" (the dynamics) or "fista" (same minimiser, far fewer iterations)
    lateral : "recon" (re-encode the reconstruction: two convolutions a step, exact for any padding)
        or "gram" (lca-pytorch's precomputed lateral tensor; pad="valid" only; cheaper when C >> K)

    Shapes: inputs (N, C, H, W); drives, states, acts (N, K, H_out, W_out);
    recons, recon_errors (N, C, H, W); weights (K, C, kh, kw).
    """

    _spatial_dims = 2


class LCAConv3D(_LCAConv):
    """LCA with 3-D convolutional dictionary. Inputs (N, C, D, H, W); weights (K, C, kd, kh, kw)."""

    _spatial_dims = 3
