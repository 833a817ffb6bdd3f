"""LCA front end for EqProp (``LCACNN``, DESIGN.md §6 last part).

An LCA sparse-coding layer (:class:`~sparsecoding.lca.LCAConv2D`, dictionary ``D``)
codes the standardised image ``x``; the code ``a`` is the static input ``s_0`` of a
convolutional energy-based network (:class:`~sparsecoding.eqprop.network.ConvEBM`,
primitive ``Phi(a, s)``, maximised by the states ``s = (s_1 .. s_L)``).

Feed-forward front end (``scale_feedback = 0``): ``a`` is the LCA code of ``x``,
computed once per batch (``lca_iters`` steps of the LCA solver, or its ``tol``), and
held fixed in every phase.

Coupled system (``scale_feedback = kappa > 0``): the LCA potentials ``u`` take part in
the EqProp dynamics. With ``R(a) = 1/2 ||x - D^T a||^2`` and ``a = T_lambda(u)``, each
relaxation step updates, from the same (old) values::

    s   <- sigma(dPhi/ds (a, s))                                (the EqProp step)
    u   <- u + (1/tau) (-(u - a) - dR/da + kappa dPhi/da (a, s))
         = u + (1/tau) (D (x - D^T a) + a - u + kappa conv_transpose(U_1(s_1), W_1))

so ``u`` follows the LCA dynamics of the energy ``E(a) = R(a) + lambda ||a||_1 - kappa Phi(a, s)``
(and the states maximise ``Phi``; together they descend ``R(a) + lambda ||a||_1 + kappa (1/2 ||s||^2 - Phi(a, s))``
up to the activation's clipping):
the sparse-coding energy minus the scaled EqProp primitive, whose ``a``-gradient is the
top-down feedback ``dPhi/da = conv_transpose(U_1(s_1), W_1)`` from the first conv layer
(:meth:`LCACNN.coupled_drive` is ``-dE/da`` without the l1 term, tested against finite
differences). The phases start from ``u_0 = a + D (x - D^T a)``, the LCA fixed-point
relation at the feed-forward code. ``kappa = 0`` gives the feed-forward front end exactly.
``Phi`` is linear in ``a``: feedback stronger than the threshold (``kappa max|dPhi/da| > lambda``)
can push the code without bound along directions the dictionary does not reconstruct
(an overcomplete ``D``), so keep ``kappa`` small (the reference code's runs use 0.01 - 1 with
weights of order 0.1).
The EP estimate of the network's parameters uses each phase's own code ``a``:
``-(dPhi/dtheta(a^b, s^b) - dPhi/dtheta(a^0, s^0)) / b`` (``theta`` enters ``Phi`` only).

Dictionary (``dict_training``): ``"pretrained"`` keeps ``D`` frozen (bit-identical after
training); ``"learn"`` starts from a random dictionary and ``"finetune"`` from the given
one, and both apply, once after every optimiser step, lca-pytorch's dictionary rule
(:meth:`~sparsecoding.lca.LCAConv2D.update_weights`, step size ``lca_eta``, atoms
renormalised to unit norm)::

    D_k <- normalise(D_k + lca_eta / (n_active_k + 1) sum_{batch, positions} c_k patch(x - D^T c))

with ``c`` the code ``a`` for ``"learn"`` and, for ``"finetune"``, the thresholded nudged
settled state of the sparse layer ``c = T_lambda(u^beta)`` (of the ``+beta`` phase). With
``kappa = 0`` the nudge cannot reach the sparse layer, ``u^beta`` is the feed-forward
potential and fine-tuning continues unsupervised dictionary learning from the file.

Layouts: images ``(N, C, H, W)``; codes ``(N, lca_feats, h, w)`` with ``h = ceil(H / lca_stride)``
("same" padding); EqProp states as :class:`ConvEBM` (channels-first in public).
"""
from __future__ import annotations

import numpy as np

from ..lca.layers import LCAConv2D
from ..ops.conv import conv_output_shape
from ..optim import _check_int, _check_number
from ..solvers.relax import RelaxResult, relative_change, relax
from .network import ConvEBM, check_phase_args

__all__ = ["LCACNN", "DICT_TRAINING"]

DICT_TRAINING = ("pretrained", "finetune", "learn")


