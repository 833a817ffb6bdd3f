"""GDU check: EP's per-step updates against hand-written BPTT (Ernoult et al. 2019).

The free dynamics are ``s_{t+1} = F(s_t) = sigma(g(s_t))`` with ``g = dPhi/ds``.
Backpropagation through time of the loss at the end of the free phase needs

* ``J^T v = H (sigma'(g) * v)``: the step Jacobian transposed, where ``H`` is the
  (symmetric) Hessian of ``Phi`` in the states. With the pool indices fixed,
  ``dPhi/ds`` is affine in the states, so ``H w`` is the linear part of
  ``dPhi/ds`` evaluated at ``w`` (the same conv / conv_transpose / unpool
  operators, no bias, no input);
* ``(dF/dtheta)^T v = d/deps dPhi/dtheta(s + eps w)`` with ``w = sigma'(g) * v``,
  exact as a central difference because ``dPhi/dtheta`` is bilinear in the states.

GDU property: ``EP(t) = -(dPhi/dtheta(s^beta_t) - dPhi/dtheta(s*)) / beta`` over the
first ``t`` nudged steps matches ``BPTT(t)``, the gradient of the loss through the
last ``t`` free steps (for small beta and a converged free phase).
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..backend import to_numpy
from ..readout import softmax
from .network import _onehot

__all__ = ["hessian_vector", "bptt_gradients", "ep_step_gradients", "gdu_check"]


def hessian_vector(net, x, states, w, memo, y=None, beta=0.0):
    """``H w``: Hessian of ``Phi`` (loss term included) in the states, at fixed pool indices."""
    x = net._check_x(x)
    zero_x = net.xp.zeros_like(x)
    terms, _ = net._forward_terms(zero_x, w, memo_fixed=memo, bias=False)
    hw = net.state_grads(x, w, _terms=(terms, memo))
    if beta != 0.0:
        hw[-1] = hw[-1] - beta * _loss_hessian_vector(net, states, w[-1], y)
    return hw


def _loss_hessian_vector(net, states, v, y):
    if net.softmax:
        W = net.params[-1][0]
        p = softmax(net._readout(states[-1]))
        u = net._flat(v) @ W.T
        hu = p * u - p * (p * u).sum(axis=1, keepdims=True)
        return net._unflat(hu @ W, v)
    if net.loss == "mse":
        return v
    p = softmax(states[-1])
    return p * v - p * (p * v).sum(axis=1, keepdims=True)


def _memo(net, x, states):
    return net._forward_terms(x, states)[1]


def bptt_gradients(net, x, y, trajectory, K):
    """Cumulative BPTT gradients of the mean loss at ``trajectory[-1]`` through the last ``K`` steps.

    Returns a list (t = 1..K) of per-parameter gradients (same structure as ``params``).
    """
    xp = net.xp
    x = net._check_x(x)
    n = x.shape[0]
    s_final = trajectory[-1]
    lam = [xp.zeros_like(s) for s in s_final]
    lam[-1] = net._loss_grad_output(s_final, y) / n  # d mean-loss / d s_T
    direct = [(xp.zeros_like(W), xp.zeros_like(b)) for W, b in net.params]
    if net.softmax:  # the loss depends on the readout directly
        t = _onehot(xp, y, net.n_classes, net.dtype)
        g = (softmax(net._readout(s_final[-1])) - t) / n
        direct[-1] = (g.T @ net._flat(s_final[-1]), g.sum(axis=0))
    acc = [(a.copy(), b.copy()) for a, b in direct]
    out = []
    for step in range(1, K + 1):
        s = trajectory[-1 - step]
        memo = _memo(net, x, s)
        g = net.state_grads(x, s)
        w = [net.dsigma(gk) * lk for gk, lk in zip(g, lam)]
        # (dF/dtheta)^T lam = d/deps dPhi/dtheta(s + eps w) (exact central difference; batch means -> * n)
        plus = net.param_grads(x, [a + b for a, b in zip(s, w)], memo=memo)
        minus = net.param_grads(x, [a - b for a, b in zip(s, w)], memo=memo)
        for k in range(len(acc)):
            acc[k] = (acc[k][0] + 0.5 * n * (plus[k][0] - minus[k][0]), acc[k][1] + 0.5 * n * (plus[k][1] - minus[k][1]))
        out.append([(a.copy(), b.copy()) for a, b in acc])
        lam = hessian_vector(net, x, s, w, memo)
    return out


def ep_step_gradients(net, x, y, s_star, K, beta):
    """EP estimates after each of the first ``K`` nudged steps from the free fixed point ``s_star``."""
    x = net._check_x(x)
    g0 = net.param_grads(x, s_star, y, 0.0)
    s = s_star
    out = []
    for _ in range(K):
        s = net.step(x, s, y, beta)
        gb = net.param_grads(x, s, y, beta)
        out.append([(-(a[0] - b[0]) / beta, -(a[1] - b[1]) / beta) for a, b in zip(gb, g0)])
    return out


def gdu_check(net, x, y, T1, T2, beta, out_dir=None):
    """Compare EP and BPTT step by step; returns a summary (and writes JSON and a picture).

    Summary per synapse: relative RMSE ``||EP(T2) - BPTT(T2)|| / ||BPTT(T2)||`` and the
    fraction of weights whose EP and BPTT updates have the same sign, over all t.
    """
    x = net._check_x(x)
    y = np.asarray(y)
    traj = [net.init_states(x.shape[0])]
    for _ in range(T1):
        traj.append(net.step(x, traj[-1]))
    ep = ep_step_gradients(net, x, y, traj[-1], T2, beta)
    bp = bptt_gradients(net, x, y, traj, T2)
    summary = {"beta": beta, "T1": T1, "T2": T2, "synapses": []}
    for k in range(len(net.params)):
        e = np.stack([to_numpy(ep[t][k][0]).ravel() for t in range(T2)])
        b = np.stack([to_numpy(bp[t][k][0]).ravel() for t in range(T2)])
        rel = float(np.linalg.norm(e[-1] - b[-1]) / (np.linalg.norm(b[-1]) + 1e-30))
        mask = np.abs(b) > 1e-12 * (np.abs(b).max() + 1e-30)
        sign = float(np.mean(np.sign(e[mask]) == np.sign(b[mask]))) if mask.any() else 1.0
        summary["synapses"].append({"synapse": k, "relative_rmse": rel, "sign_agreement": sign})
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "gdu.json"), "w") as f:
            json.dump(summary, f, indent=2)
        _plot(ep, bp, T2, os.path.join(out_dir, "gdu.png"))
    return summary


def _plot(ep, bp, T2, path):
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return
    n_syn = len(ep[0])
    fig, axes = plt.subplots(1, n_syn, figsize=(3.2 * n_syn, 3), squeeze=False)
    rng = np.random.default_rng(0)
    for k in range(n_syn):
        e = np.stack([to_numpy(ep[t][k][0]).ravel() for t in range(T2)])
        b = np.stack([to_numpy(bp[t][k][0]).ravel() for t in range(T2)])
        for j in rng.choice(e.shape[1], size=min(4, e.shape[1]), replace=False):
            line, = axes[0, k].plot(range(1, T2 + 1), e[:, j], "-")
            axes[0, k].plot(range(1, T2 + 1), b[:, j], "--", color=line.get_color())
        axes[0, k].set_title(f"synapse {k}: EP (-) vs BPTT (--)", fontsize=8)
        axes[0, k].set_xlabel("t")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
