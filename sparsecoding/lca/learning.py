"""Dictionary learning for the LCA layers, on the library's learning loop (:mod:`sparsecoding.training`).

Each step encodes a batch and takes one dictionary step: lca-pytorch's
built-in rule (``layer.update_weights``) or an optimiser from
``sparsecoding.optim`` on the closed-form gradient
``dE/dPhi = -(1/N) sum a * patch(s - Phi^T a)`` followed by renormalisation.
With ``mask=`` (data weights ``W``, or a 0/1 mask of missing entries: an array
broadcastable to the data, or a callable ``batch -> mask``) each batch is
preprocessed and encoded with its mask and the dictionary step takes the
weighted residual ``W^2 . (s - Phi^T a)``: ``-(1/N) sum a * patch(W^2 . r)`` is the
gradient of the weighted energy ``1/2 ||W . (s - Phi^T a)||^2``, so masked entries
teach the dictionary nothing.
The batch order of epoch ``e`` is ``default_rng([seed, e]).permutation``
(full batches only); checkpoints are atomic, hold the dictionary, the
optimiser and the position in the run, and resume bit-exactly; resuming with
other settings raises :class:`~sparsecoding.training.SettingsChanged`.
"""
from __future__ import annotations

import os

import numpy as np

from ..backend import to_numpy
from ..checkpoint import pack_optimizer, pack_params, unpack_optimizer
from ..solvers.relax import nonnegative_float
from ..training import fit_loop
from .masks import batch_mask, check_fit_mask

__all__ = ["fit", "fit_dictionary"]


class _Learner:
    """The layer and its optimiser as the learning loop's model (``get_state`` / ``set_state``)."""

    def __init__(self, layer, optimizer, keep_hyper):
        self.layer, self.optimizer, self.keep_hyper = layer, optimizer, keep_hyper

    def get_state(self):
        layer = self.layer
        arrays = pack_params({"weights": layer.weights}, {})
        meta = {"eta": layer.eta, "lambda_": layer.lambda_, "forward_pass": layer.forward_pass}
        if self.optimizer is not None:
            meta["optimizer"] = pack_optimizer(self.optimizer, arrays)
        return arrays, meta

    def set_state(self, arrays, meta):
        layer = self.layer
        if tuple(arrays["weights"].shape) != tuple(layer.weights.shape):
            raise ValueError(f"the checkpoint's dictionary has shape {tuple(arrays['weights'].shape)}, "
                             f"the layer's {tuple(layer.weights.shape)}")
        if (self.optimizer is None) != ("optimizer" not in meta):
            raise ValueError("the checkpoint was written " + ("without" if self.optimizer is not None else "with")
                             + " an optimiser; resume it the same way")
        layer.assign_weight_values(layer.xp.asarray(arrays["weights"]), normalize=False)
        layer.forward_pass = meta["forward_pass"]
        if not self.keep_hyper:  # unchanged settings: the stored values are the run's own
            layer.eta, layer.lambda_ = meta["eta"], meta["lambda_"]
        if self.optimizer is not None:
            unpack_optimizer(self.optimizer, arrays, meta["optimizer"])


def _scheduled_lambda(schedule, step):
    return nonnegative_float(schedule(step), f"lambda_schedule({step}) must return a number, got {{value!r}}",
                             f"lambda_schedule({step}) returned {{value}}: lambda_ must be a finite number >= 0")


