"""The LCA iteration (Rozell et al. 2008), discretised with step ``1/tau``.

    b = Phi s                                     input drive
    a_t = T_lambda(u_t)                           transfer
    u_{t+1} = u_t + (1/tau) (b - u_t - (Phi Phi^T - I) a_t)

The lateral term is the re-encoded reconstruction,
``(Phi Phi^T - I) a = Phi (Phi^T a) - a``, so one step is
``c = Phi (s - Phi^T a)`` (two convolutions) and
``u <- u + (1/tau) (c + a - u)`` (with ``b - Phi Phi^T a = Phi (s - Phi^T a)``).
This is the exact gradient of the cropped objective at the borders for any
padding, unlike a precomputed lateral tensor.

Nothing in the loop synchronises with the host: tracked metrics are kept as
device scalars, and the energy for ``tol`` and for divergence detection is
read every ``check_every`` steps. The arguments are checked once, at entry
(see :func:`run_lca`).
"""
from __future__ import annotations

import numpy as np

from ..backend import get_xp
from ..ops.fused import lca_step
from ..solvers.lasso import check_integer, check_lambda, check_number, check_real_array

__all__ = ["run_lca", "check_tau"]

RETURN_VARS = ("inputs", "input_drives", "states", "acts", "recons", "recon_errors")


def check_tau(tau, L):
    """Raise if the step ``1/tau`` is beyond the stability bound ``2/L``."""
    tau = check_number("tau", tau, 0.0, strict=True)
    if L > 0 and 1.0 / tau > 2.0 / L:
        raise ValueError(
            f"tau={tau} makes the LCA iteration unstable: the step 1/tau must be <= 2/L = {2.0 / L:.4g} "
            f"(L = {L:.4g} is the largest eigenvalue of Phi Phi^T); use tau >= {L / 2:.4g} "
            f"(tau >= L = {L:.4g} makes the energy non-increasing)"
        )
    return tau


def run_lca(op, s, lambda_, tau, transfer, n_iter, initial_states=None, drive_scaling=None, tol=None,
            check_every=10, track_metrics=False, record=(), record_all=False, lateral=None, soft=None):
    """Run the LCA dynamics.

    Parameters
    ----------
    op : dictionary operator with ``analysis`` / ``synthesis``
    s : inputs (operator input shape)
    lambda_ : threshold used in the metrics (the transfer has it built in)
    tau : time constant; step ``1/tau``
    transfer : callable ``u -> a``
    n_iter : maximum number of iterations
    initial_states : optional warm start ``u_0`` (code shape)
    drive_scaling : optional additive term to the drive ``b`` (code shape)
    tol : stop when, between two checks, both the relative energy change and
        the relative change of the potentials ``u`` are below it
    track_metrics : keep L1, L2, total energy and fraction active per step
    record : names from ``RETURN_VARS`` to keep at every step (``record_all``)
    lateral : optional callable ``a -> (Phi Phi^T - I) a`` (precomputed Gram form)
    soft : optional ``(threshold, nonneg)`` declaring that ``transfer`` is that soft
        threshold, which enables the fused in-place update

    Returns
    -------
    dict with ``states``, ``acts``, ``recons``, ``recon_errors``, ``input_drives``,
    ``n_iter``, ``converged``, ``metrics`` (dict of host arrays or None),
    ``all`` (dict name -> list of per-step arrays, when ``record_all``).
    An empty batch (N = 0) returns empty arrays of the code / input shapes with
    ``n_iter=0``, ``converged=True``, empty metrics and empty per-step lists.

    Raises
    ------
    TypeError for complex ``s`` / ``initial_states`` / ``drive_scaling``; ValueError for
    NaN/Inf, for inputs so large that the energy overflows the dtype, and for
    ``lambda_ < 0``, ``tau <= 0``, ``n_iter``/``check_every`` < 1, ``tol < 0``;
    FloatingPointError when the iteration diverges (the message says whether the
    inputs overflow or the step ``1/tau`` is too large).
    """
    check_lambda(lambda_)
    check_number("tau", tau, 0.0, strict=True)
    check_integer("n_iter", n_iter, 1)
    check_integer("check_every", check_every, 1)
    tol = check_number("tol", tol, 0.0, allow_none=True)
    if not callable(transfer):
        raise TypeError(f"transfer must be a callable u -> a, got {type(transfer).__name__}")
    expect = (s.shape[0], *op.in_shape)
    if tuple(s.shape) != tuple(expect):
        raise ValueError(f"s must have shape {expect} for this dictionary, got {tuple(s.shape)}")
    dtype = op.dtype
    s = check_real_array(s, "s", s.dtype if s.dtype in (np.float32, np.float64) else dtype, limit_dtype=dtype)
    code_shape = (s.shape[0], *op.out_shape)
    for name, arr in (("initial_states", initial_states), ("drive_scaling", drive_scaling)):
        if arr is not None:
            if tuple(arr.shape) != code_shape:
                raise ValueError(f"{name} must have the code shape {code_shape}, got {tuple(arr.shape)}")
            check_real_array(arr, name, limit_dtype=dtype)
    xp = get_xp(s)
    if s.shape[0] == 0:
        return _empty_result(xp, op, s, track_metrics, record if record_all else None)
    outer = op
    if lateral is None:  # iterate with the codes in the engine's native layout
        op = op.iteration_view()
        initial_states = None if initial_states is None else op.to_inner(initial_states)
        drive_scaling = None if drive_scaling is None else op.to_inner(drive_scaling)
    out = _run(op, s, lambda_, tau, transfer, n_iter, initial_states, drive_scaling, tol, check_every, track_metrics,
               record, record_all, lateral, soft)
    if op is not outer:
        for k in ("states", "acts", "input_drives"):
            out[k] = op.to_outer(out[k])
            if out["all"] is not None and k in out["all"]:
                out["all"][k] = [op.to_outer(t) for t in out["all"][k]]
    return out


