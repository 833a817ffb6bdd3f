"""Convolutional energy-based networks for equilibrium propagation (DESIGN.md §6).

Primitive function (maximised), per sample, states ``s_1..s_L``, ``s_0 = x``::

    Phi = sum_conv <P_k(conv(s_{k-1}, W_k) + b_k), s_k> + sum_fc <W_k s_{k-1} + b_k, s_k> - beta * loss

``P_k`` is 2x2 max pool ("m"), 2x2 average pool ("a") or identity ("i").
State derivatives (analytic, no autograd)::

    dPhi/ds_k = P_k(conv(s_{k-1}, W_k) + b_k) + conv_transpose(U_{k+1}(s_{k+1}), W_{k+1})

with ``U`` the adjoint of the pool at the current pre-activation (max: unpool
to the argmax positions; avg: spread / 4; identity). Fully connected layers:
``W_k s_{k-1} + b_k + W_{k+1}^T s_{k+1}``. The forward convolution of each
layer is computed once per step and serves both its own derivative and the
pool indices of the transposed term; a max pool is taken with it
(:meth:`~sparsecoding.ops.ConvOperator.forward_maxpool`: inside the Winograd engine's output
transform for the 3x3 / 5x5 stride-1 layers on the CPU, per cache-sized chunk in the im2col
engine's per-core forward, so the pre-activation is never written to memory). Only the conv
outputs a 2x2 floor pool reads are computed (an odd output's last row and column are not).

Parameter derivatives (batch means): conv ``dPhi/dW_k = corr(s_{k-1}, U_k(s_k))``,
bias: ``U_k(s_k)`` summed over positions; fc ``s_k s_{k-1}^T`` and ``s_k``.

Layouts: every public state is channels-first, ``(N, C, H, W)`` for conv layers and
``(N, size)`` for fc ones. Internally the conv states live in the layout the
convolution engines are fastest in (``backend.capabilities(xp).conv_layout``); the
public methods convert once on entry and once on exit, and the EP estimator and the
GDU check run wholly in the internal layout (underscored twins of the public methods).

Relaxation: :meth:`ConvEBM.relax` iterates :meth:`ConvEBM.step` on the library's
relaxation runner (:func:`sparsecoding.solvers.relax.relax`): ``tol`` bounds the relative
change of the states over one step, checked every ``check_every`` steps, and the result
is a :class:`~sparsecoding.solvers.relax.RelaxResult`.

Losses: ``mse`` (``1/2 ||s_L - onehot(y)||^2``, the output is a state) or
``cel`` (cross-entropy of ``s_L``); with ``softmax=True`` the last fc layer is
a readout ``W_out`` outside the dynamics and the loss is the cross-entropy of
``softmax(W_out s_last + b_out)``.

Bad input (DESIGN.md §10): every public entry point refuses non-finite ``x`` and
``states`` of the wrong count or shape with a ValueError naming the argument
(``phi``, ``param_grads`` and ``relax`` also refuse non-finite ``states``;
``state_grads`` and ``step`` check only their count and shapes, and an input this
network already checked is not checked again). Labels ``y`` are
integers in ``[0, n_classes)``: an integer dtype, or floats with integral values
such as ``3.0``; one label per sample. ``beta`` and ``betas`` are finite, step
counts ``T``/``T1``/``T2`` integers >= 1, ``tol`` None or > 0, ``scale`` > 0.
Empty batches: ``phi``, ``state_grads``, ``relax`` (without ``tol``) and ``predict``
return empty results of the right shapes; ``param_grads`` and ``ep_gradients``
(batch means of no sample) raise a ValueError naming ``x``.
"""
from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager

import numpy as np

from ..backend import capabilities, namespace
from ..ops.conv import ConvOperator, conv_output_shape
from ..ops.elementwise import get_activation, one_hot, softmax
from ..ops.engines import select_pool_engine
from ..ops.parallel import blas_single_thread
from ..ops.pool import pool_output_shape
from ..optim import _check_finite, _check_int, _check_labels, _check_number
from ..solvers.relax import RelaxResult, relative_change, relax

# the activations of the EqProp reference code (ops.elementwise holds them with their derivatives)
ACTIVATIONS = ("my_hard_sig", "hard_sigmoid", "ctrd_hard_sig", "mysig", "tanh", "sigmoid")

__all__ = ["ConvEBM", "MLPEBM"]

LOSSES = ("mse", "cel")
SCHEDULES = ("sync", "async")


