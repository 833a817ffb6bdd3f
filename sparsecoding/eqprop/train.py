"""Training and evaluation loops for EqProp networks.

Per batch: the EP gradient estimate (``ConvEBM.ep_gradients``), then one
optimiser step (SGD with momentum or Adam, layer-wise learning rates and
weight decays); cosine learning-rate decay over epochs; augmentation by
random crop with padding and horizontal flip. ``save`` writes a run folder
(arguments, atomic checkpoint every epoch, metrics CSV, error-curves picture)
and a second call with the same folder resumes exactly.
"""
from __future__ import annotations

import csv
import json
import os
import time

import numpy as np

from ..backend import to_numpy
from ..checkpoint import load_checkpoint, pack_optimizer, pack_params, save_checkpoint, unpack_optimizer, unpack_params
from ..data.augment import horizontal_flip, random_crop
from ..optim import SGD, Adam, cosine_lr

__all__ = ["make_optimizer", "evaluate", "train"]


def make_optimizer(net, optim="sgd", lrs=0.01, wds=0.0, mmt=0.0):
    """Optimiser over ``net.params`` flattened as ``[W_1, b_1, W_2, b_2, ...]``; ``lrs``/``wds`` per synapse."""
    n = len(net.params)
    lrs = [lrs] * n if np.isscalar(lrs) else list(lrs)
    wds = [wds] * n if wds is None or np.isscalar(wds) else list(wds)
    wds = [0.0 if w is None else w for w in wds]
    if len(lrs) != n or len(wds) != n:
        raise ValueError(f"lrs and wds need one value per synapse ({n}), got {len(lrs)} and {len(wds)}")
    flat = [p for pair in net.params for p in pair]
    lr2 = [v for v in lrs for _ in range(2)]
    wd2 = [v for v in wds for _ in range(2)]
    if optim == "sgd":
        return SGD(flat, lr=lr2, momentum=mmt, weight_decay=wd2)
    if optim == "adam":
        return Adam(flat, lr=lr2, weight_decay=wd2)
    raise ValueError(f"optim must be 'sgd' or 'adam', got {optim!r}")


def evaluate(net, X, y, T, mbs=256, schedule="sync", tol=None):
    """Error rate of the free-phase prediction after ``T`` steps."""
    xp = net.xp
    wrong = 0
    for i in range(0, len(X), mbs):
        pred = to_numpy(net.predict(xp.asarray(X[i:i + mbs]), T, schedule, tol))
        wrong += int((pred != np.asarray(y[i:i + mbs])).sum())
    return wrong / len(X)


def train(net, Xtr, ytr, Xte=None, yte=None, epochs=1, mbs=128, T1=30, T2=10, betas=(0.0, 0.5), third_phase=False,
          random_sign=False, optim="sgd", lrs=0.01, wds=0.0, mmt=0.9, lr_decay=False, data_aug=False, save=None,
          seed=0, schedule="sync", tol=None, progress=True, args=None):
    """Train ``net`` with EP; returns the list of per-epoch records (train/test error, seconds)."""
    from tqdm.auto import tqdm  # noqa: PLC0415

    xp = net.xp
    opt = make_optimizer(net, optim, lrs, wds, mmt)
    history, start = [], 0
    ck = os.path.join(save, "checkpoint.npz") if save else None
    if save:
        os.makedirs(save, exist_ok=True)
        if args is not None:
            with open(os.path.join(save, "args.json"), "w") as f:
                json.dump(args, f, indent=2, default=str)
        if os.path.exists(ck):
            arrays, meta = load_checkpoint(ck)
            unpack_params(net.params, arrays)
            unpack_optimizer(opt, arrays, meta["optimizer"])
            history, start = meta["history"], meta["epoch"]
    n = len(Xtr)
    for epoch in range(start, epochs):
        if lr_decay:
            opt.set_lr_scale(cosine_lr(epoch, epochs, 1e-5))
        rng = np.random.default_rng([seed, epoch])
        perm = rng.permutation(n)
        t0 = time.perf_counter()
        wrong, seen = 0, 0
        bar = tqdm(range(0, n, mbs), disable=not progress, desc=f"epoch {epoch + 1}/{epochs}")
        for i in bar:
            idx = perm[i:i + mbs]
            xb = xp.asarray(Xtr[idx])
            if data_aug and xb.ndim == 4:
                xb = horizontal_flip(random_crop(xb, rng, padding=max(1, xb.shape[-1] // 8)), rng)
            yb = np.asarray(ytr[idx])
            grads = net.ep_gradients(xb, yb, T1, T2, betas, third_phase, random_sign, rng, schedule, tol)
            free = net.last_free_states
            out = net._readout(free[-1]) if net.softmax else free[-1]
            wrong += int((to_numpy(out.argmax(axis=1)) != yb).sum())
            seen += len(idx)
            opt.step([g for pair in grads for g in pair])
            bar.set_postfix(train_err=f"{wrong / seen:.3f}")
        record = {"epoch": epoch + 1, "train_error": wrong / seen, "seconds": time.perf_counter() - t0,
                  "lr_scale": opt.lr[0] / opt.base_lr[0] if opt.base_lr[0] else 1.0}
        if Xte is not None:
            record["test_error"] = evaluate(net, Xte, yte, T1, schedule=schedule, tol=tol)
        history.append(record)
        if save:
            _save_run(save, ck, net, opt, history, epoch + 1)
    return history


def _save_run(save, ck, net, opt, history, epoch):
    arrays = pack_params(net.params, {})
    state = pack_optimizer(opt, arrays)
    save_checkpoint(ck, arrays, {"epoch": epoch, "history": history, "optimizer": state})
    with open(os.path.join(save, "metrics.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[-1]))
        w.writeheader()
        w.writerows(history)
    try:
        from ..viz import save_curves  # noqa: PLC0415

        curves = {"train error": [h["train_error"] for h in history]}
        if "test_error" in history[-1]:
            curves["test error"] = [h["test_error"] for h in history]
        save_curves(curves, os.path.join(save, "error_curves.png"), xlabel="epoch", ylabel="error")
    except ImportError:
        pass
