"""Optimisers on plain arrays: SGD (momentum, weight decay) and Adam, plus a cosine schedule.

Parameters are updated in place, so a model's arrays stay the same objects.
They are given as a list of arrays or as a dict ``{name: array}`` (the named
parameters: the names appear in the error messages, key the optimiser's
buffers in checkpoints (:func:`sparsecoding.checkpoint.pack_optimizer`), and
a state is loaded by name). ``lr`` and ``weight_decay`` are a scalar or one
value per parameter (layer-wise rates as in the EqProp reference code): a
sequence in the parameters' order or, for named parameters, a dict by name;
gradients are likewise a list in order or a dict by name.

Every hyperparameter is range-checked when set (``lr`` and ``weight_decay``
finite and >= 0, ``momentum`` and Adam's ``betas`` in [0, 1), ``eps`` > 0).
A step computes the new parameters and buffers first and writes them only if
all of them are finite (one host synchronisation per step); otherwise it
raises ``FloatingPointError`` naming the parameter and the likely cause, and
the parameters and the optimiser state are left exactly as they were before
the step (no restore from a checkpoint is needed).

This module also holds the small argument checks the models share
(``_check_number``, ``_check_int``, ``_check_finite``, ``_check_labels``).
"""
from __future__ import annotations

import math
import operator
from collections.abc import Mapping

import numpy as np

from .backend import get_xp, to_numpy

__all__ = ["SGD", "Adam", "cosine_lr", "named_params"]


