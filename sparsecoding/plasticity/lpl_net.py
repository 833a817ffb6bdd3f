"""Layer-local LPL training of a VGG-like convolutional network on plain arrays.

Each conv layer ``z_l = f(conv(h_{l-1}, W_l) + b_l)`` (then optional 2x2 max
pool to give ``h_l``) learns only from its own LPL delta
(:func:`sparsecoding.plasticity.lpl.lpl_delta_conv`); no gradient crosses
layers. Consecutive "frames" are two random augmentations of the same
images: each view's features are the other's prediction target (symmetric,
stop-gradient). Layers train all at once or greedily one after another.
On the numba engines with a registry activation, a training step runs each layer's two
passes per view on the CPU path of :mod:`sparsecoding.plasticity._lpl_cpu` (per core,
cache-sized chunks, channels-last, the layers chained channels-last); elsewhere (cupy,
the generic engines, a custom activation) the generic array code.

Bad input (DESIGN.md §10): images with NaN or Inf, of the wrong rank or channel
count, fewer than 2 images per training step, unknown layers, and hyperparameters
out of range (``lambda1``/``lambda2``/``weight_decay`` finite >= 0, ``eps`` > 0,
``kernel_size`` odd, ``optimizer`` "adam" or "sgd", ``lr`` finite >= 0) raise a
ValueError naming the argument. A training step whose update would make a weight
non-finite raises ``FloatingPointError`` (from the optimiser) and leaves the
weights and the optimiser as they were. ``forward``/``features`` of an empty batch
return empty arrays of the right shapes.
"""
from __future__ import annotations

import numpy as np

from ..backend import namespace, to_numpy
from ..ops.conv import ConvOperator
from ..ops.elementwise import ACTIVATIONS, get_activation
from ..ops.pool import max_pool
from ..optim import Adam, SGD, _check_finite, _check_int
from ._lpl_cpu import FusedConvLPL as _FusedConvLPL
from ._lpl_cpu import pair_gradients as _pair_gradients
from .lpl import LPL_ACTIVATIONS, MODES, _check_coefficients, _delta_conv, _fused_activation, _losses

__all__ = ["LPLConvNet", "adaptive_avg_pool"]

OPTIMIZERS = ("adam", "sgd")


def adaptive_avg_pool(h, size=2):
    """Average over a ``size x size`` grid of equal blocks (spatial dims divisible by ``size`` after cropping)."""
    n, c, hh, ww = h.shape
    s = min(size, hh, ww)
    bh, bw = hh // s, ww // s
    h = h[:, :, : bh * s, : bw * s].reshape(n, c, s, bh, s, bw)
    return h.mean(axis=(3, 5))


