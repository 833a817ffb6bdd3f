"""The relaxation runner: every encode / settle of the library iterates through it (DESIGN.md §2).

    for t = 1 .. n_iter:
        state <- step(state)
        callbacks(t, state)                       every step, no host synchronisation
        every check_every steps:
            q_t <- monitor(state, previous)       one device scalar, read on the host
            q_t not finite      -> FloatingPointError (the run diverged)
            tol given, q_t <= tol -> stop (converged)

One stopping rule: ``q`` is a relative distance to the fixed point that the
model supplies (:func:`relative_change` of the states between two consecutive
steps for dynamics such as EqProp's or Földiák's settling; the relative
duality gap for the LASSO solvers), and ``tol`` bounds it. Nothing is read on
the host between checks, so on a GPU the steps queue without waiting; the
check costs one scalar transfer every ``check_every`` steps.

Every run returns a :class:`RelaxResult`: final state, iterations, converged
flag, and the history of the monitored value at each check.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..backend import get_xp

__all__ = ["RelaxResult", "relax", "relative_change", "check_relax_options", "nonnegative_float"]


@dataclass
class RelaxResult:
    """Outcome of :func:`relax`.

    Attributes
    ----------
    state : the final state (what the step function carries: an array, a list of arrays, ...)
    n_iter : int, steps run
    converged : bool, whether the monitored value reached ``tol``
    history : list of (step, monitored value) pairs, host floats, one per check
    """

    state: object
    n_iter: int
    converged: bool
    history: list = field(default_factory=list)

    @property
    def last_value(self):
        """The monitored value at the last check (None if there was none)."""
        return self.history[-1][1] if self.history else None


def check_relax_options(n_iter, tol=None, check_every=10):
    """Validate the runner's options; returns them normalised. ValueError naming the bad one."""
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) and not hasattr(n_iter, "__index__"):
        raise ValueError(f"n_iter must be an integer >= 0, got {n_iter!r}")
    n_iter = int(n_iter)
    if n_iter < 0:
        raise ValueError(f"n_iter must be an integer >= 0, got {n_iter}")
    if isinstance(check_every, bool) or not hasattr(check_every, "__index__") or int(check_every) < 1:
        raise ValueError(f"check_every must be an integer >= 1, got {check_every!r}")
    if tol is not None:
        tol = nonnegative_float(tol, "tol must be a number >= 0 or None, got {value!r}",
                                "tol must be a finite number >= 0 or None, got {value!r}")
    return n_iter, tol, int(check_every)


def nonnegative_float(value, not_a_number, out_of_range):
    """``float(value)`` if that is a finite number >= 0, else a ValueError: the message
    ``not_a_number`` (no ``float`` conversion) or ``out_of_range``, each formatted with ``value``
    (the given value, then its float)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(not_a_number.format(value=value)) from None
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(out_of_range.format(value=v))
    return v


def _arrays(state):
    return list(state) if isinstance(state, (list, tuple)) else [state]


def relative_change(state, previous):
    """``max |s - s_prev| / max(max |s|, tiny)`` over all arrays of the state: a device scalar."""
    new, old = _arrays(state), _arrays(previous)
    if len(new) == 1 and new[0].size:  # one array (Földiák, the LCA potentials): 4 array operations
        a = new[0]
        xp = get_xp(a)
        return xp.max(xp.abs(a - old[0])) / xp.maximum(xp.max(xp.abs(a)), _tiny(a.dtype))
    xp = get_xp(*new)
    diff = None
    scale = None
    for a, b in zip(new, old):
        if a.size == 0:
            continue
        d, s = xp.max(xp.abs(a - b)), xp.max(xp.abs(a))
        diff = d if diff is None else xp.maximum(diff, d)
        scale = s if scale is None else xp.maximum(scale, s)
    if diff is None:
        return xp.zeros(())
    return diff / xp.maximum(scale, _tiny(scale.dtype))


_TINY = {}


def _tiny(dtype):
    """Smallest normal number of a floating dtype (cached: ``finfo`` costs microseconds per call)."""
    key = str(dtype)
    if key not in _TINY:
        _TINY[key] = float(np.finfo(dtype).tiny) if np.dtype(key).kind == "f" else float(np.finfo(np.float64).tiny)
    return _TINY[key]


def relax(step, state, n_iter, *, tol=None, check_every=10, monitor=relative_change, callbacks=(),
          what="the relaxation", explain=None):
    """Iterate ``state <- step(state)`` up to ``n_iter`` times; see the module docstring.

    Parameters
    ----------
    step : callable ``state -> new state``. It may update arrays in place when ``monitor``
        does not need the previous state (pass a monitor that ignores its second argument).
    state : the initial state
    n_iter : int >= 0, the most steps
    tol : None (run all steps) or a number >= 0: stop once the monitored value is <= tol
    check_every : int >= 1, steps between checks (each check reads one scalar on the host)
    monitor : callable ``(state, previous) -> 0-d array``; ``previous`` is the state one step
        before (kept only across the step preceding a check); None: no checks at all
    callbacks : callables ``f(t, state)`` called after every step (recording, metrics); they
        must not read values on the host if the loop is to stay free of synchronisations
    what : how the error messages name the run
    explain : optional callable ``(step, value) -> str``, the divergence message (a model names the
        likely cause: inputs that overflow the dtype, a step beyond the stability bound); called on
        the error path only

    Returns
    -------
    RelaxResult
    """
    n_iter, tol, check_every = check_relax_options(n_iter, tol, check_every)
    history, converged, t = [], False, 0
    for t in range(1, n_iter + 1):
        keep = monitor is not None and t % check_every == 0
        previous = state if keep else None
        state = step(state)
        for cb in callbacks:
            cb(t, state)
        if keep:
            value = float(monitor(state, previous))  # the one host read per check
            history.append((t, value))
            if not math.isfinite(value):
                raise FloatingPointError(
                    explain(t, value) if explain is not None else
                    f"{what} diverged at step {t}: the monitored value is {value} (non-finite states; "
                    f"look for a step size beyond the stability bound or non-finite inputs)")
            if tol is not None and value <= tol:
                converged = True
                break
    return RelaxResult(state, t, converged, history)
