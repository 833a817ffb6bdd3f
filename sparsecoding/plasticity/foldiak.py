"""Földiák's anti-Hebbian sparse coding network (Földiák 1990), DESIGN.md §8.

Units receive feed-forward input ``Q x``, lateral inhibition ``W y`` (``W <= 0``,
zero diagonal) and have adaptive thresholds ``t``. For each input the network
settles to the equilibrium of::

    dy*/dt = f(Q x + W y* - t) - y*,     f(u) = 1 / (1 + exp(-lam u))

integrated from ``y* = 0`` by Euler steps on the library's relaxation runner
(:func:`sparsecoding.solvers.relax.relax`)::

    y_t = y_{t-1} + dt (f(Q x + W y_{t-1} - t) - y_{t-1})

stopping once the relative change over one step
``max|y_t - y_{t-1}| / max|y_t| <= tol`` (read every ``check_every`` steps, no
host synchronisation in between) or after ``max_settle`` steps. The binarised
output is ``y = (y* > 1/2)``. After settling, three local rules::

    dW = -alpha (y y^T - p^2)       (anti-Hebbian; then W <= 0, diag(W) = 0)
    dQ =  beta  y (x - Q)           (Hebbian, row-wise: q_i moves toward x when unit i fires)
    dt =  gamma (y - p)             (each unit's firing rate is driven to p)

Settling and updates are batched: a mini-batch of inputs settles at once,
and the rules apply the sum of the per-presentation deltas (batch size 1 is
Földiák's online procedure).

Bad input (DESIGN.md §10): ``X`` with NaN or Inf or the wrong number of inputs,
and hyperparameters out of range (``p`` in (0, 1); ``alpha``, ``beta``, ``gamma``
finite >= 0; ``lam`` finite > 0; ``dt`` in (0, 1]; ``tol`` finite >= 0 or None;
``max_settle``, ``check_every`` and ``batch_size`` integers >= 1) raise a ValueError
naming the argument. An update that would make ``Q``, ``W`` or ``t`` non-finite (a
learning rate far too large) raises ``FloatingPointError`` before anything is
written: the network keeps its last finite state. Settling that produces NaN
(weights so large that the drive overflows) raises ``FloatingPointError`` too, saying
that settling diverged. Empty batches: ``settle`` returns a (0, n_units) state,
``transform`` a (0, n_units) array, and ``partial_fit`` changes nothing.
"""
from __future__ import annotations

import numpy as np

from ..backend import namespace
from ..ops.elementwise import sigmoid
from ..optim import _check_finite, _check_int, _check_number
from ..solvers.relax import RelaxResult, relax

__all__ = ["FoldiakNetwork"]


