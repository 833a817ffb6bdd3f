"""Dictionary learning loops for the LCA layers.

``fit`` alternates encoding a batch and one dictionary step, either
lca-pytorch's built-in rule (``layer.update_weights``) or an optimiser from
``sparsecoding.optim`` on the closed-form gradient
``dE/dPhi = -(1/N) sum a * patch(s - Phi^T a)`` followed by renormalisation.
Progress is shown with tqdm; checkpoints are atomic and resume exactly (the
batch order of epoch ``e`` is ``default_rng([seed, e]).permutation``).
"""
from __future__ import annotations

import numpy as np

from ..backend import to_numpy
from ..checkpoint import load_checkpoint, pack_optimizer, save_checkpoint, unpack_optimizer

__all__ = ["fit"]


def _batches(n, batch_size, seed, epoch):
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return [perm[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)] or [perm]


def fit(layer, X, n_epochs=1, batch_size=128, optimizer=None, lambda_schedule=None, checkpoint=None,
        checkpoint_every=50, resume=True, seed=0, progress=True, callback=None, max_steps=None):
    """Learn the dictionary of ``layer`` on ``X``.

    Parameters
    ----------
    layer : LCA / LCAConv{1,2,3}D
    X : host array (N, ...) of inputs (moved to the layer's backend batch by batch)
    n_epochs, batch_size : passes over ``X`` and samples per step
    optimizer : None for the built-in ``update_weights`` rule, or a ``sparsecoding.optim``
        optimiser constructed on ``[layer.weights]``
    lambda_schedule : optional callable ``step -> lambda_``
    checkpoint : optional path (.npz); written every ``checkpoint_every`` steps and at the end
    resume : continue from ``checkpoint`` if it exists
    callback : optional ``f(step, record)``
    max_steps : stop after this many steps in total

    Returns
    -------
    list of dicts per step: step, epoch, energy (mean per sample), L1, L2, frac_active, lambda_
    """
    from tqdm.auto import tqdm  # noqa: PLC0415

    xp = layer.xp
    X = np.asarray(X)
    if X.shape[0] < 1:
        raise ValueError("X is empty")
    per_epoch = len(_batches(X.shape[0], batch_size, seed, 0))
    total = n_epochs * per_epoch if max_steps is None else min(max_steps, n_epochs * per_epoch)
    history, step = [], 0
    if checkpoint is not None and resume:
        try:
            arrays, meta = load_checkpoint(checkpoint)
        except FileNotFoundError:
            pass
        else:
            layer.assign_weight_values(xp.asarray(arrays["weights"]), normalize=False)
            step, history = meta["step"], meta["history"]
            layer.eta, layer.lambda_, layer.forward_pass = meta["eta"], meta["lambda_"], meta["forward_pass"]
            if optimizer is not None and "optimizer" in meta:
                unpack_optimizer(optimizer, arrays, meta["optimizer"])

    def save():
        arrays = {"weights": to_numpy(layer.weights)}
        meta = {"step": step, "history": history, "eta": layer.eta, "lambda_": layer.lambda_,
                "forward_pass": layer.forward_pass}
        if optimizer is not None:
            meta["optimizer"] = pack_optimizer(optimizer, arrays)
        save_checkpoint(checkpoint, arrays, meta)

    bar = tqdm(total=total, initial=step, disable=not progress, desc="dictionary learning")
    while step < total:
        epoch, within = divmod(step, per_epoch)
        idx = _batches(X.shape[0], batch_size, seed, epoch)[within]
        if lambda_schedule is not None:
            layer.lambda_ = float(lambda_schedule(step))
        s = layer.preprocess(xp.asarray(X[idx]))
        out = layer.encode(s)
        layer.forward_pass += 1
        acts, err = out["acts"], out["recon_errors"]
        n = s.shape[0]
        l2 = float(0.5 * xp.sum(err * err)) / n
        l1 = layer.lambda_ * float(xp.sum(xp.abs(acts))) / n
        record = {"step": step + 1, "epoch": epoch, "energy": l1 + l2, "L1": l1, "L2": l2,
                  "frac_active": float(xp.mean((acts != 0).astype(acts.dtype))), "lambda_": layer.lambda_,
                  "lca_iters_run": int(out["n_iter"])}
        if not np.isfinite(record["energy"]):
            raise FloatingPointError(f"dictionary learning diverged at step {step + 1}: energy {record['energy']}")
        if optimizer is None:
            layer.update_weights(acts, err)
        else:
            optimizer.step([layer.dictionary_gradient(acts, err)])
            layer.normalize_weights()
        history.append(record)
        step += 1
        bar.update(1)
        bar.set_postfix(energy=f"{record['energy']:.4g}", active=f"{record['frac_active']:.3f}")
        if callback is not None:
            callback(step, record)
        if checkpoint is not None and (step % checkpoint_every == 0 or step == total):
            save()
    bar.close()
    return history
