"""The LCA iteration (Rozell et al. 2008), discretised with step ``1/tau``, on the relaxation runner.

    b = Phi s                                     input drive
    a_t = T_lambda(u_t)                           transfer
    u_{t+1} = u_t + (1/tau) (b - u_t - (Phi Phi^T - I) a_t)

The lateral term is the re-encoded reconstruction,
``(Phi Phi^T - I) a = Phi (Phi^T a) - a``, so one step is
``c = Phi (s - Phi^T a)`` (two convolutions: the operator's fused ``forward_residual``)
and ``u <- u + (1/tau) (c + a - u)`` (with ``b - Phi Phi^T a = Phi (s - Phi^T a)``).
This is the exact gradient of the cropped objective at the borders for any
padding, unlike a precomputed lateral tensor (``lateral=``, an opt-in).

The loop is :func:`sparsecoding.solvers.relax.relax` on the operator's
``iteration_view`` (codes in the engine's native layout; results come back in the
public one). The drive ``c`` of the state after step ``t`` is computed at the end of
step ``t``, so the check of that state needs no extra convolution.

``tol``: with a soft-threshold transfer (declared by ``soft=(threshold, nonneg)``; the
layers always do) the problem is the LASSO and ``tol`` bounds the relative duality gap
(:func:`sparsecoding.solvers.lasso.duality_gap`, computed from the residual the
iteration has anyway): the run stops at the first check where
``sum gap <= tol * sum E(a)``, i.e. the energy is certified within ``tol`` of the
optimum (a gap within the rounding error of its computation counts as zero). For other transfers (hard thresholds, callables: no convex problem) ``tol``
bounds the relative change of the potentials over one step, ``max|u_t - u_{t-1}| / max|u_t|``.
Either way the value is read every ``check_every`` steps (one host read); an energy
more than 1e6 times its start, or non-finite, stops the run with a
``FloatingPointError`` naming the likely cause. Tracked metrics are kept as device
scalars. The arguments are checked once, at entry (see :func:`run_lca`).

Which step's values: every variable of a result describes one instant. The final
``states``, ``acts``, ``recons`` and ``recon_errors`` are ``u_T``, ``a_T = T(u_T)``,
``Phi^T a_T`` and ``s - Phi^T a_T`` after the last step ``T`` that ran; the per-step
recordings (``record``) and tracked metrics of step ``t = 1..T`` are those of ``u_t`` and
``a_t = T(u_t)``, so the last recording equals the final values. (lca-pytorch records the
states after step ``t`` beside the acts ``T(u_{t-1})`` that step used, and their metrics:
its slice ``t`` of ``acts`` / ``recons`` / ``recon_errors`` / metrics is ours of step ``t - 1``.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import get_xp
from ..ops.fused import lca_step
from ..solvers.lasso import (SolveResult, WeightedOperator, _GapMonitor, check_integer, check_lambda, check_mask,
                             check_number, check_real_array, duality_gap)
from ..solvers.relax import relative_change, relax

__all__ = ["run_lca", "check_tau", "LCAResult"]

RETURN_VARS = ("inputs", "input_drives", "states", "acts", "recons", "recon_errors")
METRICS = ("L1", "L2", "TotalEnergy", "FractionActive")


@dataclass
class LCAResult(SolveResult):
    """The result of an LCA encode: a :class:`~sparsecoding.solvers.lasso.SolveResult` (``state``: the
    potentials ``u``; ``codes``: the activations ``a``; ``energy``, ``n_iter``, ``converged``,
    ``history`` of the monitored value, ``energy_history``) with lca-pytorch's variables.

    Item access by the lca-pytorch names (``result["acts"]``, ``result["recon_errors"]``, ...) and
    ``"n_iter"``, ``"converged"``, ``"metrics"``, ``"all"`` (per-step lists of the recorded
    variables), ``"energy_history"`` works as on the earlier dict.
    """

    inputs: object = None
    input_drives: object = None
    recons: object = None
    recon_errors: object = None
    metrics: dict | None = None
    all_ts: dict | None = None
    conns: object = None

    @property
    def states(self):
        return self.state

    @property
    def acts(self):
        return self.codes

    _KEYS = RETURN_VARS + ("conns", "n_iter", "converged", "metrics", "all", "energy_history", "history", "energy",
                           "codes")

    def __getitem__(self, key):
        if key not in self._KEYS:
            raise KeyError(key)
        return self.all_ts if key == "all" else getattr(self, key)

    def __contains__(self, key):
        return key in self._KEYS

    def keys(self):
        return self._KEYS

    def get(self, key, default=None):
        return self[key] if key in self._KEYS else default


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


class _State:
    """Potentials ``u``, activations ``a = T(u)``, drive term ``c = Phi (s - Phi^T a)`` and residual
    ``r = s - Phi^T a`` (None where not computed), all of one instant (the recordings and metrics
    of a step are those of the state it produced)."""

    __slots__ = ("u", "a", "c", "r")

    def __init__(self, u, a, c, r):
        self.u, self.a, self.c, self.r = u, a, c, r


def run_lca(op, s, lambda_, tau, transfer, n_iter, initial_states=None, drive_scaling=None, tol=None,
            check_every=10, track_metrics=False, record=(), record_all=False, lateral=None, soft=None, mask=None):
    """Run the LCA dynamics.

    Parameters
    ----------
    op : linear operator (``forward`` = analysis ``Phi s``, ``adjoint`` = synthesis ``Phi^T a``)
    s : inputs (N, *op.in_shape)
    lambda_ : the threshold of the energy (the transfer has it built in)
    tau : time constant; step ``1/tau``
    transfer : callable ``u -> a``
    n_iter : maximum number of iterations
    initial_states : optional warm start ``u_0`` (N, *op.out_shape)
    drive_scaling : optional additive term ``d`` to the drive ``b`` (code shape): the fixed point
        minimises ``E(a) - <d, a>``
    tol : None, or the stopping bound (see the module notes: relative duality gap for soft thresholds,
        relative change of the potentials otherwise), checked every ``check_every`` steps
    track_metrics : keep L1, L2, total energy and fraction active per step
    record : names from ``RETURN_VARS`` to keep at every step (``record_all``)
    lateral : optional callable ``a -> (Phi Phi^T - I) a`` (precomputed Gram form)
    soft : optional ``(threshold, nonneg)`` declaring that ``transfer`` is that soft
        threshold: the duality-gap ``tol`` and the fused in-place update
    mask : optional data weight ``W >= 0`` (or 0/1 mask) broadcastable to ``s``: the dynamics of
        ``1/2 ||W . (s - Phi^T a)||^2 + lambda ||a||_1``, drive ``b = Phi (W^2 . s)`` and
        ``u <- u + (1/tau) (Phi (W^2 . (s - Phi^T a)) + a - u)`` (the LCA on the operator
        :class:`~sparsecoding.solvers.lasso.WeightedOperator` and the data ``W . s``; ``tol`` is the
        weighted duality gap, the stable step bound uses ``max(W^2) L``). ``energy`` and the
        metrics' L2 are weighted; ``inputs``, ``recons`` and ``recon_errors`` are unweighted
        (``s``, ``Phi^T a``, ``s - Phi^T a``); masked entries of ``s`` do not influence the codes.
        Not with ``lateral``.

    Returns
    -------
    :class:`LCAResult` (``["states"]``, ``["acts"]``, ``["recons"]``, ``["recon_errors"]``,
    ``["input_drives"]``, ``["n_iter"]``, ``["converged"]``, ``["metrics"]`` (dict of host arrays
    or None), ``["all"]`` (name -> list of per-step arrays, with ``record_all``)).
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
    lam = check_lambda(lambda_)
    check_number("tau", tau, 0.0, strict=True)
    n_iter = check_integer("n_iter", n_iter, 1)
    check_every = check_integer("check_every", check_every, 1)
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
    if mask is not None:
        return _run_masked(op, s, mask, lam, tau, transfer, n_iter, initial_states, drive_scaling, tol, check_every,
                           track_metrics, record, record_all, lateral, soft)
    xp = get_xp(s)
    if s.shape[0] == 0:
        return _empty_result(xp, op, s, track_metrics, record if record_all else None)
    # iterate with the codes in the engine's native layout (the Gram form keeps the public one)
    view = op if lateral is not None else op.iteration_view()
    if initial_states is not None:
        initial_states = view.to_inner(initial_states)
    if drive_scaling is not None:
        drive_scaling = view.to_inner(drive_scaling)
    with view.frozen():
        out = _relax_lca(view, s, lam, 1.0 / float(tau), transfer, n_iter, initial_states, drive_scaling, tol,
                         check_every, track_metrics, record if record_all else None, lateral, soft)
    if view is not op:
        out.state, out.codes, out.input_drives = (view.to_outer(out.state), view.to_outer(out.codes),
                                                  view.to_outer(out.input_drives))
        if out.all_ts is not None:
            for k in ("states", "acts", "input_drives"):
                if k in out.all_ts:
                    out.all_ts[k] = [view.to_outer(t) for t in out.all_ts[k]]
    return out