class FoldiakNetwork:
    """Földiák's network of ``n_units`` detectors on ``n_inputs`` inputs.

    Parameters
    ----------
    n_inputs, n_units : int
    p : target firing probability of each unit (and of pairwise co-firing, p^2)
    alpha, beta, gamma : learning rates of W (lateral), Q (feed-forward), t (thresholds)
    lam : steepness of the sigmoid
    dt : Euler step of the settling dynamics
    tol : stop settling once the relative change of the state over one step,
        ``max|y_t - y_{t-1}| / max|y_t|``, is ``<= tol`` (the relaxation runner's rule);
        None: always run ``max_settle`` steps (still checking for divergence). Since
        ``y_t - y_{t-1} = dt (f(.) - y_{t-1})``, the residual of the fixed-point equation
        at the stop is ``max|f(Qx + Wy - t) - y| <= tol max|y| / dt <= tol / dt``
        (``0 <= y <= 1``). The default 2e-5 with ``dt=0.2`` bounds it by 1e-4: at least as
        tight as the earlier absolute rule ``max|f(.) - y| < 1e-4``, and tighter when the
        most active unit of the batch is far from saturation. With another ``dt``, scale
        ``tol`` with it to keep the same accuracy.
    max_settle : the most Euler steps per settling
    check_every : steps between convergence / divergence checks (each reads one scalar
        on the host); an integer >= 1
    one_shot : if True, skip settling and use one feed-forward pass with the lateral
        term applied to the feed-forward response (the seed notebook's failure mode)
    seed : random initialisation of Q (unit-norm rows) and the presentation order
    backend : "numpy" or "cupy"

    Attributes
    ----------
    Q : (n_units, n_inputs), W : (n_units, n_units), t : (n_units,)
    """

    def __init__(self, n_inputs, n_units, p=1 / 8, alpha=0.1, beta=0.02, gamma=0.02, lam=10.0, dt=0.2, tol=2e-5,
                 max_settle=500, check_every=10, one_shot=False, seed=None, backend=None, dtype="float64"):
        n_inputs, n_units = _check_int(n_inputs, "n_inputs", minimum=1), _check_int(n_units, "n_units", minimum=1)
        p = _check_number(p, "p", 0, 1, low_open=True, high_open=True)
        alpha, beta, gamma = (_check_number(v, name, low=0) for name, v in (("alpha", alpha), ("beta", beta),
                                                                              ("gamma", gamma)))
        lam = _check_number(lam, "lam", low=0, low_open=True)
        dt = _check_number(dt, "dt", 0, 1, low_open=True)
        tol = None if tol is None else _check_number(tol, "tol", low=0)
        max_settle = _check_int(max_settle, "max_settle", minimum=1)
        check_every = _check_int(check_every, "check_every", minimum=1)
        self.n_inputs, self.n_units = n_inputs, n_units
        self.p, self.alpha, self.beta, self.gamma, self.lam = p, alpha, beta, gamma, lam
        self.dt, self.tol, self.max_settle, self.one_shot = dt, tol, max_settle, bool(one_shot)
        self.check_every = check_every
        self.rng = np.random.default_rng(seed)
        xp = namespace(backend)
        self.xp = xp
        Q = self.rng.random((self.n_units, self.n_inputs))
        Q /= np.linalg.norm(Q, axis=1, keepdims=True)
        self.Q = xp.asarray(Q, dtype=dtype)
        self.W = xp.zeros((self.n_units, self.n_units), dtype=dtype)
        self.t = xp.zeros(self.n_units, dtype=dtype)
        self.n_presented = 0

    # -------------------------------------------------------------- dynamics
    def _check(self, X):
        xp = self.xp
        if np.iscomplexobj(X):
            raise TypeError("X must be real, got a complex array")
        X = xp.asarray(X, dtype=self.Q.dtype)
        if X.ndim == 1:
            X = X[None]
        if X.ndim != 2 or X.shape[1] != self.n_inputs:
            raise ValueError(f"X must have shape (n_samples, {self.n_inputs}), got {tuple(X.shape)}")
        _check_finite(xp, X, "X")
        return X

    @staticmethod
    def _diverged(where):
        """The message of the FloatingPointError raised when settling produces NaN."""
        return (
            f"settling diverged: the state is NaN {where} (the weights Q, W or thresholds t grew so large that "
            "the drive overflows: a diverging run; lower the learning rates alpha, beta, gamma)")

    def settle(self, X):
        """Settle ``dy/dt = f(Qx + Wy - t) - y`` from ``y = 0`` for every row of ``X``.

        Returns the :class:`~sparsecoding.solvers.relax.RelaxResult` of the relaxation
        runner: ``state`` is ``y*`` (n_samples, n_units), ``n_iter`` the Euler steps run,
        ``converged`` whether the relative change reached ``tol``, ``history`` the
        relative change at each check. The checks run every ``check_every`` steps (one
        host read each) and nothing is read on the host between them. ``one_shot``: the
        one feed-forward pass, as a result with ``n_iter=1, converged=True``. An empty
        ``X`` gives a (0, n_units) state. A NaN state raises FloatingPointError.
        """
        X = self._check(X)
        xp = self.xp
        drive = X @ self.Q.T - self.t  # (B, M)
        if X.shape[0] == 0:
            return RelaxResult(drive, 0, True, [])
        lam, dt, WT = self.lam, self.dt, self.W.T
        if self.one_shot:
            y0 = sigmoid(lam * drive)
            y = sigmoid(lam * (drive + y0 @ WT))
            if not bool(xp.isfinite(y).all()):
                raise FloatingPointError(self._diverged("in the one-shot response"))
            return RelaxResult(y, 1, True, [])

        def step(y):
            return y + dt * (sigmoid(lam * (drive + y @ WT)) - y)

        result = relax(step, xp.zeros_like(drive), self.max_settle, tol=self.tol, check_every=self.check_every,
                       what="Földiák settling",
                       explain=lambda t, value: self._diverged(f"after {t} steps"))
        if result.n_iter % self.check_every:  # the last steps were not checked: one more read
            if not bool(xp.isfinite(result.state).all()):
                raise FloatingPointError(self._diverged(f"after {result.n_iter} steps"))
        return result

    def transform(self, X):
        """Binary outputs ``y = (y* > 1/2)`` as floats (n_samples, n_units)."""
        return (self.settle(X).state > 0.5).astype(self.Q.dtype)

    # -------------------------------------------------------------- learning
    def partial_fit(self, X, batch_size=1, thresholds_only=False):
        """One pass of the three rules over ``X`` in mini-batches (in the given order).

        The new ``t``, ``W`` and ``Q`` of each batch are computed first and written only if
        all are finite (one host sync per batch); otherwise FloatingPointError names the
        parameter and its learning rate and the network keeps its state from before the batch.
        An empty ``X`` changes nothing.
        """
        X = self._check(X)
        batch_size = _check_int(batch_size, "batch_size", minimum=1)
        xp = self.xp
        p2 = self.p * self.p
        diag = xp.arange(self.n_units)
        for start in range(0, X.shape[0], batch_size):
            xb = X[start:start + batch_size]
            y = self.transform(xb)
            b = xb.shape[0]
            with np.errstate(over="ignore", invalid="ignore"):  # an overflow raises FloatingPointError below
                # dt = gamma (y - p), summed over the batch
                new = {"t": self.t + self.gamma * (y.sum(axis=0) - b * self.p)}
                if not thresholds_only:
                    # dW = -alpha (y y^T - p^2); keep W <= 0 and a zero diagonal
                    W = xp.minimum(self.W - self.alpha * (y.T @ y - b * p2), 0)
                    W[diag, diag] = 0
                    new["W"] = W
                    # dQ_i = beta y_i (x - Q_i): sum_b y_bi x_b - (sum_b y_bi) Q_i
                    new["Q"] = self.Q + self.beta * (y.T @ xb - y.sum(axis=0)[:, None] * self.Q)
            flags = xp.stack([xp.isfinite(v).all() for v in new.values()])
            if not bool(flags.all()):
                self._update_overflow(new, xp)
            for name, v in new.items():
                getattr(self, name)[...] = v  # in place: callers holding Q, W, t see the update
            self.n_presented += b
        return self

    def _update_overflow(self, new, xp):
        rates = {"t": ("thresholds", "gamma", self.gamma), "W": ("lateral weights", "alpha", self.alpha),
                 "Q": ("feed-forward weights", "beta", self.beta)}
        name = next(k for k, v in new.items() if not bool(xp.isfinite(v).all()))
        what, rate, value = rates[name]
        raise FloatingPointError(
            f"{name} ({what}) became non-finite in the update after {self.n_presented} presentations with "
            f"{rate}={value:g}: lower {rate}; the network is left as it was before this batch")

    def fit(self, X, y=None, *, epochs=1, batch_size=1, seed=None, callbacks=(), checkpoint=None,
            checkpoint_every=None, allow_changes=False, settings=None, warmup=0, shuffle=True, progress=False,
            max_steps=None, record_steps=False):
        """Train for ``epochs`` passes over ``X`` (n_samples, n_inputs) in mini-batches of ``batch_size``.

        Runs on the learning loop (:func:`sparsecoding.training.fit_loop`): epoch ``e``
        presents the samples in the order ``default_rng([seed, e]).permutation(n)``
        (in the given order with ``shuffle=False``). Before the first batch,
        ``warmup`` presentations drawn at random (with replacement) from ``X`` adapt
        the thresholds only; they are drawn from epoch 0's generator, so every
        random choice comes from the loop's generators and a run is a pure
        function of the initial weights, ``X``, the settings and ``seed``.
        ``seed=None`` draws one from the model's own generator (the constructor's
        ``seed``); pass ``seed`` explicitly to resume a model built with ``seed=None``.

        ``checkpoint``: a .npz path, written atomically every ``checkpoint_every``
        batches, after every epoch and on Ctrl-C (then :class:`~sparsecoding.training.TrainingInterrupted`
        is raised); an existing one is resumed, and a resumed run ends bit-identical to an
        uninterrupted one. Its settings (the hyperparameters, ``batch_size``, ``seed``,
        ``warmup``, ``shuffle`` and the extra ``settings``) must match unless
        ``allow_changes``; ``epochs`` may grow. ``callbacks``: ``f(record)`` after each epoch.

        Returns the :class:`~sparsecoding.training.History`; each epoch record holds
        ``activity``, the mean binary activity over the presented inputs (while ``gamma > 0``),
        and ``presentations``, the running count of presentations (warmup included).
        """
        from ..training import fit_loop  # noqa: PLC0415

        X = self._check(X)
        xp = self.xp
        n = X.shape[0]
        if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or warmup < 0:
            raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        warmup, batch_size = int(warmup), int(batch_size)
        if seed is None:
            seed = int(self.rng.integers(2**63))
        own = {"model": "FoldiakNetwork", "n_inputs": self.n_inputs, "n_units": self.n_units, "p": self.p,
               "alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "lam": self.lam, "dt": self.dt,
               "tol": self.tol, "max_settle": self.max_settle, "check_every": self.check_every,
               "one_shot": self.one_shot, "dtype": str(self.Q.dtype),
               "batch_size": batch_size, "seed": seed, "warmup": warmup, "shuffle": bool(shuffle)}

        def step(idx, rng, info):
            if info["step"] == 0 and warmup:  # thresholds only, before the first batch of the run
                widx = rng.integers(0, n, warmup)
                self.partial_fit(X[xp.asarray(widx)], batch_size=batch_size, thresholds_only=True)
            if not shuffle:
                start = info["batch"] * batch_size
                idx = np.arange(start, start + len(idx))
            t0 = self.t.copy()
            self.partial_fit(X[xp.asarray(idx)], batch_size=batch_size)
            if self.gamma > 0:  # dt = gamma (y - p) summed over the batch gives the batch's mean activity
                return {"activity": (self.t - t0).sum() / (self.gamma * len(idx) * self.n_units) + self.p}
            return {}

        def epoch_end(epoch, record):
            return {"presentations": self.n_presented}

        history = fit_loop(self, n, step, epochs=epochs, batch_size=batch_size, seed=seed, checkpoint=checkpoint,
                           checkpoint_every=checkpoint_every, settings={**own, **(settings or {})},
                           allow_changes=allow_changes, kind="FoldiakNetwork", on_epoch_end=epoch_end,
                           callbacks=callbacks, progress=progress, desc="Foldiak", max_steps=max_steps,
                           record_steps=record_steps)
        self.history_ = history
        return history

    def get_state(self):
        """``(arrays, meta)`` for checkpoints: ``Q``, ``W``, ``t`` (host copies), the presentation count
        and the state of the model's own generator (it draws ``fit``'s default seed)."""
        from ..backend import to_numpy  # noqa: PLC0415

        arrays = {name: np.array(to_numpy(getattr(self, name))) for name in ("Q", "W", "t")}
        return arrays, {"n_presented": int(self.n_presented), "rng": self.rng.bit_generator.state}

    def set_state(self, arrays, meta):
        """Restore what :meth:`get_state` returned (shapes checked; arrays copied into the model's)."""
        for name in ("Q", "W", "t"):
            if name not in arrays:
                raise ValueError(f"the state has no {name!r} array")
            own = getattr(self, name)
            if tuple(np.shape(arrays[name])) != tuple(own.shape):
                raise ValueError(f"{name} has shape {tuple(np.shape(arrays[name]))} in the state, "
                                 f"this network's is {tuple(own.shape)}")
        for name in ("Q", "W", "t"):
            getattr(self, name)[...] = self.xp.asarray(arrays[name], dtype=getattr(self, name).dtype)
        self.n_presented = int(meta.get("n_presented", 0))
        if meta.get("rng") is not None:
            self.rng.bit_generator.state = meta["rng"]

    # ------------------------------------------------------------- analysis
    def feature_assignment(self, templates):
        """For each unit, the index of the template (e.g. bar) its weights correlate with best.

        Returns (best (n_units,), correlation matrix (n_units, n_templates)) on the host.
        """
        from ..backend import to_numpy  # noqa: PLC0415

        Q = to_numpy(self.Q)
        T = np.asarray(templates, dtype=np.float64)
        Qc = Q - Q.mean(axis=1, keepdims=True)
        Tc = T - T.mean(axis=1, keepdims=True)
        C = (Qc / (np.linalg.norm(Qc, axis=1, keepdims=True) + 1e-12)) @ \
            (Tc / (np.linalg.norm(Tc, axis=1, keepdims=True) + 1e-12)).T
        return C.argmax(axis=1), C

    def response_assignment(self, templates):
        """For each unit, the template that makes it fire most often when shown alone (binary response)."""
        from ..backend import to_numpy  # noqa: PLC0415

        y = to_numpy(self.transform(np.asarray(templates)))
        return y.argmax(axis=0), y
