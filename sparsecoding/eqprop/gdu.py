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

Settings of the check (``--todo gducheck``, :data:`GDU_DEFAULTS`), measured on the
command line's default network (DIGITS 8x8, conv 16-32 with max pools, fc 10,
``my_hard_sig``, seed 0, the first 64 training samples, T2 = 12), worst synapse:

* float64 (a copy of the float32 network): EP divides a difference of ``dPhi/dtheta`` by
  beta, and float32 rounding swamps it for small beta (float32, beta 1e-4: relative RMSE
  2.3, sign agreement 0.52; the float32 free phase also stalls at state changes of 6e-8);
* free phase until the largest state change of a step is below ``tol = 1e-6 * beta``
  (25 steps here, at most ``T1 = 1000``). EP divides the residual drift by beta: stopped
  at a change of 5e-9 (20 steps) the relative RMSE is 0.015, at 1e-6 (15 steps) 0.96;
* beta = 1e-4: relative RMSE 9.6e-5, sign agreement 1.000 (PASSED; 0.2 s for the check,
  1.3 s with first-call compilation, 4 s for the whole command on 2 CPU cores).
  beta = 1e-3: relative RMSE 0.030 but sign agreement 0.821 on the fc synapse (units
  crossing the hard-sigmoid and max-pool kinks); the training defaults (beta 0.5, T1 40, float32): relative RMSE
  2.0-2.8, sign agreement 0.56-0.74 although the free phase has converged.

Beta 1e-4 with the same tolerance rule also passes (relative RMSE <= 3e-4, sign agreement
1.0) for an MLP, a softmax readout with ``cel``, sigmoid, tanh with average pools and
``scale=2`` (107 free steps).
"""
from __future__ import annotations

import copy
import json
import os
from collections import deque

import numpy as np

from ..backend import to_numpy
from ..ops.elementwise import one_hot, softmax

__all__ = ["hessian_vector", "bptt_gradients", "ep_step_gradients", "gdu_check", "free_phase", "float64_copy",
           "gducheck_command", "GDU_DEFAULTS", "TOL_PER_BETA", "RMSE_MAX", "SIGN_MIN"]

#: The check's own settings (``--todo gducheck`` uses them for options left at their training
#: defaults): free phase until the states move less than ``tol`` (at most ``T1`` steps), ``T2``
#: nudged / BPTT steps, a small ``beta``.
GDU_DEFAULTS = {"T1": 1000, "T2": 12, "beta": 1e-4, "tol": None}
#: ``tol=None``: ``TOL_PER_BETA * |beta|`` (1e-10 at the default beta); EP divides the residual
#: drift of an unconverged free phase by beta, so the tolerance scales with it.
TOL_PER_BETA = 1e-6
#: Pass thresholds, for every synapse.
RMSE_MAX = 0.1
SIGN_MIN = 0.9


# The public functions take and return channels-first states (the network's public layout); the
# check itself runs in the network's internal layout through the underscored twins.
def hessian_vector(net, x, states, w, memo=None, y=None, beta=0.0):
    """``H w``: Hessian of ``Phi`` (loss term included) in the states, at fixed pool indices.

    ``memo``: the max-pool indices to hold fixed (None: those at ``states``).
    """
    x = net._check_x(x)
    states, w = net._internal(states), net._internal(w)
    if memo is None:
        memo = _memo(net, x, states)
    return net._public(_hessian_vector(net, x, states, w, memo, y, beta))


def _hessian_vector(net, x, states, w, memo, y=None, beta=0.0):
    zero_x = net.xp.zeros_like(x)
    terms, _ = net._forward_terms(zero_x, w, memo_fixed=memo, bias=False)
    hw = net._state_grads(x, w, _terms=(terms, memo))
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

    ``trajectory``: the states (channels-first) of consecutive synchronous steps, the last one
    final. Returns a list (t = 1..K) of per-parameter gradients (same structure as ``params``).
    """
    x = net._check_x(x)
    return _bptt_gradients(net, x, y, [net._internal(s) for s in trajectory], K)