class LCACNN:
    """An LCA sparse-coding layer in front of a convolutional EqProp network.

    Parameters
    ----------
    in_size : int, image height = width
    in_channels : int, image channels (1 for digits, 3 for CIFAR-10)
    channels : output channels of the conv layers after the sparse layer (``[256, 512]``);
        the network's input channels are ``lca_feats``
    kernels, strides, paddings, pools, fc, activation, softmax, loss, scale : as :class:`ConvEBM`
    lca_feats, lca_lambda, lca_tau, lca_eta, lca_iters, lca_stride, lca_ksize : the sparse layer
        (lca-pytorch's ``out_neurons``, ``lambda_``, ``tau``, ``eta``, ``lca_iters``, ``stride``,
        ``kernel_size``; "same" padding, non-negative soft threshold)
    lca_solver : "lca" (the seed's dynamics, ``lca_iters`` steps) or "fista" (same code, fewer steps)
    lca_tol : None or the solver's tolerance (relative duality gap)
    dict_training : "pretrained", "finetune" or "learn" (module docstring)
    dictionary : ``(lca_feats, in_channels, lca_ksize, lca_ksize)`` array; required for
        "pretrained" and "finetune", refused for "learn" (which starts from a random one)
    scale_feedback : kappa >= 0, the top-down feedback into the LCA potentials (0: feed-forward)
    seed, dtype, backend, layout : as :class:`ConvEBM` (the seed also draws the random dictionary)

    Attributes
    ----------
    lca : the :class:`~sparsecoding.lca.LCAConv2D` layer (``lca.weights`` is ``D``)
    ebm : the :class:`ConvEBM` on the codes; ``params`` is its parameter list
    """

    def __init__(self, in_size, in_channels, channels, kernels, strides, paddings, pools, fc, *,
                 lca_feats=64, lca_lambda=0.25, lca_tau=100.0, lca_eta=0.01, lca_iters=600, lca_stride=2,
                 lca_ksize=9, lca_solver="lca", lca_tol=None, dict_training="pretrained", dictionary=None,
                 scale_feedback=0.0, activation="my_hard_sig", softmax=False, loss="mse", scale=None, seed=None,
                 dtype="float32", backend=None, layout="auto"):
        if dict_training not in DICT_TRAINING:
            raise ValueError(f"dict_training must be one of {DICT_TRAINING}, got {dict_training!r}")
        if dict_training == "learn" and dictionary is not None:
            raise ValueError("dict_training='learn' starts from a random dictionary: leave dictionary=None "
                             "(use 'finetune' to start from a given one)")
        if dict_training != "learn" and dictionary is None:
            raise ValueError(f"dict_training={dict_training!r} needs a dictionary (the file written by "
                             f"'sparsecoding lca learn'); 'learn' starts from a random one")
        self.in_size = _check_int(in_size, "in_size", minimum=1)
        self.in_channels = _check_int(in_channels, "in_channels", minimum=1)
        self.dict_training = dict_training
        self.scale_feedback = _check_number(scale_feedback, "scale_feedback", low=0)
        self.lca = LCAConv2D(lca_feats, in_channels, kernel_size=lca_ksize, stride=lca_stride, lambda_=lca_lambda,
                             tau=lca_tau, eta=lca_eta, lca_iters=lca_iters, pad="same", solver=lca_solver, tol=lca_tol,
                             seed=seed, dtype=dtype, backend=backend)
        if dictionary is not None:
            self.set_dictionary(dictionary)
        code = conv_output_shape((self.in_size, self.in_size), (lca_ksize, lca_ksize), lca_stride, "same")
        self.code_shape = (int(lca_feats), *code)
        self.ebm = ConvEBM(code[0], [lca_feats, *channels], kernels, strides, paddings, pools, fc, activation,
                           softmax, loss, scale, seed, dtype, backend, layout)
        self.xp, self.dtype = self.ebm.xp, self.ebm.dtype
        self.params, self.n_classes, self.softmax = self.ebm.params, self.ebm.n_classes, self.ebm.softmax
        self._phase = None

    # ------------------------------------------------------------------ plumbing
    def param_names(self):
        return self.ebm.param_names()

    def set_dictionary(self, dictionary):
        """Load ``D`` (shape ``(lca_feats, in_channels, lca_ksize, lca_ksize)``, finite) as it is: a pretrained
        dictionary is used bit for bit (the dictionary rule renormalises the atoms after each step)."""
        d = np.asarray(dictionary)
        want = tuple(self.lca.weight_shape)
        if d.ndim != 4 or tuple(d.shape) != want:
            raise ValueError(f"the dictionary has shape {tuple(d.shape)}; this LCA layer needs {want} "
                             f"(lca_feats, image channels {self.in_channels}, lca_ksize, lca_ksize)")
        if not np.isfinite(d).all():
            raise ValueError("the dictionary contains NaN or Inf")
        if not (np.abs(d).reshape(len(d), -1).max(axis=1) > 0).all():
            raise ValueError("the dictionary has an all-zero atom")
        self.lca.assign_weight_values(self.lca.xp.asarray(d, dtype=self.lca.dtype), normalize=False)

    def _images(self, x):
        x = self.lca._check_inputs(x)
        if tuple(x.shape[2:]) != (self.in_size, self.in_size):
            raise ValueError(f"x must have shape (N, {self.in_channels}, {self.in_size}, {self.in_size}), "
                             f"got {tuple(x.shape)}")
        return x

    def encode(self, x):
        """The front end: ``(x_std, a)``, the standardised images and their LCA code ``(N, lca_feats, h, w)``."""
        s = self.lca.preprocess(self._images(x))
        return s, self.lca.solve(s)["acts"]

    def _lca_op(self):
        return self.lca._operator((self.in_size, self.in_size))

    def _to_internal(self, a):
        return self.ebm._internal([a])[0] if a.ndim == 4 else a

    def input_grad(self, a, states):
        """``dPhi/da (N, lca_feats, h, w)``: the top-down feedback of the first synapse (public layouts)."""
        ebm = self.ebm
        a_int = ebm._check_x(a)
        states = ebm._checked_internal(states, a_int.shape[0], finite=False)
        return ebm._public([self._input_grad(a_int, states)])[0]

    def _input_grad(self, a_int, states, memo=None):
        ebm = self.ebm
        if memo is None:
            memo = ebm._forward_terms(a_int, states, which={0})[1]
        if ebm.n_conv:
            return ebm._op(0).adjoint(ebm._unpool(0, states[0], memo[0]))
        return ebm._unflat(states[0] @ ebm.params[0][0], a_int)

    def coupled_drive(self, x_std, a, states):
        """``-d/da [R(a) - kappa Phi(a, s)] = D (x - D^T a) + kappa dPhi/da``: what drives the potentials
        besides the leak ``a - u`` (public layouts; ``x_std`` standardised images)."""
        op = self._lca_op()
        drive = op.forward(x_std - op.adjoint(a))
        if self.scale_feedback:
            drive = drive + self.scale_feedback * self.input_grad(a, states)
        return drive

    def coupled_energy(self, x_std, a, states):
        """Per-sample ``E(a, s) = 1/2 ||x - D^T a||^2 + lambda ||a||_1 - kappa Phi(a, s)`` (public layouts)."""
        xp = self.xp
        n = a.shape[0]
        r = x_std - self._lca_op().adjoint(a)
        e = 0.5 * xp.sum((r * r).reshape(n, -1), axis=1) + self.lca.lambda_ * xp.sum(xp.abs(a).reshape(n, -1), axis=1)
        if self.scale_feedback:
            e = e - self.scale_feedback * self.ebm.phi(a, states)
        return e

    # ------------------------------------------------------------------ dynamics
    def _coupled_relax(self, x_std, u, states, T, y, beta, schedule, tol):
        """Relax ``(u, s)`` together (module docstring); returns a RelaxResult of ``(u, states)``."""
        ebm, op, kappa, inv_tau = self.ebm, self._lca_op(), self.scale_feedback, 1.0 / self.lca.tau

        def step(state):
            u, s = state
            a = self.lca.transfer(u)
            a_int = self._to_internal(a)
            if schedule == "sync":
                terms = ebm._forward_terms(a_int, s)
                new_s = [ebm.sigma(g) for g in ebm._state_grads(a_int, s, y, beta, _terms=terms)]
                fb = self._input_grad(a_int, s, terms[1])
            else:
                new_s = ebm._step(a_int, s, y, beta, schedule)
                fb = self._input_grad(a_int, s)
            fb = ebm._public([fb])[0] if fb.ndim == 4 else fb
            new_u = u + inv_tau * (op.forward(x_std - op.adjoint(a)) + a - u + kappa * fb)
            return new_u, new_s

        def monitor(state, previous):  # the runner's relative change over u and every state
            return relative_change([state[0], *state[1]], [previous[0], *previous[1]])

        with ebm._frozen_weights():
            return relax(step, (u, states), T, tol=tol, check_every=5, monitor=monitor,
                         what="the coupled LCA-EqProp relaxation")

    def _phases(self, x, y, T1, T2, betas, third_phase, schedule, tol):
        """Run the phases; returns the per-phase ``(code, internal states)`` and the front end's values."""
        ebm = self.ebm
        x_std, a = self.encode(x)
        n = a.shape[0]
        b1, b2 = betas
        phases = {}
        if not self.scale_feedback:
            a_int = ebm._check_x(a)
            run = ebm._relax(a_int, ebm._init_states(n), T1, y, b1, schedule, tol)
            free = run.state
            phases["free"] = (a, a_int, free)
            if T2:
                phases["plus"] = (a, a_int, ebm._relax(a_int, free, T2, y, b2, schedule, tol).state)
                if third_phase:
                    phases["minus"] = (a, a_int, ebm._relax(a_int, free, T2, y, -b2, schedule, tol).state)
        else:
            op = self._lca_op()
            u0 = a + op.forward(x_std - op.adjoint(a))
            ebm._check_x(a)  # the code is checked once (finite, shape)
            run = self._coupled_relax(x_std, u0, ebm._init_states(n), T1, y, b1, schedule, tol)
            u_free, free = run.state
            a_free = self.lca.transfer(u_free)
            phases["free"] = (a_free, self._to_internal(a_free), free)
            for name, beta in (("plus", b2), ("minus", -b2)) if T2 else ():
                if name == "minus" and not third_phase:
                    break
                u_b, s_b = self._coupled_relax(x_std, u_free, free, T2, y, beta, schedule, tol).state
                a_b = self.lca.transfer(u_b)
                phases[name] = (a_b, self._to_internal(a_b), s_b)
        self._free_run = run  # the free phase's RelaxResult (iterations, convergence, history)
        return x_std, a, phases

    def ep_gradients(self, x, y, T1, T2, betas=(0.0, 0.5), third_phase=False, random_sign=False, rng=None,
                     schedule="sync", tol=None):
        """EP estimate of ``dLoss/dtheta`` for the network's parameters (images ``x (N, C, H, W)``).

        As :meth:`ConvEBM.ep_gradients`, with the network's input the LCA code (feed-forward) or the
        coupled sparse layer (``scale_feedback > 0``); the phases' codes are kept for :meth:`after_step`.
        """
        T1, T2, (b1, b2), tol = check_phase_args(T1, T2, betas, third_phase, schedule, tol)
        ebm = self.ebm
        if random_sign:
            rng = rng if rng is not None else np.random.default_rng()
            b2 = b2 * (1 if rng.random() < 0.5 else -1)
        x = self._images(x)
        if x.shape[0] == 0:
            raise ValueError("x is an empty batch: the EP gradient (a batch mean) needs at least one sample")
        ebm._check_y(y, x.shape[0])
        x_std, a, ph = self._phases(x, y, T1, T2, (b1, b2), third_phase, schedule, tol)
        grads = lambda name, beta: ebm._param_grads(ph[name][1], ph[name][2], y, beta)  # noqa: E731
        if third_phase:
            gp, gm, denom = grads("plus", b2), grads("minus", -b2), 2 * b2
        else:
            gp, gm, denom = grads("plus", b2), grads("free", b1), b2 - b1
        ebm._last_free = ph["free"][2]
        self._last_free = ph["free"][2]
        self._phase = {"x": x_std, "code": a, "nudged_code": ph["plus"][0]}
        return [(-(p[0] - q[0]) / denom, -(p[1] - q[1]) / denom) for p, q in zip(gp, gm)]

    def after_step(self):
        """The local rule after each optimiser step: the dictionary update of ``dict_training`` (module
        docstring). Returns the step's metrics: ``lca_active``, the fraction of non-zero code units."""
        ph = self._phase
        if ph is None:
            return {}
        xp = self.xp
        active = xp.mean((ph["code"] != 0).astype(self.dtype))
        if self.dict_training != "pretrained":
            c = ph["nudged_code"] if self.dict_training == "finetune" else ph["code"]
            self.lca.update_weights(c, ph["x"] - self._lca_op().adjoint(c))
        self._phase = None
        return {"lca_active": active}

    def _output(self, states):
        return self.ebm._output(states)

    def relax(self, x, T, y=None, beta=0.0, schedule="sync", tol=None):
        """Free (``beta = 0``) or nudged relaxation from zero states of the images ``x``; returns the
        RelaxResult whose ``state`` is ``(code, states)`` (channels-first; the code is the front end's
        ``a`` without feedback, the settled ``T_lambda(u)`` with it)."""
        ebm = self.ebm
        T = _check_int(T, "T", minimum=1)
        beta = _check_number(beta, "beta")
        tol = ebm._check_schedule(schedule, tol)
        x = self._images(x)
        if beta != 0.0:
            ebm._check_y(y, x.shape[0])
        _, a, ph = self._phases(x, y, T, 0, (beta, beta + 1.0), False, schedule, tol)
        code, _, states = ph["free"]
        run = self._free_run
        return RelaxResult((code, ebm._public(states)), run.n_iter, run.converged, run.history)

    def predict(self, x, T, schedule="sync", tol=None):
        """Class predictions after a free phase of ``T`` steps; an empty batch gives an empty array."""
        T = _check_int(T, "T", minimum=1)
        tol = self.ebm._check_schedule(schedule, tol)
        x = self._images(x)
        if x.shape[0] == 0:
            return self.xp.zeros(0, dtype=np.int64)
        _, _, ph = self._phases(x, None, T, 0, (0.0, 1.0), False, schedule, tol)
        return self._output(ph["free"][2]).argmax(axis=1)

    # ------------------------------------------------------------------ learning loop
    def get_state(self):
        """``(arrays, meta)``: the network's arrays, the dictionary as ``lca_weights``, and the configuration."""
        from ..backend import to_numpy  # noqa: PLC0415

        arrays, meta = self.ebm.get_state()
        arrays["lca_weights"] = np.array(to_numpy(self.lca.weights))
        lca = self.lca
        meta = {**meta, "class": "LCACNN", "lca": {
            "feats": lca.out_neurons, "ksize": int(lca.kernel_size[0]), "stride": int(lca.stride[0]),
            "lambda": float(lca.lambda_), "tau": float(lca.tau), "eta": float(lca.eta), "iters": int(lca.lca_iters),
            "solver": lca.solver, "in_channels": self.in_channels, "in_size": self.in_size,
            "dict_training": self.dict_training, "scale_feedback": self.scale_feedback}}
        return arrays, meta

    def set_state(self, arrays, meta=None):
        """Load :meth:`get_state`'s output in place (network parameters and dictionary, shapes checked)."""
        if meta is not None and meta.get("class") not in (None, "LCACNN"):
            raise ValueError(f"the saved network is a {meta.get('class')}, not an LCACNN")
        if "lca_weights" not in arrays:
            raise ValueError("the saved state has no lca_weights (the dictionary)")
        ebm_meta = None if meta is None else {**meta, "class": "ConvEBM"}
        d = np.asarray(arrays["lca_weights"])
        if tuple(d.shape) != tuple(self.lca.weight_shape):
            raise ValueError(f"saved lca_weights has shape {tuple(d.shape)}, this LCA layer's is "
                             f"{tuple(self.lca.weight_shape)}")
        self.ebm.set_state({k: v for k, v in arrays.items() if k != "lca_weights"}, ebm_meta)
        self.lca.assign_weight_values(self.xp.asarray(d, dtype=self.lca.dtype), normalize=False)

    def fit(self, X, y, *, epochs=1, batch_size=128, seed=0, callbacks=(), checkpoint=None, **options):
        """Train with EP (and the dictionary rule of ``dict_training``); as :meth:`ConvEBM.fit`. The
        per-epoch records add ``lca_active``, the mean fraction of active code units."""
        from .train import train  # noqa: PLC0415

        X_test, y_test = options.pop("X_test", None), options.pop("y_test", None)
        return train(self, X, y, X_test, y_test, epochs=epochs, mbs=batch_size, seed=seed, callbacks=callbacks,
                     checkpoint=checkpoint, **options)

