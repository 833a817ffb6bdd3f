"""Optimisers on plain arrays: SGD (momentum, weight decay) and Adam, plus a cosine schedule.

Parameters are updated in place, so a model's arrays stay the same objects.
``lr`` and ``weight_decay`` are a scalar or one value per parameter
(layer-wise rates as in the EqProp reference code).
"""
from __future__ import annotations

import math

import numpy as np

from .backend import get_xp, to_numpy

__all__ = ["SGD", "Adam", "cosine_lr"]


def _per_param(value, n, name):
    if np.isscalar(value):
        return [float(value)] * n
    value = [float(v) for v in value]
    if len(value) != n:
        raise ValueError(f"{name} needs one value per parameter ({n}), got {len(value)}")
    return value


class _Optimizer:
    def __init__(self, params, lr, weight_decay):
        self.params = list(params)
        if not self.params:
            raise ValueError("params is empty")
        self.base_lr = _per_param(lr, len(self.params), "lr")
        self.lr = list(self.base_lr)
        self.weight_decay = _per_param(weight_decay, len(self.params), "weight_decay")
        if any(v < 0 for v in self.lr + self.weight_decay):
            raise ValueError("lr and weight_decay must be >= 0")
        self.t = 0

    def _check(self, grads):
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"got {len(grads)} gradients for {len(self.params)} parameters")
        for p, g in zip(self.params, grads):
            if g.shape != p.shape:
                raise ValueError(f"gradient shape {tuple(g.shape)} does not match parameter shape {tuple(p.shape)}")
        return grads

    def set_lr_scale(self, scale):
        """Set every learning rate to ``scale`` times its base value (for schedules)."""
        self.lr = [scale * b for b in self.base_lr]

    def state_dict(self):
        return {"t": self.t, "lr": list(self.lr), "buffers": {k: [to_numpy(b) for b in v]
                                                              for k, v in self._buffers().items()}}

    def load_state_dict(self, state):
        self.t = int(state["t"])
        self.lr = [float(v) for v in state["lr"]]
        for k, arrays in state["buffers"].items():
            own = self._buffers()[k]
            for dst, src in zip(own, arrays):
                dst[...] = get_xp(dst).asarray(src)


class SGD(_Optimizer):
    """``v <- momentum v + (g + wd p)``; ``p <- p - lr v`` (PyTorch's convention)."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.velocity = [get_xp(p).zeros_like(p) for p in self.params]

    def _buffers(self):
        return {"velocity": self.velocity}

    def step(self, grads):
        grads = self._check(grads)
        self.t += 1
        for p, g, v, lr, wd in zip(self.params, grads, self.velocity, self.lr, self.weight_decay):
            if wd:
                g = g + wd * p
            if self.momentum:
                v *= self.momentum
                v += g
                g = v
            p -= (lr * g).astype(p.dtype, copy=False)


class Adam(_Optimizer):
    """Adam (Kingma & Ba) with bias correction; weight decay added to the gradient."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.m = [get_xp(p).zeros_like(p) for p in self.params]
        self.v = [get_xp(p).zeros_like(p) for p in self.params]

    def _buffers(self):
        return {"m": self.m, "v": self.v}

    def step(self, grads):
        grads = self._check(grads)
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, g, m, v, lr, wd in zip(self.params, grads, self.m, self.v, self.lr, self.weight_decay):
            xp = get_xp(p)
            if wd:
                g = g + wd * p
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= (lr * (m / c1) / (xp.sqrt(v / c2) + self.eps)).astype(p.dtype, copy=False)


def cosine_lr(epoch, total_epochs, eta_min_ratio=0.0):
    """Cosine decay factor ``eta_min + (1 - eta_min)(1 + cos(pi epoch/total))/2`` in [eta_min_ratio, 1]."""
    return eta_min_ratio + (1 - eta_min_ratio) * 0.5 * (1 + math.cos(math.pi * epoch / max(total_epochs, 1)))