def _bptt_gradients(net, x, y, trajectory, K):
    xp = net.xp
    n = x.shape[0]
    s_final = trajectory[-1]
    lam = [xp.zeros_like(s) for s in s_final]
    lam[-1] = net._loss_grad_output(s_final, y) / n  # d mean-loss / d s_T
    direct = [(xp.zeros_like(W), xp.zeros_like(b)) for W, b in net.params]
    if net.softmax:  # the loss depends on the readout directly
        t = one_hot(y, net.n_classes, net.dtype, xp=xp)
        g = (softmax(net._readout(s_final[-1])) - t) / n
        direct[-1] = (g.T @ net._flat(s_final[-1]), g.sum(axis=0))
    acc = [(a.copy(), b.copy()) for a, b in direct]
    out = []
    for step in range(1, K + 1):
        s = trajectory[-1 - step]
        memo = _memo(net, x, s)
        g = net._state_grads(x, s)
        w = [net.dsigma(gk) * lk for gk, lk in zip(g, lam)]
        # (dF/dtheta)^T lam = d/deps dPhi/dtheta(s + eps w) (exact central difference; batch means -> * n)
        plus = net._param_grads(x, [a + b for a, b in zip(s, w)], None, 0.0, memo=memo)
        minus = net._param_grads(x, [a - b for a, b in zip(s, w)], None, 0.0, memo=memo)
        for k in range(len(acc)):
            acc[k] = (acc[k][0] + 0.5 * n * (plus[k][0] - minus[k][0]),
                      acc[k][1] + 0.5 * n * (plus[k][1] - minus[k][1]))
        out.append([(a.copy(), b.copy()) for a, b in acc])
        lam = _hessian_vector(net, x, s, w, memo)
    return out


def ep_step_gradients(net, x, y, s_star, K, beta):
    """EP estimates after each of the first ``K`` nudged steps from the free fixed point ``s_star``
    (channels-first states)."""
    x = net._check_x(x)
    net._check_y(y, x.shape[0])
    return _ep_step_gradients(net, x, y, net._internal(s_star), K, beta)


def _ep_step_gradients(net, x, y, s_star, K, beta):
    g0 = net._param_grads(x, s_star, y, 0.0)
    s = s_star
    out = []
    for _ in range(K):
        s = net._step(x, s, y, beta)
        gb = net._param_grads(x, s, y, beta)
        out.append([(-(a[0] - b[0]) / beta, -(a[1] - b[1]) / beta) for a, b in zip(gb, g0)])
    return out


def float64_copy(net):
    """The network with float64 parameters (a shallow copy; ``net`` itself is untouched).

    The check divides differences of ``dPhi/dtheta`` by ``beta``: in float32 the rounding of
    ``dPhi/dtheta`` (about 6e-8 relative) swamps that difference once beta is small
    (``beta = 1e-3`` gives a relative RMSE of 0.25 on the first synapse of the default network).
    """
    if np.dtype(net.dtype) == np.float64:
        return net
    xp = net.xp
    new = copy.copy(net)
    new.dtype = np.dtype("float64")
    new.params = [(xp.asarray(W, dtype=np.float64), xp.asarray(b, dtype=np.float64)) for W, b in net.params]
    new._ops, new._prepared, new._input_term = {}, None, None
    new.__dict__.pop("_last_free", None)
    return new


def free_phase(net, x, T1, tol, keep):
    """Free relaxation from zero states for at most ``T1`` steps (the synchronous step the BPTT inverts).

    Stops once at least ``keep - 1`` steps are done and the last step moved no state by
    ``tol`` or more. Returns ``(trajectory, steps, last_change)``: the last ``keep`` states
    (the initial one included, channels-first), the number of steps and ``max |s_t - s_{t-1}|``
    of the last step.
    """
    traj, t, change = _free_phase(net, net._check_x(x), T1, tol, keep)
    return [net._public(s) for s in traj], t, change


def _free_phase(net, x, T1, tol, keep):
    # an absolute change, not the runner's relative one: the check's tolerance scales with beta
    # (TOL_PER_BETA), and the whole trajectory tail is kept for the BPTT
    xp = net.xp
    traj = deque([net._init_states(x.shape[0])], maxlen=keep)
    change, t = float("inf"), 0
    for t in range(1, T1 + 1):
        traj.append(net._step(x, traj[-1], None, 0.0))
        change = max(float(xp.abs(a - b).max()) for a, b in zip(traj[-1], traj[-2]))
        if t >= keep - 1 and change < tol:
            break
    return list(traj), t, change