def _run(op, s, lambda_, tau, transfer, n_iter, initial_states, drive_scaling, tol, check_every, track_metrics,
         record, record_all, lateral, soft):
    xp = get_xp(s)
    b = op.forward(s)
    if drive_scaling is not None:
        b = b + drive_scaling
    u = xp.zeros_like(b) if initial_states is None else xp.array(initial_states, dtype=b.dtype, copy=True)
    eta = 1.0 / tau
    tracks = {k: [] for k in ("L1", "L2", "TotalEnergy", "FractionActive")} if track_metrics else None
    all_ts = {k: [] for k in record} if record_all else None
    history = []
    converged = False
    it = 0
    u_check = u.copy()
    a = transfer(u)
    if lateral is None and soft is not None and not (track_metrics or record_all):
        return _run_fused(op, s, b, u, a, u_check, lambda_, eta, soft, n_iter, drive_scaling, tol, check_every)
    recon = op.adjoint(a)
    resid = s - recon
    for it in range(1, n_iter + 1):
        if lateral is None:
            c = op.forward(resid)
            if drive_scaling is not None:
                c = c + drive_scaling
            u = u + eta * (c + a - u)
        else:
            u = u + eta * (b - u - lateral(a))
            if not (track_metrics or record_all):
                # the Gram form needs the reconstruction only for the energy checks
                a = transfer(u)
                if it % check_every == 0 or it == n_iter:
                    recon = op.adjoint(a)
                    resid = s - recon
                    stop = _check(xp, history, u, u_check, resid, a, lambda_, tol, it, s, b)
                    u_check = u
                    if stop:
                        converged = True
                        break
                continue
        if track_metrics or record_all:
            _track(xp, tracks, all_ts, lambda_, s, b, u, a, recon, resid)
        a = transfer(u)
        recon = op.adjoint(a)
        resid = s - recon
        if it % check_every == 0 or it == n_iter:
            stop = _check(xp, history, u, u_check, resid, a, lambda_, tol, it, s, b)
            u_check = u
            if stop:
                converged = True
                break
    if lateral is not None:
        recon = op.adjoint(a)
        resid = s - recon
    metrics = None
    if track_metrics:
        metrics = {k: np.asarray([float(v) for v in xp.stack(vals).tolist()]) if vals else np.zeros(0)
                   for k, vals in tracks.items()}
    return _result(s, b, u, a, recon, resid, it, converged, metrics, all_ts, history)


def _empty_result(xp, op, s, track_metrics, record):
    code = xp.zeros((0, *op.out_shape), dtype=s.dtype)
    metrics = {k: np.zeros(0) for k in ("L1", "L2", "TotalEnergy", "FractionActive")} if track_metrics else None
    all_ts = None if record is None else {k: [] for k in record}
    return _result(s, code, code.copy(), code.copy(), xp.zeros_like(s), xp.zeros_like(s), 0, True, metrics,
                   all_ts, [])