def _run_masked(op, s, mask, lam, tau, transfer, n_iter, initial_states, drive_scaling, tol, check_every,
                track_metrics, record, record_all, lateral, soft):
    """:func:`run_lca` with ``mask``: the unweighted LCA on ``A = Phi D_W`` and ``W . s``, then the
    unweighted ``inputs`` / ``recons`` / ``recon_errors`` (one synthesis; per recorded step with
    ``record_all``)."""
    if lateral is not None:
        raise ValueError("mask= needs the re-encoded reconstruction: the precomputed lateral term (lateral=) "
                         "has no room for the data weights")
    w = check_mask(mask, s.shape, s.dtype, get_xp(s))
    rec = tuple(record) if record_all else ()
    want_recons = bool({"recons", "recon_errors"} & set(rec))
    need_acts = want_recons and "acts" not in rec
    out = run_lca(WeightedOperator(op, w), w * s, lam, tau, transfer, n_iter, initial_states=initial_states,
                  drive_scaling=drive_scaling, tol=tol, check_every=check_every, track_metrics=track_metrics,
                  record=rec + (("acts",) if need_acts else ()), record_all=record_all, soft=soft)
    recon = op.adjoint(out.codes)
    out.inputs, out.recons, out.recon_errors = s, recon, s - recon
    if out.all_ts is not None:
        steps = out.all_ts
        recons = [op.adjoint(a) for a in steps["acts"]] if want_recons else []
        fixed = {"inputs": lambda: [s] * len(steps["inputs"]), "recons": lambda: recons,
                 "recon_errors": lambda: [s - x for x in recons]}
        out.all_ts = {k: fixed[k]() if k in fixed else steps[k] for k in rec}
    return out