class LPLConvNet:
    """VGG-like stack of 3x3 conv layers trained layer-locally with LPL.

    Parameters
    ----------
    in_channels : int
    channels : sequence of output channels per layer
    pools : string of "m" (2x2 max pool after the layer) or "i" (none), one per layer
    activation : "relu", "tanh", "sigmoid" or "linear"
    lambda1, lambda2, eps : LPL coefficients (Hebbian, decorrelation) and variance epsilon
    predictive : include the predictive term (False: Hebbian + decorrelation only)
    mode : "pool" (losses on globally pooled features), "positions" (every position a sample) or
        "mixed" (predictive on pooled features, Hebbian and decorrelation over positions)
    lr, optimizer, weight_decay : per-layer optimiser ("adam" or "sgd")
    """

    def __init__(self, in_channels, channels=(32, 64), pools="mm", activation="relu", kernel_size=3, lambda1=1.0,
                 lambda2=10.0, eps=1e-4, predictive=True, mode="mixed", lr=1e-3, optimizer="adam", weight_decay=0.0,
                 seed=None, dtype="float32", backend=None):
        if len(pools) != len(channels) or set(pools) - {"m", "i"}:
            raise ValueError(f"pools must have one 'm' or 'i' per layer ({len(channels)}), got {pools!r}")
        f, fprime = get_activation(activation, allowed=LPL_ACTIVATIONS)  # ValueError naming the accepted ones
        if mode not in MODES:
            raise ValueError(f"mode must be 'pool', 'positions' or 'mixed', got {mode!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        in_channels = _check_int(in_channels, "in_channels", minimum=1)
        if not len(channels):
            raise ValueError("channels must list at least one layer")
        channels = [_check_int(k, f"channels[{i}]", minimum=1) for i, k in enumerate(channels)]
        kernel_size = _check_int(kernel_size, "kernel_size", minimum=1)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (the layers keep the spatial size), got {kernel_size}")
        lambda1, lambda2, eps, weight_decay = _check_coefficients(lambda1, lambda2, eps, weight_decay)
        self.xp = xp = namespace(backend)
        self.f, self.fprime = f, fprime
        self.pools, self.kernel_size = pools, kernel_size
        self.lambda1, self.lambda2, self.eps, self.mode = lambda1, lambda2, eps, mode
        self.terms = ("pred", "hebb", "dec") if predictive else ("hebb", "dec")
        self.weight_decay = weight_decay
        rng = np.random.default_rng(seed)
        self.params = []
        c = in_channels
        for k in channels:
            fan_in = c * kernel_size * kernel_size
            W = rng.standard_normal((k, c, kernel_size, kernel_size)) * np.sqrt(2.0 / fan_in)
            self.params.append((xp.asarray(W, dtype=dtype), xp.zeros(k, dtype=dtype)))
            c = k
        flat = [p for pair in self.params for p in pair]
        names = [f"{a} of layer {k}" for k in range(len(self.params)) for a in ("W", "b")]
        self.optimizer = (Adam(flat, lr=lr, names=names) if optimizer == "adam"
                          else SGD(flat, lr=lr, momentum=0.9, names=names))
        self._ops = {}
        self._fused = {}  # (layer, input shape) -> the layer's CPU step with its work buffers

    def _op(self, layer, shape):
        key = (layer, tuple(shape))
        if key not in self._ops:
            self._ops[key] = ConvOperator(self.params[layer][0], shape, 1, self.kernel_size // 2)
        op = self._ops[key]
        op.update_weights(self.params[layer][0])
        return op

    def _check_images(self, x, name, channels=None, xp=None):
        """``x`` as an (N, C, H, W) array of ``xp`` (default: the network's), finite, with the right channels."""
        xp = xp or self.xp
        if np.iscomplexobj(x):
            raise TypeError(f"{name} must be real, got a complex array")
        x = xp.asarray(x)
        channels = self.params[0][0].shape[1] if channels is None else channels
        if x.ndim != 4:
            raise ValueError(f"{name} must be images of shape (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != channels:
            raise ValueError(f"{name} has {x.shape[1]} channels, the network takes {channels}")
        _check_finite(xp, x, name)
        return x

    def _check_layer(self, layer, name="layer"):
        layer = _check_int(layer, name, minimum=0)
        if layer >= len(self.params):
            raise ValueError(f"{name} must be in [0, {len(self.params)}), got {layer}")
        return layer

    def layer_forward(self, layer, h, return_pre=False):
        """``(z, h_next)``: the layer's activation map and its pooled output (and the pre-activation)."""
        layer = self._check_layer(layer)
        h = self._check_images(h, "h", channels=self.params[layer][0].shape[1])
        return self._layer_forward(layer, h, return_pre)

    def _layer_forward(self, layer, h, return_pre=False):
        W, b = self.params[layer]
        a = self._op(layer, h.shape[2:]).forward(h) + b.reshape(1, -1, 1, 1)
        z = self.f(a)
        h_next = max_pool(z, 2)[0] if self.pools[layer] == "m" and min(z.shape[2:]) >= 2 else z
        return (z, h_next, a) if return_pre else (z, h_next)

    def forward(self, x):
        """List of every layer's activation map ``z_l`` for inputs ``x`` (N, C, H, W)."""
        return self._forward(self._check_images(x, "x"))

    def _forward(self, x):
        zs, h = [], x
        for layer in range(len(self.params)):
            z, h = self._layer_forward(layer, h)
            zs.append(z)
        return zs

    def features(self, x, grid=2, batch_size=512):
        """Per layer, readout features: ``grid x grid`` average-pooled maps, flattened (host arrays).

        An empty ``x`` gives arrays with no rows and the right number of columns.
        """
        from ..backend import get_xp  # noqa: PLC0415

        grid = _check_int(grid, "grid", minimum=1)
        batch_size = _check_int(batch_size, "batch_size", minimum=1)
        x = self._check_images(x, "x", xp=get_xp(x))  # checked where it lives (host data stays on the host)
        out = [[] for _ in self.params]
        for i in range(0, max(x.shape[0], 1), batch_size):
            for layer, z in enumerate(self._forward(self.xp.asarray(x[i:i + batch_size]))):
                pooled = adaptive_avg_pool(z, grid)
                out[layer].append(to_numpy(pooled.reshape(z.shape[0], int(np.prod(pooled.shape[1:])))))
        return [np.concatenate(o) for o in out]

    def _pooled(self, z):
        return z if self.mode == "positions" else z.reshape(z.shape[0], z.shape[1], -1).mean(axis=2)

    def train_step(self, x1, x2, layers=None):
        """One layer-local LPL step on two views (N, C, H, W) of the same images.

        Returns a list of ``(L_pred, L_hebb, L_dec)`` per trained layer (host floats).
        ``x1``, ``x2``: the same shape, at least 2 images, finite; ``layers``: distinct layer
        indices (default: all). A step whose update would make a weight non-finite raises
        FloatingPointError and changes nothing.
        """
        xp = self.xp
        if layers is None:
            layers = range(len(self.params))
        else:
            layers = [self._check_layer(v, "layers[]") for v in layers]
            if not layers or len(set(layers)) != len(layers):
                raise ValueError(f"layers must list distinct layer indices, got {layers!r}")
        h1, h2 = self._check_images(x1, "x1"), self._check_images(x2, "x2")
        if h1.shape != h2.shape:
            raise ValueError(f"x1 and x2 (two views of the same images) must have the same shape, got "
                             f"{tuple(h1.shape)} and {tuple(h2.shape)}")
        if h1.shape[0] < 2:
            raise ValueError(f"x1 and x2 need at least 2 images (LPL's batch variance), got {h1.shape[0]}")
        report = []
        grads = self._gradients(h1, h2, layers, report)
        full = []
        for layer, (W, b) in enumerate(self.params):
            g = next((g for g in grads if g[0] == layer), None)
            full += [g[1], g[2]] if g is not None else [xp.zeros_like(W), xp.zeros_like(b)]
        self.optimizer.step(full)
        return report

    def _gradients(self, h1, h2, layers, report=None):
        """``[(layer, dL/dW, dL/db)]`` for the trained ``layers`` on checked views ``h1``, ``h2``, with
        ``L = (L(view 2 | SG view 1) + L(view 1 | SG view 2)) / 2``; appends each layer's
        ``(L_pred, L_hebb, L_dec)`` (view 2 predicting view 1) to ``report`` when given."""
        if self._fused_ok():
            return self._gradients_fused(h1, h2, layers, report)
        xp = self.xp
        grads = []
        for layer in range(max(layers) + 1):
            W, b = self.params[layer]
            z1, n1, a1 = self._layer_forward(layer, h1, return_pre=True)
            z2, n2, a2 = self._layer_forward(layer, h2, return_pre=True)
            if layer in layers:
                op = self._op(layer, h1.shape[2:])
                p1, p2 = self._pooled(z1), self._pooled(z2)
                kw = dict(stride=1, padding=self.kernel_size // 2, mode=self.mode, lambda1=self.lambda1,
                          lambda2=self.lambda2, eps=self.eps, weight_decay=self.weight_decay, terms=self.terms, op=op)
                dW1, db1, _ = _delta_conv(W, b, h2, p1, self.f, self.fprime, a=a2, **kw)  # view 2 from view 1
                dW2, db2, _ = _delta_conv(W, b, h1, p2, self.f, self.fprime, a=a1, **kw)
                grads.append((layer, -0.5 * (dW1 + dW2), -0.5 * (db1 + db2)))
                if report is not None:
                    flat2 = p2 if p2.ndim == 2 else xp.moveaxis(p2, 1, -1).reshape(-1, p2.shape[1])
                    flat1 = p1 if p1.ndim == 2 else xp.moveaxis(p1, 1, -1).reshape(-1, p1.shape[1])
                    report.append(tuple(float(v) for v in _losses(flat2, flat1, self.eps)))
                    if self.mode == "mixed":  # Hebbian / decorrelation are measured over positions
                        pos = xp.moveaxis(z2, 1, -1).reshape(-1, z2.shape[1])
                        local = _losses(pos, pos, self.eps)
                        report[-1] = (report[-1][0], float(local[1]), float(local[2]))
            h1, h2 = n1, n2
        return grads

    def _act_code(self):
        """The :mod:`._lpl_cpu` code of the activation on the numba engines, else None."""
        return _fused_activation(self.xp, self.f, self.fprime)

    def _fused_ok(self):
        """The per-core channels-last path (:mod:`._lpl_cpu`): numpy arrays, a registry activation."""
        return self._act_code() is not None

    def _gradients_fused(self, h1, h2, layers, report):
        """:meth:`_gradients` on the CPU: two fused passes per view and layer, layers chained channels-last."""
        act = self._act_code()
        grads, cl = [], False
        for layer in range(max(layers) + 1):
            W, b = self.params[layer]
            n, shape = h1.shape[0], (h1.shape[1:3] if cl else h1.shape[2:])
            key = (layer, tuple(shape))
            fused = self._fused.get(key)
            if fused is None:
                fused = self._fused[key] = _FusedConvLPL(W.shape[1], W.shape[0], W.shape[2:], shape, W.dtype)
            if layer in layers:
                gW, gb, rep = _pair_gradients(fused, h1, h2, W, b, act, self.mode, self.lambda1, self.lambda2,
                                              self.eps, self.weight_decay, self.terms, channels_last=cl)
                grads.append((layer, gW, gb))
                if report is not None:
                    report.append(rep)
            else:
                for v, h in ((0, h1), (1, h2)):
                    fused.forward(v, h, W, b, act, channels_last=cl, stats=False)
            if layer < max(layers):
                pool = self.pools[layer] == "m" and min(shape) >= 2
                h1, h2 = fused.output(0, n, act, pool), fused.output(1, n, act, pool)
                cl = True
        return grads

    def fit(self, X, y=None, *, epochs=1, batch_size=128, seed=0, callbacks=(), checkpoint=None,
            checkpoint_every=None, allow_changes=False, settings=None, augment=None, greedy=False, progress=True,
            callback=None, max_steps=None, record_steps=False):
        """Train on images ``X`` (N, C, H, W) with two augmented views per image per step.

        Runs on the learning loop (:func:`sparsecoding.training.fit_loop`): epoch ``e``
        visits the images in the order ``default_rng([seed, e]).permutation(N)`` in
        batches of ``batch_size`` (a last smaller batch is dropped: the Hebbian term
        needs a batch variance), and the same generator draws the augmentations
        (``augment(x, rng)``, default :func:`~sparsecoding.data.augment.lpl_views`).

        ``greedy``: the layers train one after another, ``epochs`` epochs each: the
        loop runs ``len(layers) * epochs`` epochs and epoch ``e`` trains layer
        ``e // epochs`` only (its records carry ``stage``, the layer, 1-based), so
        a checkpoint taken in any stage resumes exactly; ``epochs`` is then one of
        the checkpoint's settings. Without ``greedy`` all layers train at once and
        ``epochs`` may grow between runs.

        ``checkpoint``: a .npz path, written atomically every ``checkpoint_every``
        batches, after every epoch and on Ctrl-C (then
        :class:`~sparsecoding.training.TrainingInterrupted` is raised); it holds the
        weights, the optimiser's buffers and the loop's generator state, and an existing
        one is resumed (bit-identical to an uninterrupted run). Its settings (the
        network's hyperparameters, ``batch_size``, ``seed``, ``greedy``, the augmentation's
        name and the extra ``settings``) must match unless ``allow_changes``.
        ``callbacks``: ``f(record)`` after each epoch; ``callback``: ``f(step, reports)``
        after each step (``reports`` as returned by :meth:`train_step`).

        Returns the :class:`~sparsecoding.training.History`; each epoch record holds
        ``pred<l>``, ``hebb<l>``, ``dec<l>``: the mean LPL losses of each trained layer ``l`` (1-based).
        """
        from ..backend import get_xp  # noqa: PLC0415
        from ..data.augment import lpl_views  # noqa: PLC0415
        from ..training import fit_loop  # noqa: PLC0415

        if getattr(X, "ndim", None) != 4:
            raise ValueError(f"X must be images of shape (N, C, H, W), got shape {tuple(getattr(X, 'shape', ()))}")
        in_channels = self.params[0][0].shape[1]
        if X.shape[1] != in_channels:
            raise ValueError(f"X has {X.shape[1]} channels, the network takes {in_channels}")
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        epochs = int(epochs)
        augment = augment or lpl_views
        n_layers = len(self.params)
        xp_data = get_xp(X)
        act = next((k for k in LPL_ACTIVATIONS if ACTIVATIONS[k][0] is self.f), getattr(self.f, "__name__", "custom"))
        own = {"model": "LPLConvNet", "shapes": [list(W.shape) for W, _ in self.params], "pools": self.pools,
               "activation": act, "lambda1": self.lambda1, "lambda2": self.lambda2, "eps": self.eps,
               "mode": self.mode, "terms": list(self.terms), "weight_decay": self.weight_decay,
               "optimizer": self.optimizer.kind, "lr": [float(v) for v in self.optimizer.lr],
               "dtype": str(self.params[0][0].dtype), "batch_size": int(batch_size), "seed": seed,
               "greedy": bool(greedy), "augment": getattr(augment, "__name__", type(augment).__name__)}
        if greedy:
            own["epochs_per_layer"] = epochs

        def step(idx, rng, info):
            layers = [info["epoch"] // epochs] if greedy else list(range(n_layers))
            xb = X[xp_data.asarray(idx)]
            rep = self.train_step(augment(xb, rng), augment(xb, rng), layers=layers)
            if callback is not None:
                callback(info["step"] + 1, rep)
            return {f"{name}{layer + 1}": v for layer, r in zip(layers, rep)
                    for name, v in zip(("pred", "hebb", "dec"), r)}

        def epoch_end(epoch, record):
            return {"stage": epoch // epochs + 1} if greedy else {}

        history = fit_loop(self, X.shape[0], step, epochs=n_layers * epochs if greedy else epochs,
                           batch_size=batch_size, seed=seed, checkpoint=checkpoint,
                           checkpoint_every=checkpoint_every, settings={**own, **(settings or {})},
                           allow_changes=allow_changes, kind="LPLConvNet", on_epoch_end=epoch_end,
                           callbacks=callbacks, progress=progress, desc="LPL", drop_last=True, max_steps=max_steps,
                           record_steps=record_steps)
        self.history_ = history
        return history

    def get_state(self):
        """``(arrays, meta)`` for checkpoints: weights ``W<k>``, biases ``b<k>`` and the optimiser's buffers
        (host copies), the optimiser's step count and learning rates in ``meta``."""
        from ..checkpoint import pack_optimizer, pack_params  # noqa: PLC0415

        arrays = {k: np.array(v) for k, v in pack_params(self.params, {}).items()}
        return arrays, {"optimizer": pack_optimizer(self.optimizer, arrays)}

    def set_state(self, arrays, meta):
        """Restore what :meth:`get_state` returned (shapes checked; copied into the network's arrays)."""
        from ..checkpoint import unpack_optimizer, unpack_params  # noqa: PLC0415

        for k, (W, b) in enumerate(self.params):
            for name, own in ((f"W{k}", W), (f"b{k}", b)):
                if name not in arrays:
                    raise ValueError(f"the state has no {name!r} array (this network has {len(self.params)} layers)")
                if tuple(np.shape(arrays[name])) != tuple(own.shape):
                    raise ValueError(f"{name} has shape {tuple(np.shape(arrays[name]))} in the state, "
                                     f"this network's is {tuple(own.shape)}")
        unpack_params(self.params, arrays)
        unpack_optimizer(self.optimizer, arrays, meta["optimizer"])