def check_phase_args(T1, T2, betas, third_phase=False, schedule="sync", tol=None):
    """The EP estimator's settings checked: ``(T1, T2, (beta1, beta2), tol)``; ValueError naming the bad one."""
    T1 = _check_int(T1, "T1", minimum=1)
    T2 = _check_int(T2, "T2", minimum=1)
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"betas must be a pair of numbers (beta1, beta2), got {betas!r}") from None
    b1, b2 = _check_number(b1, "betas[0]"), _check_number(b2, "betas[1]")
    if b1 == b2:
        raise ValueError(f"betas must differ, got ({b1:g}, {b2:g})")
    if third_phase and b2 == 0:
        raise ValueError("third_phase nudges at +beta and -beta with beta = betas[1], which must not be 0")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if tol is not None:
        tol = _check_number(tol, "tol", low=0, low_open=True)
    return T1, T2, (b1, b2), tol


class ConvEBM:
    """Convolutional energy-based network (the EqProp reference code's ``P_CNN``).

    Parameters
    ----------
    in_size : int, input height = width
    channels : list, input channels first (``[3, 64, 128, ...]``)
    kernels, strides, paddings : per conv layer
    pools : string of "m", "a", "i", one per conv layer
    fc : list of fully connected sizes, the last one the number of classes
    activation : one of ``ACTIVATIONS`` (the reference code's names; functions and derivatives
        from :mod:`sparsecoding.ops.elementwise`)
    softmax : last fc layer is a readout outside the dynamics
    loss : "mse" or "cel"
    scale : optional factor multiplying the default (PyTorch-like uniform) initialisation
    seed, dtype, backend
    layout : "auto", "channels_first" or "channels_last"
        Internal layout of the conv states during a relaxation: ``(N, C, H, W)`` or
        ``(N, H, W, C)``. "auto" takes the layout the convolution engines are fastest in
        (``backend.capabilities(xp).conv_layout``: channels-last for the numba engines, where
        the convolutions gather contiguous channel runs, bench/eqprop: about 1.5x faster per
        step; channels-first for the generic ones cupy uses). Every public array is
        channels-first whatever the internal layout: inputs ``x (N, C, H, W)``, and the conv
        states that ``init_states``, ``relax``, ``step``, ``state_grads`` and
        ``last_free_states`` take and return, ``(N, C, H, W)``; ``relax`` converts once on
        entry and once on exit.

    Attributes
    ----------
    params : list of ``(W, b)`` per synapse (conv ``(K, C, k, k)``, fc ``(out, in)``, readout last)
    state_shapes : list of per-sample state shapes, conv ``(C, H, W)``, fc ``(size,)``
    layout : the internal layout in use
    """

    def __init__(self, in_size, channels, kernels, strides, paddings, pools, fc, activation="my_hard_sig",
                 softmax=False, loss="mse", scale=None, seed=None, dtype="float32", backend=None,
                 layout="auto"):
        n_conv = len(channels) - 1
        if not (len(kernels) == len(strides) == len(paddings) == n_conv):
            raise ValueError(f"kernels, strides and paddings need one entry per conv layer ({n_conv}); got "
                             f"{len(kernels)}, {len(strides)}, {len(paddings)}")
        if len(pools) != n_conv or set(pools) - set("mai"):
            raise ValueError(f"pools must have one of 'm', 'a', 'i' per conv layer ({n_conv}), got {pools!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if not fc:
            raise ValueError("fc must list at least the output size")
        if softmax and len(fc) < 1:
            raise ValueError("softmax=True needs a readout layer in fc")
        _check_int(in_size, "in_size", minimum=1)
        for name, values, low in (("channels", channels, 1), ("kernels", kernels, 1), ("strides", strides, 1),
                                  ("paddings", paddings, 0), ("fc", fc, 1)):
            for i, v in enumerate(values):
                _check_int(v, f"{name}[{i}]", minimum=low)
        if scale is not None:
            scale = _check_number(scale, "scale", low=0, low_open=True)
        self.act_name = activation
        self.sigma, self.dsigma = get_activation(activation, allowed=ACTIVATIONS)
        self.softmax, self.loss = bool(softmax), loss
        self.xp = namespace(backend)
        if layout not in ("auto", "channels_first", "channels_last"):
            raise ValueError(f"layout must be 'auto', 'channels_first' or 'channels_last', got {layout!r}")
        if layout == "auto":
            layout = capabilities(self.xp).conv_layout
        self.layout = layout
        self.cl = layout == "channels_last"
        self._prepared = None  # the last input _check_x returned
        self._checked_y = None  # the last label object _check_y accepted, and its batch size
        self._input_term = None  # the input layer's term, cached during a relaxation
        self._pool = select_pool_engine(self.xp)  # 2x2 pools; indices come from its own max_pool
        self.dtype = np.dtype(dtype)
        self.pools = pools
        self.strides, self.paddings = list(strides), list(paddings)
        rng = np.random.default_rng(seed)
        self.params = []
        # conv geometry: state shapes
        self.state_shapes, self._shapes = [], []  # public (channels-first) and internal per-sample shapes
        size = (in_size, in_size)
        self.conv_in_shapes, self.conv_out_shapes = [], []
        for k in range(n_conv):
            self.conv_in_shapes.append(size)
            out = conv_output_shape(size, (kernels[k], kernels[k]), strides[k], paddings[k])
            size = pool_output_shape(out, (2, 2), (2, 2)) if pools[k] != "i" else out
            if pools[k] != "i" and min(size) >= 1:
                # only the positions the 2x2 floor pool reads are computed (the operator's out_shape): an odd
                # output's last row and column never reach a state (MNIST CNN layer 2: 11x11 -> 10x10, 17% of
                # its forward and adjoint)
                out = tuple(2 * v for v in size)
            self.conv_out_shapes.append(out)
            self.state_shapes.append((channels[k + 1], *size))
            self._shapes.append((*size, channels[k + 1]) if self.cl else (channels[k + 1], *size))
            self.params.append(self._init(rng, (channels[k + 1], channels[k], kernels[k], kernels[k]), scale))
        self.n_conv = n_conv
        prev = int(np.prod(self.state_shapes[-1])) if n_conv else int(np.prod((channels[0], in_size, in_size)))
        sizes = [prev] + list(fc)
        for i in range(len(fc)):
            self.params.append(self._init(rng, (sizes[i + 1], sizes[i]), scale))
            if not (self.softmax and i == len(fc) - 1):
                self.state_shapes.append((sizes[i + 1],))
                self._shapes.append((sizes[i + 1],))
        self.n_classes = fc[-1]
        self._ops = {}

    def _init(self, rng, shape, scale):
        # PyTorch's default: uniform(+-1/sqrt(fan_in)) for weights and biases, times `scale`
        fan_in = int(np.prod(shape[1:]))
        bound = 1.0 / math.sqrt(fan_in)
        s = 1.0 if scale is None else float(scale)
        W = rng.uniform(-bound, bound, shape) * s
        b = rng.uniform(-bound, bound, shape[0]) * s
        return self.xp.asarray(W, dtype=self.dtype), self.xp.asarray(b, dtype=self.dtype)

    # ------------------------------------------------------------ plumbing
    @property
    def n_states(self):
        return len(self.state_shapes)

    def param_names(self):
        """Names of the parameters in the order ``[W_0, b_0, W_1, b_1, ...]`` (for optimiser error messages)."""
        last = len(self.params) - 1
        return [f"{a} of {'the readout' if self.softmax and k == last else f'synapse {k}'}"
                for k in range(len(self.params)) for a in ("W", "b")]

    def init_states(self, batch):
        """Zero states, one array per layer: conv ``(N, C, H, W)``, fc ``(N, size)``."""
        batch = _check_int(batch, "batch", minimum=0)
        return [self.xp.zeros((batch, *s), dtype=self.dtype) for s in self.state_shapes]

    def _init_states(self, batch):
        """Zero states in the internal layout."""
        return [self.xp.zeros((batch, *s), dtype=self.dtype) for s in self._shapes]

    # public (channels-first) <-> internal layout; the identity when they agree
    def _internal(self, states):
        if not self.cl:
            return list(states)
        xp = self.xp
        return [xp.ascontiguousarray(xp.moveaxis(s, 1, -1)) if s.ndim == 4 else s for s in states]

    def _public(self, states):
        if not self.cl:
            return list(states)
        xp = self.xp
        return [xp.ascontiguousarray(xp.moveaxis(s, -1, 1)) if s is not None and s.ndim == 4 else s
                for s in states]

    def _checked_internal(self, states, n, finite):
        """Public ``states`` checked (count, shapes, optionally finite) and converted to the internal layout."""
        self._check_states(states, n, finite)
        return self._internal(states)

    def _op(self, k):
        op = self._ops.get(k)
        W = self.params[k][0]
        if op is None:
            op = ConvOperator(W, self.conv_in_shapes[k], self.strides[k], self.paddings[k], layout=self.layout,
                              out_shape=self.conv_out_shapes[k])
            self._ops[k] = op
        elif op.w is not W:
            op.update_weights(W)
        return op

    def _check_x(self, x):
        """Checked input in the network's layout; an array this method returned passes unchanged.

        The returned array is never the caller's own object (a view at least), so a caller
        who changes its array in place gets it checked again on the next call.
        """
        if x is self._prepared:
            return x
        xp = self.xp
        if np.iscomplexobj(x):
            raise TypeError("x must be real, got a complex array")
        x = xp.asarray(x, dtype=self.dtype)
        expect = (self.params[0][0].shape[1], *self.conv_in_shapes[0]) if self.n_conv else None
        if self.n_conv and tuple(x.shape[1:]) != tuple(expect):
            raise ValueError(f"x must have shape (N, {', '.join(map(str, expect))}), got {tuple(x.shape)}")
        _check_finite(xp, x, "x")
        if self.cl and self.n_conv:
            x = xp.ascontiguousarray(xp.moveaxis(x, 1, -1))
        else:
            x = x[...]
        self._prepared = x
        return x

    def _check_y(self, y, n):
        """Labels checked once per label object (integers in ``[0, n_classes)``, one per sample); returns ``y``."""
        if y is None:
            raise ValueError("y is None: beta != 0 (and the loss) need the labels y")
        if self._checked_y is not None and self._checked_y[0] is y and self._checked_y[1] == n:
            return y
        _check_labels(y, n, self.n_classes)
        self._checked_y = (y, n)
        return y

    def _check_states(self, states, n, finite):
        """``states``: one array per layer of shape (N, *state_shape); with ``finite`` also no NaN or Inf."""
        if len(states) != self.n_states:
            raise ValueError(f"states must hold {self.n_states} arrays (one per layer), got {len(states)}")
        for k, (s, shape) in enumerate(zip(states, self.state_shapes)):
            if tuple(s.shape) != (n, *shape):
                raise ValueError(f"states[{k}] must have shape {(n, *shape)}, got {tuple(s.shape)}")
            if finite:
                _check_finite(self.xp, s, f"states[{k}]")

    def _check_steps(self, T, name="T"):
        return _check_int(T, name, minimum=1)

    @staticmethod
    def _check_schedule(schedule, tol):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be 'sync' or 'async', got {schedule!r}")
        return None if tol is None else _check_number(tol, "tol", low=0, low_open=True)

    def _flat(self, s):
        """(N, features) in PyTorch's (C, H, W) order whatever the state layout."""
        if self.cl and s.ndim == 4:
            s = s.transpose(0, 3, 1, 2)
        return s.reshape(s.shape[0], int(np.prod(s.shape[1:])))  # explicit size: empty batches too

    def _unflat(self, v, like):
        """Inverse of :meth:`_flat` onto the shape of ``like``."""
        if self.cl and like.ndim == 4:
            n, h, w, c = like.shape
            return self.xp.ascontiguousarray(v.reshape(n, c, h, w).transpose(0, 2, 3, 1))
        return v.reshape(like.shape)

    def _forward_terms(self, x, states, memo_fixed=None, bias=True, which=None):
        """Per synapse: the feed-forward term (pooled pre-activation or fc output) and the pool memo.

        With ``memo_fixed`` the max pools select at those indices (a fixed linear map), and
        ``bias=False`` drops the biases: together, the linear part of ``dPhi/ds`` used for
        Hessian-vector products. ``which`` limits the work to a set of synapses (others: None).
        """
        xp = self.xp
        terms, memo = [], []
        inputs = [x] + states
        cached = self._input_term
        for k in range(self.n_conv):
            if which is not None and k not in which:
                terms.append(None)
                memo.append(None)
                continue
            if k == 0 and cached is not None and memo_fixed is None and bias and cached[0] is x:
                # the input is static during a relaxation: its pooled pre-activation is computed once
                terms.append(cached[1])
                memo.append(cached[2])
                continue
            if self.pools[k] == "m" and memo_fixed is None and self.conv_out_shapes[k][0] >= 2 <= \
                    self.conv_out_shapes[k][1]:
                # the pool taken with the forward (fused in the output transform where the engine is
                # Winograd: the pre-activation is never written); the bias after it, as below
                pooled, idx = self._op(k).forward_maxpool(inputs[k])
                if bias:
                    pooled = pooled + self.params[k][1].reshape((1, 1, 1, -1) if self.cl else (1, -1, 1, 1))
                terms.append(pooled)
                memo.append(idx)
                continue
            pre = self._op(k).forward(inputs[k])
            # the bias is constant over each channel's pool window: adding it after the pool gives
            # the same values and argmaxes (max(z + b) = max(z) + b) on a 4x smaller array
            if self.pools[k] == "m" and memo_fixed is not None:
                idx = memo_fixed[k]
                n = pre.shape[0]
                if self.cl:
                    c = pre.shape[-1]
                    flat = xp.take_along_axis(pre.reshape(n, -1, c), idx.reshape(n, -1, c), axis=1)
                else:
                    c = pre.shape[1]
                    flat = xp.take_along_axis(pre.reshape(n, c, -1), idx.reshape(n, c, -1), axis=2)
                pooled = flat.reshape(idx.shape)
            elif self.pools[k] == "m":
                pooled, idx = self._pool.max_pool(pre, (2, 2), (2, 2), self.cl)
            elif self.pools[k] == "a":
                pooled, idx = self._pool.avg_pool(pre, (2, 2), (2, 2), self.cl), None
            else:
                pooled, idx = pre, None
            if bias:
                pooled = pooled + self.params[k][1].reshape((1, 1, 1, -1) if self.cl else (1, -1, 1, 1))
            terms.append(pooled)
            memo.append(idx)
        n_fc_states = self.n_states - self.n_conv
        for j in range(n_fc_states):
            k = self.n_conv + j
            if which is not None and k not in which:
                terms.append(None)
                memo.append(None)
                continue
            W, b = self.params[k]
            prev = self._flat(inputs[k])
            terms.append(prev @ W.T + b if bias else prev @ W.T)
            memo.append(None)
        return terms, memo

    def _unpool(self, k, s_next, memo_k):
        """``U_k(s_k)``: adjoint of layer k's pool at its current pre-activation."""
        if self.pools[k] == "m":
            return self._pool.max_unpool(s_next, memo_k, self.conv_out_shapes[k], self.cl)
        if self.pools[k] == "a":
            return self._pool.avg_pool_adjoint(s_next, self.conv_out_shapes[k], (2, 2), (2, 2), self.cl)
        return s_next

    def _readout(self, s_last):
        W, b = self.params[-1]
        return self._flat(s_last) @ W.T + b

    def _loss_grad_output(self, states, y):
        """d loss / d (last state), per sample (N, ...)."""
        xp = self.xp
        t = one_hot(y, self.n_classes, self.dtype, xp=xp)
        if self.softmax:
            p = softmax(self._readout(states[-1]))
            return self._unflat((p - t) @ self.params[-1][0], states[-1])
        if self.loss == "mse":
            return states[-1] - t
        return softmax(states[-1]) - t

    def loss_value(self, states, y):
        """Per-sample loss ``(N,)`` at the given states (channels-first, as ``init_states`` makes them)."""
        self._check_y(y, states[-1].shape[0])
        return self._loss_value(self._internal(states), y)

    def _loss_value(self, states, y):
        xp = self.xp
        t = one_hot(y, self.n_classes, self.dtype, xp=xp)
        if self.softmax:
            p = softmax(self._readout(states[-1]))
            return -xp.sum(t * xp.log(p + 1e-30), axis=1)
        if self.loss == "mse":
            return 0.5 * xp.sum((states[-1] - t) ** 2, axis=1)
        p = softmax(states[-1])
        return -xp.sum(t * xp.log(p + 1e-30), axis=1)

    # ------------------------------------------------------------- energy
    def phi(self, x, states, y=None, beta=0.0):
        """Primitive function per sample (N,)."""
        xp = self.xp
        x = self._check_x(x)
        beta = _check_number(beta, "beta")
        n = x.shape[0]
        states = self._checked_internal(states, n, finite=True)
        if beta != 0.0:
            self._check_y(y, n)
        terms, _ = self._forward_terms(x, states)
        val = xp.zeros(n, dtype=self.dtype)
        for t, s in zip(terms, states):
            val = val + xp.sum((t * s).reshape(n, int(np.prod(s.shape[1:]))), axis=1)
        if beta != 0.0:
            val = val - beta * self._loss_value(states, y)
        return val

    def state_grads(self, x, states, y=None, beta=0.0, layers=None):
        """``dPhi/ds_k`` for every state (same shapes as ``states``); with ``layers`` only those
        (the others are None), computing only the convolutions they need."""
        x = self._check_x(x)
        beta = _check_number(beta, "beta")
        states = self._checked_internal(states, x.shape[0], finite=False)
        if beta != 0.0:
            self._check_y(y, x.shape[0])
        return self._public(self._state_grads(x, states, y, beta, layers=layers))

    def _state_grads(self, x, states, y=None, beta=0.0, _terms=None, layers=None):
        """:meth:`state_grads` on checked input and internal-layout states."""
        which = None
        if layers is not None:
            layers = set(layers)
            # own feed-forward term; feedback from the layer above (whose max-pool indices need its forward)
            which = layers | {k + 1 for k in layers if k + 1 < self.n_conv and self.pools[k + 1] == "m"}
        terms, memo = self._forward_terms(x, states, which=which) if _terms is None else _terms
        grads = list(terms)
        for k in range(1, self.n_states):
            if layers is not None and k - 1 not in layers:
                continue
            # feedback from synapse k (between state k-1 and state k) into state k-1
            if k < self.n_conv:
                # (the unpool is not fused into the Winograd input transform: measured 1.0-1.4x slower,
                # the per-element index test in the channel loop costs more than the unpooled array's
                # write and read; 2-core Xeon, layers 64->128 16x16 and 128->256 8x8, batch 128)
                fb = self._op(k).adjoint(self._unpool(k, states[k], memo[k]))
            else:
                W = self.params[k][0]
                fb = self._unflat(states[k] @ W, states[k - 1])
            grads[k - 1] = grads[k - 1] + fb
        if beta != 0.0 and (layers is None or self.n_states - 1 in layers):
            grads[-1] = grads[-1] - beta * self._loss_grad_output(states, y)
        if layers is not None:
            grads = [g if k in layers else None for k, g in enumerate(grads)]
        return grads

    def param_grads(self, x, states, y=None, beta=0.0):
        """``dPhi/dtheta`` as batch means, same structure as ``params``.

        An empty batch raises ValueError (the mean over no sample is undefined).
        """
        x = self._check_x(x)
        beta = _check_number(beta, "beta")
        n = x.shape[0]
        if n == 0:
            raise ValueError("x is an empty batch: the batch-mean parameter derivatives need at least one sample")
        states = self._checked_internal(states, n, finite=True)
        if beta != 0.0 and self.softmax:
            self._check_y(y, n)
        return self._param_grads(x, states, y, beta)

    def _param_grads(self, x, states, y, beta, memo=None):
        xp = self.xp
        if memo is None:
            _, memo = self._forward_terms(x, states)
        n = x.shape[0]
        inputs = [x] + states
        out = []
        for k in range(self.n_conv):
            u = self._unpool(k, states[k], memo[k])
            axes = (0, 1, 2) if self.cl else (0, 2, 3)
            out.append((self._op(k).weight_grad(inputs[k], xp.ascontiguousarray(u)) / n, u.sum(axis=axes) / n))
        for k in range(self.n_conv, self.n_states):
            prev = self._flat(inputs[k])
            out.append((states[k].T @ prev / n, states[k].sum(axis=0) / n))
        if self.softmax:
            if beta != 0.0:
                t = one_hot(y, self.n_classes, self.dtype, xp=xp)
                s_last = self._flat(states[-1])
                g = -beta * (softmax(self._readout(states[-1])) - t)
                out.append((g.T @ s_last / n, g.sum(axis=0) / n))
            else:
                W, b = self.params[-1]
                out.append((xp.zeros_like(W), xp.zeros_like(b)))
        return out

    # ----------------------------------------------------------- dynamics
    def step(self, x, states, y=None, beta=0.0, schedule="sync"):
        """One relaxation step ``s <- sigma(dPhi/ds)``; ``schedule`` "sync" or "async" (odd then even layers)."""
        x = self._check_x(x)
        beta = _check_number(beta, "beta")
        self._check_schedule(schedule, None)
        states = self._checked_internal(states, x.shape[0], finite=False)
        if beta != 0.0:
            self._check_y(y, x.shape[0])
        return self._public(self._step(x, states, y, beta, schedule))

    def _step(self, x, states, y, beta, schedule="sync"):
        if schedule == "sync":
            return [self.sigma(g) for g in self._state_grads(x, states, y, beta)]
        states = list(states)
        for parity in (0, 1):  # layers 1, 3, 5 ... then 2, 4, ... (0-based even, odd)
            half = range(parity, self.n_states, 2)
            g = self._state_grads(x, states, y, beta, layers=half)
            for k in half:
                states[k] = self.sigma(g[k])
        return states

    def relax(self, x, states, T, y=None, beta=0.0, schedule="sync", tol=None, check_every=5):
        """Run up to ``T`` steps of :meth:`step` from ``states`` on the library's relaxation runner.

        ``tol`` (None or > 0): stop once the relative change of the states over one step,
        ``max_k max|s_t - s_{t-1}| / max_k max|s_t|``, is <= tol; it is checked every
        ``check_every`` steps (one host read per check, which also stops a diverging run with
        ``FloatingPointError``). Returns a :class:`~sparsecoding.solvers.relax.RelaxResult`:
        ``state`` the final states (channels-first, like ``states``), ``n_iter``,
        ``converged``, ``history``. An empty batch returns its (empty) states unchanged.
        """
        x = self._check_x(x)
        T = self._check_steps(T)
        tol = self._check_schedule(schedule, tol)
        beta = _check_number(beta, "beta")
        if len(states) != self.n_states:
            raise ValueError(f"need {self.n_states} state arrays, got {len(states)}")
        if x.shape[0] == 0:
            return RelaxResult(list(states), 0, True)
        states = self._checked_internal(states, x.shape[0], finite=True)
        if beta != 0.0:
            self._check_y(y, x.shape[0])
        result = self._relax(x, states, T, y, beta, schedule, tol, check_every)
        result.state = self._public(result.state)
        return result

    @contextmanager
    def _frozen_weights(self):
        """Inside: every conv operator's weight-derived operands (channels-last GEMM operands, FFT spectra)
        computed once; the weights cannot change during a relaxation."""
        with ExitStack() as stack:
            for k in range(self.n_conv):
                stack.enter_context(self._op(k).frozen_weights())
            yield

    def _relax(self, x, states, T, y, beta, schedule, tol, check_every=5):
        """:meth:`relax` on checked input and internal-layout states; returns the RelaxResult."""
        self._input_term = None
        # BLAS single-threaded: the conv engines of the channels-last layout work per core (ops.parallel)
        # and the fc products are small, while a threaded BLAS call between them leaves OpenBLAS threads
        # spinning on a core the per-core workers need (measured, 2-core EPYC Zen 4: a per-core conv pair
        # right after a threaded GEMM 55 ms, on its own 30 ms)
        with self._frozen_weights(), blas_single_thread():
            if self.n_conv:
                term, memo = self._forward_terms(x, states, which={0})
                self._input_term = (x, term[0], memo[0])
            try:
                return relax(lambda s: self._step(x, s, y, beta, schedule), states, T, tol=tol,
                             check_every=check_every, monitor=relative_change, what="the EqProp relaxation")
            finally:
                self._input_term = None

    def ep_gradients(self, x, y, T1, T2, betas=(0.0, 0.5), third_phase=False, random_sign=False, rng=None,
                     schedule="sync", tol=None):
        """EP estimate of ``dLoss/dtheta`` (same structure as ``params``); descend it.

        Free phase ``T1`` steps at ``betas[0]`` from zero states, nudged phase ``T2`` steps at
        ``betas[1]`` from the free fixed point:
        ``-(dPhi/dtheta(s^b2) - dPhi/dtheta(s^b1)) / (b2 - b1)``; with ``third_phase``:
        ``-(dPhi/dtheta(s^+b) - dPhi/dtheta(s^-b)) / (2 b)``. Returns the gradients (same
        structure as ``params``); the free fixed point is kept: ``self.last_free_states``.

        ``T1``, ``T2``: integers >= 1; ``betas``: two finite numbers that differ (with
        ``third_phase``, ``betas[1] != 0``); ``y``: one integer label in ``[0, n_classes)`` per
        sample; an empty batch raises ValueError.
        """
        T1, T2, (beta1, beta2), tol = check_phase_args(T1, T2, betas, third_phase, schedule, tol)
        x = self._check_x(x)
        if x.shape[0] == 0:
            raise ValueError("x is an empty batch: the EP gradient (a batch mean) needs at least one sample")
        self._check_y(y, x.shape[0])
        if random_sign:
            rng = rng if rng is not None else np.random.default_rng()
            beta2 = beta2 * (1 if rng.random() < 0.5 else -1)
        free = self._relax(x, self._init_states(x.shape[0]), T1, y, beta1, schedule, tol).state
        plus = self._relax(x, free, T2, y, beta2, schedule, tol).state
        if third_phase:
            minus = self._relax(x, free, T2, y, -beta2, schedule, tol).state
            gp, gm = self._param_grads(x, plus, y, beta2), self._param_grads(x, minus, y, -beta2)
            denom = 2 * beta2
        else:
            gp, gm = self._param_grads(x, plus, y, beta2), self._param_grads(x, free, y, beta1)
            denom = beta2 - beta1
        self._last_free = free
        return [(-(a[0] - b[0]) / denom, -(a[1] - b[1]) / denom) for a, b in zip(gp, gm)]

    def predict(self, x, T, schedule="sync", tol=None):
        """Class predictions after a free phase of ``T`` steps (an integer >= 1); empty batch: empty array."""
        T = self._check_steps(T)
        tol = self._check_schedule(schedule, tol)
        x = self._check_x(x)
        if x.shape[0] == 0:
            return self.xp.zeros(0, dtype=np.int64)
        states = self._relax(x, self._init_states(x.shape[0]), T, None, 0.0, schedule, tol).state
        return self._output(states).argmax(axis=1)

    def _output(self, states):
        """The network's class scores ``(N, n_classes)`` at internal-layout states."""
        return self._readout(states[-1]) if self.softmax else states[-1]

    @property
    def last_free_states(self):
        """The free fixed point of the last :meth:`ep_gradients` batch (channels-first states)."""
        free = getattr(self, "_last_free", None)
        return None if free is None else self._public(free)

    def after_step(self):
        """Local learning rules applied after each optimiser step (none here; the LCA front end updates its
        dictionary); returns metrics for the step's record."""
        return {}

    # ------------------------------------------------------ learning loop (DESIGN.md §2)
    def get_state(self):
        """``(arrays, meta)`` for checkpoints: host copies of the parameters as ``W<k>`` / ``b<k>``, and
        the architecture (class, parameter shapes, pools, strides, paddings, activation, softmax, loss, dtype)."""
        from ..backend import to_numpy  # noqa: PLC0415

        arrays = {}
        for k, (W, b) in enumerate(self.params):
            arrays[f"W{k}"], arrays[f"b{k}"] = np.array(to_numpy(W)), np.array(to_numpy(b))
        meta = {"class": type(self).__name__, "shapes": [[list(W.shape), list(b.shape)] for W, b in self.params],
                "pools": self.pools, "strides": list(self.strides), "paddings": list(self.paddings),
                "activation": self.act_name, "softmax": self.softmax, "loss": self.loss, "dtype": self.dtype.name}
        return arrays, meta

    def set_state(self, arrays, meta=None):
        """Load :meth:`get_state`'s output in place (the parameter arrays stay the same objects, so an
        optimiser holding them keeps working); a different architecture raises ValueError naming it."""
        if meta is not None:
            own = {"class": type(self).__name__, "pools": self.pools, "strides": list(self.strides),
                   "paddings": list(self.paddings), "activation": self.act_name, "softmax": self.softmax,
                   "loss": self.loss,
                   "shapes": [[list(W.shape), list(b.shape)] for W, b in self.params]}
            diff = [k for k in own if k in meta and meta[k] != own[k]]
            if diff:
                raise ValueError("the saved network differs from this one in "
                                 + "; ".join(f"{k} ({meta[k]!r} saved, {own[k]!r} here)" for k in diff))
        for k, (W, b) in enumerate(self.params):
            for name, p in ((f"W{k}", W), (f"b{k}", b)):
                if name not in arrays:
                    raise ValueError(f"the saved state has no {name} (this network has {len(self.params)} synapses)")
                a = np.asarray(arrays[name])
                if a.shape != tuple(p.shape):
                    raise ValueError(f"saved {name} has shape {a.shape}, this network's is {tuple(p.shape)}")
                if not np.isfinite(a).all():
                    raise ValueError(f"saved {name} contains NaN or Inf")
        for k, (W, b) in enumerate(self.params):
            W[...] = self.xp.asarray(arrays[f"W{k}"], dtype=self.dtype)
            b[...] = self.xp.asarray(arrays[f"b{k}"], dtype=self.dtype)

    def fit(self, X, y, *, epochs=1, batch_size=128, seed=0, callbacks=(), checkpoint=None, **options):
        """Train with EP on ``(X, y)``; returns the :class:`~sparsecoding.training.History` (one record per
        epoch: ``train_error``, ``seconds``, ``lr_scale``, ``test_error`` with ``X_test``/``y_test``).

        ``checkpoint`` (a .npz path) makes the run resumable exactly; ``options`` are those of
        :func:`sparsecoding.eqprop.train.train` (``X_test``, ``y_test``, ``T1``, ``T2``, ``betas``,
        ``third_phase``, ``random_sign``, ``optim``, ``lrs``, ``wds``, ``mmt``, ``lr_decay``,
        ``data_aug``, ``schedule``, ``tol``, ``checkpoint_every``, ``allow_changes``, ``progress``,
        ``max_steps``).
        """
        from .train import train  # noqa: PLC0415

        X_test, y_test = options.pop("X_test", None), options.pop("y_test", None)
        return train(self, X, y, X_test, y_test, epochs=epochs, mbs=batch_size, seed=seed, callbacks=callbacks,
                     checkpoint=checkpoint, **options)


class MLPEBM(ConvEBM):
    """Fully connected energy-based network: ``sizes = [input, hidden..., classes]``."""

    def __init__(self, sizes, activation="my_hard_sig", softmax=False, loss="mse", scale=None, seed=None,
                 dtype="float32", backend=None):
        if len(sizes) < 2:
            raise ValueError("sizes needs at least input and output sizes")
        self.in_features = sizes[0]
        # no conv layer: the first fc layer reads the flattened input (channels[0] * 1 * 1 = sizes[0])
        super().__init__(1, [sizes[0]], [], [], [], "", list(sizes[1:]), activation, softmax, loss, scale, seed,
                         dtype, backend)

    def _check_x(self, x):
        if x is self._prepared:
            return x
        if np.iscomplexobj(x):
            raise TypeError("x must be real, got a complex array")
        x = self.xp.asarray(x, dtype=self.dtype)
        if x.ndim < 2:
            raise ValueError(f"x must have shape (N, {self.in_features}), got {tuple(x.shape)}")
        x = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))  # a new view: never the caller's object
        if x.shape[1] != self.in_features:
            raise ValueError(f"x must have {self.in_features} features, got {x.shape[1]}")
        _check_finite(self.xp, x, "x")
        self._prepared = x
        return x