def _relax_lca(op, s, lam, eta, transfer, n_iter, u0, d, tol, check_every, track_metrics, record, lateral, soft):
    xp = get_xp(s)
    b = op.forward(s)
    u = xp.zeros_like(b) if u0 is None else xp.array(u0, dtype=b.dtype, copy=True)
    a = transfer(u)
    tracking = track_metrics or record is not None
    nonneg = bool(soft[1]) if soft is not None else False
    plan = op.residual_plan(s) if lateral is None else None
    if lateral is None:
        if u0 is None and soft is not None:
            c, r = b, s  # a_0 = T(0) = 0: the drive is b itself and the residual s
        else:
            c, r = op.forward_residual(plan, a)
        bd = None
    else:
        c, r = None, s - op.adjoint(a)
        bd = b if d is None else b + d
    primal0, _ = duality_gap(a, b if c is None else c, r, lam, nonneg, d)
    mon = _GapMonitor(xp, primal0, lam, nonneg, d, scale=xp.max(xp.abs(b)))
    count = [0]

    def want_r():
        return tracking or count[0] % check_every == 0 or count[0] == n_iter

    def fused_step(st):
        # soft threshold, re-encoded reconstruction: in-place u/a update, fused drive of the new a
        count[0] += 1
        st.u, st.a = lca_step(st.u, st.c if d is None else st.c + d, st.a, eta, soft[0], nonneg)
        st.c, st.r = op.forward_residual(plan, st.a, residual=want_r())
        return st

    def step(st):
        count[0] += 1
        if lateral is None:
            u_new = st.u + eta * ((st.c if d is None else st.c + d) + st.a - st.u)
        else:
            u_new = st.u + eta * (bd - st.u - lateral(st.a))
        a_new = transfer(u_new)
        if lateral is None:
            c_new, r_new = op.forward_residual(plan, a_new, residual=want_r())
        else:
            c_new, r_new = None, (s - op.adjoint(a_new)) if want_r() else None
        return _State(u_new, a_new, c_new, r_new)

    def monitor(st, previous):
        r = st.r if st.r is not None else s - op.adjoint(st.a)
        if soft is None:  # no convex problem: the relative change of the potentials over the step
            return mon.guard(mon.energy(st.a, r), relative_change(st.u, previous.u))
        c = st.c if st.c is not None else b - lateral(st.a) - st.a  # Gram form: Phi r = b - Phi Phi^T a
        return mon.value(st.a, c, r)  # the relative duality gap (NaN once the energy exploded)

    def explain(t, value):
        return _divergence_message(xp, mon.last_energy(), t, s, b)

    tracks = {k: [] for k in METRICS} if track_metrics else None
    all_ts = {k: [] for k in record} if record is not None else None
    callbacks = [lambda t, st: _track(xp, tracks, all_ts, lam, s, b, st.u, st.a, s - st.r, st.r)] \
        if tracking else []
    fused = lateral is None and soft is not None and not tracking
    state = _State(u, a, c, r)
    res = relax(fused_step if fused else step, state, n_iter, tol=tol, check_every=check_every, monitor=monitor,
                callbacks=callbacks, what="LCA", explain=explain)
    st = res.state
    r = st.r if st.r is not None else s - op.adjoint(st.a)
    n = s.shape[0]
    energy = 0.5 * xp.sum((r * r).reshape(n, -1), axis=1) + lam * xp.sum(xp.abs(st.a).reshape(n, -1), axis=1)
    metrics = None
    if track_metrics:
        metrics = {k: np.asarray([float(v) for v in xp.stack(vals).tolist()]) if vals else np.zeros(0)
                   for k, vals in tracks.items()}
    return LCAResult(st.u, res.n_iter, res.converged, res.history, codes=st.a, energy=energy,
                     energy_history=mon.energy_history(), inputs=s, input_drives=b, recons=s - r, recon_errors=r,
                     metrics=metrics, all_ts=all_ts)


def _empty_result(xp, op, s, track_metrics, record):
    code = xp.zeros((0, *op.out_shape), dtype=s.dtype)
    metrics = {k: np.zeros(0) for k in METRICS} if track_metrics else None
    all_ts = None if record is None else {k: [] for k in record}
    return LCAResult(code.copy(), 0, True, [], codes=code, energy=xp.zeros(0, dtype=s.dtype), inputs=s,
                     input_drives=code.copy(), recons=xp.zeros_like(s), recon_errors=xp.zeros_like(s),
                     metrics=metrics, all_ts=all_ts)


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