def gdu_check(net, x, y, T1=GDU_DEFAULTS["T1"], T2=GDU_DEFAULTS["T2"], beta=GDU_DEFAULTS["beta"], out_dir=None,
              tol=GDU_DEFAULTS["tol"], float64=True, rmse_max=RMSE_MAX, sign_min=SIGN_MIN):
    """Compare EP and BPTT step by step; returns a summary with a verdict (and writes JSON and a picture).

    The free phase runs from zero states until the last step moves no state by ``tol`` or more
    (default ``1e-6 * |beta|``; at most ``T1`` steps, at least ``T2``); EP nudges from its end
    at ``beta`` for ``T2`` steps and BPTT runs back through its last ``T2`` steps (``T2`` is cut
    to the free steps done).
    With ``float64`` (default) the check runs on a float64 copy of ``net``.

    Summary per synapse: relative RMSE ``||EP(T2) - BPTT(T2)|| / ||BPTT(T2)||`` and the
    fraction of weights whose EP and BPTT updates have the same sign, over all t.
    ``passed``: every synapse has relative RMSE ``<= rmse_max`` and sign agreement
    ``>= sign_min``; ``message`` is the verdict line, naming the thresholds, the free
    phase's convergence (``free_phase``: steps, last state change, converged) and, on
    failure, the likely cause. ``settings`` lists what was used.
    """
    if T1 < 1 or T2 < 1:
        raise ValueError(f"the GDU check needs T1 >= 1 and T2 >= 1, got T1={T1}, T2={T2}")
    if beta == 0:
        raise ValueError("the GDU check needs a non-zero beta (EP divides by it)")
    if tol is None:
        tol = TOL_PER_BETA * abs(beta)
    if float64:
        net = float64_copy(net)
    x = net._check_x(x)
    y = np.asarray(y)
    traj, steps, change = _free_phase(net, x, T1, tol, T2 + 1)
    notes = []
    if steps < T2:
        notes.append(f"T2 cut from {T2} to the {steps} free steps done")
        T2 = steps
    converged = bool(change < tol)
    net._check_y(y, x.shape[0])
    ep = _ep_step_gradients(net, x, y, traj[-1], T2, beta)
    bp = _bptt_gradients(net, x, y, traj, T2)
    summary = {"beta": beta, "T1": T1, "T2": T2, "tol": tol, "steps": steps}
    summary["free_phase"] = {"steps": steps, "last_state_change": change, "converged": converged}
    summary["settings"] = {"T1_max": T1, "T2": T2, "beta": beta, "tol": tol, "batch": int(x.shape[0]),
                           "dtype": np.dtype(net.dtype).name, "schedule": "sync", "rmse_max": rmse_max,
                           "sign_min": sign_min}
    summary["synapses"] = []
    for k in range(len(net.params)):
        e = np.stack([to_numpy(ep[t][k][0]).ravel() for t in range(T2)])
        b = np.stack([to_numpy(bp[t][k][0]).ravel() for t in range(T2)])
        rel = float(np.linalg.norm(e[-1] - b[-1]) / (np.linalg.norm(b[-1]) + 1e-30))
        mask = np.abs(b) > 1e-12 * (np.abs(b).max() + 1e-30)
        sign = float(np.mean(np.sign(e[mask]) == np.sign(b[mask]))) if mask.any() else 1.0
        summary["synapses"].append({"synapse": k, "relative_rmse": rel, "sign_agreement": sign})
    worst_rmse = max(s["relative_rmse"] for s in summary["synapses"])
    worst_sign = min(s["sign_agreement"] for s in summary["synapses"])
    if not np.isfinite(worst_rmse):  # NaN compares False below: report it as a failure
        worst_rmse = float("inf")
    passed = bool(worst_rmse <= rmse_max and worst_sign >= sign_min)
    summary.update({"relative_rmse": worst_rmse, "sign_agreement": worst_sign, "passed": passed,
                    "verdict": "PASSED" if passed else "FAILED", "notes": notes})
    conv = (f"free phase converged in {steps} steps, last state change {change:.1e} < tol {tol:.0e}" if converged
            else f"free phase not converged: last state change {change:.1e} >= tol {tol:.0e} after {steps} steps")
    rmse_cmp, sign_cmp = ("<=" if worst_rmse <= rmse_max else ">"), (">=" if worst_sign >= sign_min else "<")
    figures = (f"worst synapse: relative RMSE {worst_rmse:.2g} {rmse_cmp} {rmse_max:g}, sign agreement "
               f"{worst_sign:.3f} {sign_cmp} {sign_min:g}")
    if passed:
        msg = f"GDU check PASSED: EP matches BPTT ({figures}) over {T2} steps at beta {beta:g}; {conv}"
    else:
        if not converged:
            reason = f"{conv}; increase T1 (--T1)"
        else:
            reason = f"{conv}; EP approaches BPTT as beta -> 0: try a smaller beta (--betas 0 {beta / 10:g})"
        msg = f"GDU check FAILED: EP does not match BPTT ({figures}) over {T2} steps at beta {beta:g}; {reason}"
    summary["reason"] = None if passed else reason
    summary["message"] = msg
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        _write_json(summary, out_dir)
        _plot(ep, bp, T2, os.path.join(out_dir, "gdu.png"))
    return summary