def _result(s, b, u, a, recon, resid, it, converged, metrics, all_ts, history):
    return {"states": u, "acts": a, "recons": recon, "recon_errors": resid, "input_drives": b,
            "inputs": s, "n_iter": it, "converged": converged, "metrics": metrics, "all": all_ts,
            "energy_history": history}


def _run_fused(op, s, b, u, a, u_check, lambda_, eta, soft, n_iter, drive_scaling, tol, check_every):
    """The soft-threshold loop with fused pieces: ``c = Phi (s - Phi^T a)`` in one operator call
    (per core and cache-sized chunk on the CPU) and the in-place potential/threshold update.

    The residual for the energy check of the state after step ``t`` comes out of the drive
    computation of step ``t + 1``, so checks cost no extra convolution.
    """
    xp = get_xp(s)
    plan = op.residual_plan(s)
    history = []
    converged = False
    it = 0
    for it in range(1, n_iter + 1):
        # the state after step it-1 is a check point: its residual is a by-product of this drive
        check = it > 1 and (it - 1) % check_every == 0
        c, r = op.forward_residual(plan, a, residual=check)
        if check:
            resid = r
        if check:
            if _check(xp, history, u, u_check, resid, a, lambda_, tol, it - 1, s, b):
                converged = True
                it -= 1
                break
            u_check = u.copy()
        if drive_scaling is not None:
            c = c + drive_scaling
        u, a = lca_step(u, c, a, eta, soft[0], soft[1])  # fused, in place
    recon = op.adjoint(a)
    resid = s - recon
    if not converged and it:
        # the final state is always checked (energy history, divergence, convergence)
        converged = _check(xp, history, u, u_check, resid, a, lambda_, tol, it, s, b)
    return _result(s, b, u, a, recon, resid, it, converged, None, None, history)


def _check(xp, history, u, u_check, resid, a, lambda_, tol, it, s=None, b=None):
    """Energy bookkeeping every ``check_every`` steps: divergence error, convergence test.
    ``s`` and ``b`` (inputs and drive) only serve the error message."""
    e = float(0.5 * xp.sum(resid * resid) + lambda_ * xp.sum(xp.abs(a)))
    history.append(e)
    if not np.isfinite(e) or (len(history) > 1 and e > 1e6 * max(history[0], 1.0)):
        raise FloatingPointError(_divergence_message(xp, e, it, s, b))
    if tol is not None and len(history) > 1 and abs(history[-2] - e) <= tol * max(abs(e), 1e-30):
        # the energy can plateau while sub-threshold potentials still charge up,
        # so the potentials must have settled too: ||u_t - u_{t-k}|| <= tol ||u_t||
        du = float(xp.sqrt(xp.sum((u - u_check) ** 2)))
        return du <= tol * max(float(xp.sqrt(xp.sum(u * u))), 1e-30)
    return False


def _divergence_message(xp, e, it, s, b):
    """Name the likely cause of a non-finite or exploding energy: inputs or a drive that overflow the
    dtype by themselves, else the step 1/tau (evaluated on the error path only)."""
    if s is not None and b is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            big = not (np.isfinite(float(0.5 * xp.sum(s * s))) and np.isfinite(float(xp.max(xp.abs(b)))))
        if big:
            return (f"LCA energy overflowed {s.dtype} at iteration {it} (energy {e:.3g}): the inputs "
                    f"(max |s| = {float(xp.max(xp.abs(s))):.3g}) or their drive Phi s are too large for "
                    f"{s.dtype} arithmetic; rescale the inputs (e.g. input_unit_var=True) or use float64")
    return f"LCA diverged at iteration {it} (energy {e:.3g}); increase tau (the step 1/tau is too large)"


def _track(xp, tracks, all_ts, lambda_, s, b, u, a, recon, resid):
    """Per-step values for ``a_t = T(u_t)`` (device scalars / arrays, no host sync)."""
    if tracks is not None:
        n = s.shape[0]
        l1 = lambda_ * xp.sum(xp.abs(a)) / n
        l2 = 0.5 * xp.sum(resid * resid) / n
        tracks["L1"].append(l1)
        tracks["L2"].append(l2)
        tracks["TotalEnergy"].append(l1 + l2)
        tracks["FractionActive"].append(xp.mean((a != 0).astype(s.dtype)))
    if all_ts is not None:
        values = {"inputs": s, "input_drives": b, "states": u, "acts": a, "recons": recon, "recon_errors": resid}
        for k in all_ts:
            all_ts[k].append(values[k])