# ------------------------------------------------------------------ argument checks shared by the models
def _range_text(low, high, low_open, high_open):
    if low is not None and high is not None:
        return f"a finite number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"a finite number {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"a finite number {'<' if high_open else '<='} {high:g}"
    return "a finite number"


def _check_number(value, name, low=None, high=None, low_open=False, high_open=False):
    """``float(value)`` if it is a finite number in the given range, else a ValueError naming ``name``."""
    text = _range_text(low, high, low_open, high_open)
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise ValueError(f"{name} must be {text}, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {text}, got {value!r}") from None
    ok = math.isfinite(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        raise ValueError(f"{name} must be {text}, got {value!r}")
    return v


def _check_int(value, name, minimum=None):
    """``int(value)`` for an integer (not a bool, not a float) >= ``minimum``, else a ValueError naming ``name``."""
    text = "an integer" + ("" if minimum is None else f" >= {minimum}")
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be {text}, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be {text}, got {value!r}") from None
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be {text}, got {v}")
    return v


def _check_finite(xp, a, name):
    """ValueError naming ``name`` if the array holds NaN or Inf (one host synchronisation)."""
    if not bool(xp.isfinite(a).all()):
        raise ValueError(f"{name} contains NaN or Inf")


def _check_labels(y, n=None, n_classes=None, name="y", n_name="x"):
    """Host int64 copy of the class labels ``y`` after checking them.

    Labels are integers: an integer dtype, or floats whose values are all integral
    (``3.0``, as many loaders produce); booleans, fractional or non-finite values are
    refused. With ``n``: one label per sample; with ``n_classes``: each in ``[0, n_classes)``.
    """
    yh = to_numpy(y)
    if not isinstance(yh, np.ndarray):
        yh = np.asarray(yh)
    if yh.dtype == np.bool_ or not (np.issubdtype(yh.dtype, np.integer) or np.issubdtype(yh.dtype, np.floating)):
        raise ValueError(f"{name} must hold integer class labels, got dtype {yh.dtype}")
    if yh.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class labels, got shape {tuple(yh.shape)}")
    if n is not None and yh.shape[0] != n:
        raise ValueError(f"{name} has {yh.shape[0]} labels but {n_name} has {n} samples")
    if np.issubdtype(yh.dtype, np.floating):
        if not np.isfinite(yh).all():
            raise ValueError(f"{name} contains NaN or Inf")
        bad = yh[yh != np.round(yh)]
        if bad.size:
            raise ValueError(f"{name} must hold integer class labels, got non-integral values such as {bad[0]!r}")
    yi = yh.astype(np.int64)
    if n_classes is not None and yi.size and (yi.min() < 0 or yi.max() >= n_classes):
        raise ValueError(f"{name} labels must be integers in [0, {n_classes}), got values in "
                         f"[{yi.min()}, {yi.max()}]")
    return yi


# ------------------------------------------------------------------ optimisers
def named_params(params, names=None):
    """``(arrays, names)`` of parameters given as a dict ``{name: array}`` or a sequence of arrays.

    A dict's keys are the names (as strings); for a sequence, ``names`` (one per array) or None.
    Names must be unique (they key the checkpoint). ValueError naming the problem otherwise.
    """
    if isinstance(params, Mapping):
        if names is not None:
            raise ValueError("give the parameter names either as the keys of params or as names=, not both")
        names = list(params.keys())
        arrays = list(params.values())
    else:
        arrays = list(params)
    if names is not None:
        names = [str(v) for v in names]
        if len(names) != len(arrays):
            raise ValueError(f"names needs one name per parameter ({len(arrays)}), got {len(names)}")
        dup = sorted({v for v in names if names.count(v) > 1})
        if dup:
            raise ValueError(f"parameter names must be unique, got {dup} more than once")
    return arrays, names


def _in_order(values, names, what):
    """The values of a dict keyed by parameter name, in the parameters' order."""
    if names is None:
        raise ValueError(f"{what} is given by name, but the parameters have no names (pass them as a dict)")
    keys = [str(k) for k in values]
    missing = [v for v in names if v not in keys]
    extra = [k for k in keys if k not in names]
    if missing or extra:
        problems = ([f"missing {missing}"] if missing else []) + ([f"unknown {extra}"] if extra else [])
        raise ValueError(f"{what} must name every parameter of {names}: " + "; ".join(problems))
    by_name = {str(k): v for k, v in values.items()}
    return [by_name[v] for v in names]


def _per_param(value, n, name, names=None):
    if isinstance(value, Mapping):
        values = _in_order(value, names, name)
        return [_check_number(v, f"{name}[{k!r}]", low=0) for k, v in zip(names, values)]
    if np.ndim(value) == 0:
        return [_check_number(value, name, low=0)] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{name} needs one value per parameter ({n}), got {len(values)}")
    return [_check_number(v, f"{name}[{i}]", low=0) for i, v in enumerate(values)]


class _Optimizer:
    kind = "optimiser"

    def __init__(self, params, lr, weight_decay, names=None):
        self.params, self.names = named_params(params, names)
        if not self.params:
            raise ValueError("params is empty")
        self.base_lr = _per_param(lr, len(self.params), "lr", self.names)
        self.lr = list(self.base_lr)
        self.weight_decay = _per_param(weight_decay, len(self.params), "weight_decay", self.names)
        self.t = 0

    def param_dict(self):
        """The parameters as a dict ``{name: array}``; unnamed ones by position (``"0"``, ``"1"``, ...).
        Its keys are those of the optimiser's buffers in a checkpoint."""
        keys = self.names if self.names is not None else [str(i) for i in range(len(self.params))]
        return dict(zip(keys, self.params))

    def _check(self, grads):
        grads = _in_order(grads, self.names, "grads") if isinstance(grads, Mapping) else list(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"got {len(grads)} gradients for {len(self.params)} parameters")
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if g.shape != p.shape:
                raise ValueError(f"the gradient of {self._label(i)} has shape {tuple(g.shape)}")
        return grads

    def _label(self, i):
        name = f" ({self.names[i]})" if self.names is not None else ""
        return f"parameter {i}{name} of shape {tuple(self.params[i].shape)}"

    def _commit(self, grads, new_params, new_buffers):
        """Write the new parameters and buffers if all are finite (one host sync); else raise, writing nothing."""
        xp = get_xp(self.params[0])
        arrays = list(new_params) + [b for bufs in new_buffers.values() for b in bufs]
        flags = xp.stack([xp.isfinite(a).all() for a in arrays])
        if not bool(flags.all()):
            self._raise_non_finite(xp, grads, new_params, new_buffers)
        for p, q in zip(self.params, new_params):
            p[...] = q
        for key, bufs in new_buffers.items():
            for dst, src in zip(self._buffers()[key], bufs):
                dst[...] = src
        self.t += 1

    def _raise_non_finite(self, xp, grads, new_params, new_buffers):
        for i, g in enumerate(grads):
            if not bool(xp.isfinite(g).all()):
                raise FloatingPointError(
                    f"the gradient of {self._label(i)} contains NaN or Inf at step {self.t + 1}: the model "
                    f"diverged earlier (lower the learning rate) or its input is bad; parameters left unchanged")
        bad = next((i for i, q in enumerate(new_params) if not bool(xp.isfinite(q).all())), None)
        if bad is None:  # a buffer overflowed (e.g. Adam's second moment of a huge gradient)
            key, bad = next((k, i) for k, bufs in new_buffers.items() for i, b in enumerate(bufs)
                            if not bool(xp.isfinite(b).all()))
            what = f"the {key} buffer of {self._label(bad)}"
        else:
            what = self._label(bad)
        raise FloatingPointError(
            f"{what} became non-finite after the {self.kind} step {self.t + 1} with lr={self.lr[bad]:g}"
            f"{self._extra_text(bad)}: lower the learning rate; parameters left unchanged")

    def _extra_text(self, i):
        wd = self.weight_decay[i]
        return f", weight_decay={wd:g}" if wd else ""

    def set_lr_scale(self, scale):
        """Set every learning rate to ``scale`` times its base value (for schedules)."""
        scale = _check_number(scale, "scale", low=0)
        self.lr = [scale * b for b in self.base_lr]

    def state_dict(self):
        """``t``, the learning rates, the buffers (host copies, lists in the parameters' order) and the names."""
        return {"t": self.t, "lr": list(self.lr), "names": None if self.names is None else list(self.names),
                "buffers": {k: [to_numpy(b) for b in v] for k, v in self._buffers().items()}}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s output (checked first: nothing is changed on an error).

        When both the state and this optimiser have names, the state is matched by name (its
        order may differ); otherwise by position.
        """
        state = self._by_name(state)
        lr = _per_param(state["lr"], len(self.params), "lr")
        own = self._buffers()
        for k, arrays in state["buffers"].items():
            if k not in own:
                raise ValueError(f"state has buffers {k!r}, this {self.kind} optimiser has {sorted(own)}")
            for i, (dst, src) in enumerate(zip(own[k], arrays)):
                if tuple(np.shape(src)) != tuple(dst.shape):
                    raise ValueError(f"{k} buffer of {self._label(i)} has shape {tuple(np.shape(src))} in the state")
                _check_finite(np, to_numpy(src), f"{k} buffer {i}")
        self.t = _check_int(state["t"], "t", minimum=0)
        self.lr = lr
        for k, arrays in state["buffers"].items():
            for dst, src in zip(own[k], arrays):
                dst[...] = get_xp(dst).asarray(src)

    def _by_name(self, state):
        """``state`` with its per-parameter lists in this optimiser's order (when both are named)."""
        saved = state.get("names")
        if saved is None or self.names is None:
            return state
        saved = [str(v) for v in saved]
        if sorted(saved) != sorted(self.names):
            raise ValueError(f"the state holds the parameters {saved}, this {self.kind} optimiser {self.names}")
        order = [saved.index(v) for v in self.names]
        lr = state["lr"] if np.ndim(state["lr"]) == 0 else [list(state["lr"])[j] for j in order]
        return {**state, "names": list(self.names), "lr": lr,
                "buffers": {k: [list(v)[j] for j in order] for k, v in state["buffers"].items()}}


class SGD(_Optimizer):
    """``v <- momentum v + (g + wd p)``; ``p <- p - lr v`` (PyTorch's convention).

    ``params``: a list of arrays or a dict ``{name: array}``; ``names`` (optional, one per
    parameter of a list) names them as a dict's keys would.
    """

    kind = "SGD"

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, names=None):
        super().__init__(params, lr, weight_decay, names)
        self.momentum = _check_number(momentum, "momentum", 0, 1, high_open=True)
        self.velocity = [get_xp(p).zeros_like(p) for p in self.params]

    def _buffers(self):
        return {"velocity": self.velocity}

    def _extra_text(self, i):
        return super()._extra_text(i) + (f", momentum={self.momentum:g}" if self.momentum else "")

    def step(self, grads):
        grads = self._check(grads)
        new_p, new_v = [], []
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow raises FloatingPointError in _commit
            for p, g, v, lr, wd in zip(self.params, grads, self.velocity, self.lr, self.weight_decay):
                if wd:
                    g = g + wd * p
                if self.momentum:
                    g = (self.momentum * v + g).astype(v.dtype, copy=False)
                    new_v.append(g)
                new_p.append(p - (lr * g).astype(p.dtype, copy=False))
        self._commit(grads, new_p, {"velocity": new_v} if self.momentum else {})


class Adam(_Optimizer):
    """Adam (Kingma & Ba) with bias correction; weight decay added to the gradient.

    ``betas`` each in [0, 1), ``eps`` > 0; ``params`` and ``names`` as for :class:`SGD`.
    """

    kind = "Adam"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, names=None):
        super().__init__(params, lr, weight_decay, names)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}") from None
        self.betas = (_check_number(b1, "betas[0]", 0, 1, high_open=True),
                      _check_number(b2, "betas[1]", 0, 1, high_open=True))
        self.eps = _check_number(eps, "eps", low=0, low_open=True)
        self.m = [get_xp(p).zeros_like(p) for p in self.params]
        self.v = [get_xp(p).zeros_like(p) for p in self.params]

    def _buffers(self):
        return {"m": self.m, "v": self.v}

    def step(self, grads):
        grads = self._check(grads)
        t = self.t + 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**t, 1 - b2**t
        new_p, new_m, new_v = [], [], []
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow raises FloatingPointError in _commit
            for p, g, m, v, lr, wd in zip(self.params, grads, self.m, self.v, self.lr, self.weight_decay):
                xp = get_xp(p)
                if wd:
                    g = g + wd * p
                m = (b1 * m + (1 - b1) * g).astype(m.dtype, copy=False)
                v = (b2 * v + (1 - b2) * g * g).astype(v.dtype, copy=False)
                new_m.append(m)
                new_v.append(v)
                new_p.append(p - (lr * (m / c1) / (xp.sqrt(v / c2) + self.eps)).astype(p.dtype, copy=False))
        self._commit(grads, new_p, {"m": new_m, "v": new_v})


def cosine_lr(epoch, total_epochs, eta_min_ratio=0.0):
    """Cosine decay factor ``eta_min + (1 - eta_min)(1 + cos(pi epoch/total))/2`` in [eta_min_ratio, 1]."""
    return eta_min_ratio + (1 - eta_min_ratio) * 0.5 * (1 + math.cos(math.pi * epoch / max(total_epochs, 1)))