def _write_json(summary, out_dir):
    def finite(v):  # strict JSON: NaN / Inf figures (a diverged check) are written as null
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: finite(a) for k, a in v.items()}
        if isinstance(v, list):
            return [finite(a) for a in v]
        return v

    with open(os.path.join(out_dir, "gdu.json"), "w") as f:
        json.dump(finite(summary), f, indent=2)


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


def gducheck_command(args, net, X, y, out_dir):
    """``--todo gducheck``: run :func:`gdu_check` on the first ``--mbs`` samples, print the verdict.

    ``--T1`` (the most free steps), ``--T2``, ``--betas`` (the second one is the check's beta)
    and ``--tol`` count as given when they differ from the command line's training defaults;
    otherwise the check uses :data:`GDU_DEFAULTS`. Returns the exit status: 0 passed, 1 failed.
    """
    import argparse  # noqa: PLC0415

    from .cli import add_arguments  # noqa: PLC0415

    train_defaults = vars(add_arguments(argparse.ArgumentParser()).parse_args([]))

    own = []  # options left at their training defaults: the check's own values

    def pick(name, value, gdu_default):
        if value == train_defaults.get(name):
            own.append(name)
            return gdu_default
        return value

    T1 = pick("T1", args.T1, GDU_DEFAULTS["T1"])
    T2 = pick("T2", args.T2, GDU_DEFAULTS["T2"])
    beta = pick("betas", list(args.betas), [0.0, GDU_DEFAULTS["beta"]])[1]
    tol = pick("tol", args.tol, GDU_DEFAULTS["tol"])
    summary = gdu_check(net, X[: args.mbs], y[: args.mbs], T1, T2, beta, out_dir, tol=tol)
    summary["settings"]["gducheck_defaults_for"] = [f"--{name}" for name in own]
    if getattr(args, "schedule", "sync") != "sync":
        summary["notes"].append("the check relaxes with the synchronous step (--schedule ignored)")
    if args.betas[0] != 0:
        summary["notes"].append(f"EP nudges from the free fixed point (beta1 = {args.betas[0]:g} ignored)")
    if out_dir:
        _write_json(summary, out_dir)
    for s in summary["synapses"]:
        print(f"synapse {s['synapse']}: relative RMSE {s['relative_rmse']:.3g}, sign agreement "
              f"{s['sign_agreement']:.4f}")
    st = summary["settings"]
    print(f"settings: free phase at most {st['T1_max']} steps to tol {st['tol']:g}, T2 {st['T2']}, "
          f"beta {st['beta']:g}, batch {st['batch']}, {st['dtype']}" + "".join(f"; {n}" for n in summary["notes"]))
    if out_dir:
        print(f"summary: {os.path.join(out_dir, 'gdu.json')}")
    print(summary["message"])
    return 0 if summary["passed"] else 1