def fit_dictionary(layer, X, *, epochs=1, batch_size=128, seed=0, callbacks=(), checkpoint=None,
                   checkpoint_every=None, allow_changes=False, settings=None, optimizer=None, lambda_schedule=None,
                   progress=True, callback=None, max_steps=None, record_steps=False, mask=None):
    """Learn the dictionary of ``layer`` on ``X``; returns the per-epoch :class:`~sparsecoding.training.History`.

    What :meth:`LCA.fit <sparsecoding.lca.LCA.fit>` runs (the arguments are described there); the
    history is also kept in ``layer.history_``.
    """
    xp = layer.xp
    X = to_numpy(X)
    if X.ndim < 2 or X.shape[0] < 1:
        raise ValueError(f"X must hold at least one sample, got shape {X.shape}")
    n = X.shape[0]
    batch_size = min(int(batch_size), n) if isinstance(batch_size, (int, np.integer)) and batch_size >= 1 \
        else batch_size  # fit_loop names a bad value
    own = {"batch_size": batch_size, "n_samples": n, "sample_shape": list(X.shape[1:]), "seed": seed,
           "optimizer": None if optimizer is None else type(optimizer).__name__,
           "layer": type(layer).__name__, "weights_shape": list(layer.weights.shape),
           "lambda_": None if lambda_schedule is not None else layer.lambda_, "eta": layer.eta,
           "solver": layer.solver, "lca_iters": layer.lca_iters, "tol": layer.tol, "nonneg": layer.nonneg}
    mask, mask_setting = check_fit_mask(mask, X, layer.dtype)
    if mask_setting is not None:
        own["mask"] = mask_setting
    learner = _Learner(layer, optimizer, keep_hyper=allow_changes)

    def step(idx, rng, info):
        if lambda_schedule is not None:
            layer.lambda_ = _scheduled_lambda(lambda_schedule, info["step"])
        batch = xp.asarray(X[idx])
        w = batch_mask(mask, idx, batch, xp)
        s = layer.preprocess(batch, mask=w)
        out = layer.solve(s, mask=w)
        layer.forward_pass += 1
        acts, err = out["acts"], out["recon_errors"]
        m = s.shape[0]
        if w is None:
            l2 = float(0.5 * xp.sum(err * err)) / m
        else:  # weighted energy; the step takes W^2 . r (minus the gradient of the weighted energy in Phi^T a)
            w = xp.asarray(w, dtype=err.dtype)
            l2 = float(0.5 * xp.sum((w * err) ** 2)) / m
            err = w * w * err
        l1 = layer.lambda_ * float(xp.sum(xp.abs(acts))) / m
        record = {"energy": l1 + l2, "L1": l1, "L2": l2,
                  "frac_active": float(xp.mean((acts != 0).astype(acts.dtype))), "lambda_": layer.lambda_,
                  "lca_iters_run": int(out["n_iter"])}
        if not np.isfinite(record["energy"]):
            raise FloatingPointError(f"dictionary learning diverged at step {info['step'] + 1}: "
                                     f"energy {record['energy']}")
        if optimizer is None:
            layer.update_weights(acts, err)
        else:
            optimizer.step([layer.dictionary_gradient(acts, err)])
            layer.normalize_weights()
        if callback is not None:
            callback(info["step"] + 1, {"step": info["step"] + 1, "epoch": info["epoch"] + 1, **record})
        return record

    history = fit_loop(learner, n, step, epochs=epochs, batch_size=batch_size, seed=seed, checkpoint=checkpoint,
                       checkpoint_every=checkpoint_every, settings=own | dict(settings or {}),
                       allow_changes=allow_changes, kind=f"lca.{type(layer).__name__}", callbacks=callbacks,
                       progress=progress, desc="dictionary learning", drop_last=True, max_steps=max_steps,
                       record_steps=record_steps)
    layer.history_ = history
    return history


def fit(layer, X, n_epochs=1, batch_size=128, optimizer=None, lambda_schedule=None, checkpoint=None,
        checkpoint_every=50, resume=True, seed=0, progress=True, callback=None, max_steps=None, *,
        settings=None, allow_changes=False, callbacks=(), mask=None):
    """Learn the dictionary of ``layer`` on ``X``: the functional front of ``layer.fit``.

    Same as ``layer.fit(X, epochs=n_epochs, ..., record_steps=True)`` (see
    :meth:`LCA.fit <sparsecoding.lca.LCA.fit>` for the arguments), with two differences:
    ``checkpoint_every`` defaults to 50 steps, and ``resume=False`` deletes an existing
    ``checkpoint`` first (start over).

    Returns
    -------
    list of per-step records: step (1-based), epoch (1-based), energy (mean per sample of the
    batch before the step), L1, L2, frac_active, lambda_, lca_iters_run. The per-epoch
    :class:`~sparsecoding.training.History` is kept in ``layer.history_``.
    """
    if checkpoint is not None and not resume and os.path.exists(checkpoint):
        os.remove(checkpoint)
    history = fit_dictionary(layer, X, epochs=n_epochs, batch_size=batch_size, seed=seed, callbacks=callbacks,
                             checkpoint=checkpoint, checkpoint_every=checkpoint_every, allow_changes=allow_changes,
                             settings=settings, optimizer=optimizer, lambda_schedule=lambda_schedule,
                             progress=progress, callback=callback, max_steps=max_steps, record_steps=True,
                             mask=mask)
    return history.steps
