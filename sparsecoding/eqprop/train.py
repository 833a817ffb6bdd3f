"""Training and evaluation of EqProp networks on the one learning loop (:func:`sparsecoding.training.fit_loop`).

Per batch: the EP gradient estimate (``ConvEBM.ep_gradients``), then one
optimiser step (SGD with momentum or Adam, layer-wise learning rates and
weight decays); cosine learning-rate decay over epochs; augmentation by
random crop with padding and horizontal flip. Everything random in an epoch
(the sample order, the augmentation, the random sign of ``beta``) comes from
that epoch's generator ``default_rng([seed, epoch])``.

A checkpoint holds the parameters, the optimiser's buffers, step count and
learning rates, the history, the position in the epoch and the generator's
state, and the settings that change the result (:func:`run_settings`):
resuming continues bit-identically, and resuming with a changed setting
raises :class:`~sparsecoding.training.SettingsChanged` naming it (unless
``allow_changes=True``). Without ``lr_decay`` the number of epochs is not a
setting: a larger ``epochs`` continues a finished run.

``train(..., save=FOLDER)`` writes a run folder: ``checkpoint.npz``,
``metrics.csv`` and ``error_curves.png`` (after every epoch, and for the
epochs done when interrupted) and ``args.json``.
"""
from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from ..backend import to_numpy
from ..checkpoint import load_checkpoint, pack_optimizer, unpack_optimizer
from ..data.augment import horizontal_flip, random_crop
from ..optim import SGD, Adam, cosine_lr
from ..training import TrainingInterrupted, fit_loop
from .network import check_phase_args

__all__ = ["make_optimizer", "evaluate", "train", "run_settings", "load_run", "write_run_outputs"]


def _check_number(value, name, low=None, low_open=False):
    """``float(value)``: a finite number (``> low`` or ``>= low``), else a ValueError naming ``name``."""
    ok = not isinstance(value, (bool, np.bool_, str, bytes))
    try:
        v = float(value) if ok else math.nan
    except (TypeError, ValueError):
        v = math.nan
    ok = math.isfinite(v) and (low is None or (v > low if low_open else v >= low))
    if not ok:
        bound = "" if low is None else f" {'>' if low_open else '>='} {low:g}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return v


def _check_int(value, name, minimum=None):
    """``int(value)`` for an integer (not a bool or a float) >= ``minimum``, else a ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or (
            minimum is not None and value < minimum):
        raise ValueError(f"{name} must be an integer{'' if minimum is None else f' >= {minimum}'}, got {value!r}")
    return int(value)


def _check_labels(y, n, n_classes, name="y", n_name="X"):
    """Host int64 class labels in ``[0, n_classes)``, one per sample."""
    yh = np.asarray(to_numpy(y))
    if yh.ndim != 1 or yh.shape[0] != n:
        raise ValueError(f"{name} must hold one class label per sample of {n_name} ({n}), got shape {yh.shape}")
    if yh.dtype == np.bool_ or not (np.issubdtype(yh.dtype, np.integer) or np.issubdtype(yh.dtype, np.floating)):
        raise ValueError(f"{name} must hold integer class labels, got dtype {yh.dtype}")
    yi = yh.astype(np.int64)
    if np.issubdtype(yh.dtype, np.floating) and not (np.isfinite(yh).all() and (yi == yh).all()):
        raise ValueError(f"{name} must hold integer class labels, got non-integral or non-finite values")
    if yi.size and (yi.min() < 0 or yi.max() >= n_classes):
        raise ValueError(f"{name} labels must be in [0, {n_classes}), got values in [{yi.min()}, {yi.max()}]")
    return yi


def make_optimizer(net, optim="sgd", lrs=0.01, wds=0.0, mmt=0.0):
    """Optimiser over ``net.params`` flattened as ``[W_1, b_1, W_2, b_2, ...]``; ``lrs``/``wds`` per synapse."""
    lrs, wds = _per_synapse(net, lrs, wds)
    flat = [p for pair in net.params for p in pair]
    lr2 = [v for v in lrs for _ in range(2)]
    wd2 = [v for v in wds for _ in range(2)]
    if optim == "sgd":
        return SGD(flat, lr=lr2, momentum=mmt, weight_decay=wd2)
    if optim == "adam":
        return Adam(flat, lr=lr2, weight_decay=wd2)
    raise ValueError(f"optim must be 'sgd' or 'adam', got {optim!r}")


def _per_synapse(net, lrs, wds):
    n = len(net.params)
    lrs = [lrs] * n if np.isscalar(lrs) else list(lrs)
    wds = [wds] * n if wds is None or np.isscalar(wds) else list(wds)
    wds = [0.0 if w is None else w for w in wds]
    if len(lrs) != n or len(wds) != n:
        raise ValueError(f"lrs and wds need one value per synapse ({n}), got {len(lrs)} and {len(wds)}")
    lrs = [_check_number(v, f"lrs[{i}]", low=0) for i, v in enumerate(lrs)]
    wds = [_check_number(v, f"wds[{i}]", low=0) for i, v in enumerate(wds)]
    return lrs, wds


def evaluate(net, X, y, T, mbs=256, schedule="sync", tol=None):
    """Error rate of the free-phase prediction after ``T`` steps (``schedule``, ``tol`` as in training),
    in batches of ``mbs``."""
    T = _check_int(T, "T", minimum=1)
    mbs = _check_int(mbs, "mbs", minimum=1)
    y = _check_labels(y, len(X), net.n_classes, "y", "X")
    if len(X) == 0:
        raise ValueError("X has no samples")
    xp = net.xp
    wrong = 0
    for i in range(0, len(X), mbs):
        pred = to_numpy(net.predict(xp.asarray(X[i:i + mbs]), T, schedule, tol))
        wrong += int((pred != y[i:i + mbs]).sum())
    return wrong / len(X)


def run_settings(net, n_train, epochs=1, mbs=128, T1=30, T2=10, betas=(0.0, 0.5), third_phase=False,
                 random_sign=False, optim="sgd", lrs=0.01, wds=0.0, mmt=0.9, lr_decay=False, data_aug=False, seed=0,
                 schedule="sync", tol=None):
    """The settings that change the result of :func:`train` (stored in the checkpoint, checked on resume):
    the architecture, every optimisation and phase setting, the seed and the training-set size; the
    number of epochs only with ``lr_decay`` (the cosine schedule depends on it)."""
    _, arch = net.get_state()
    lrs, wds = _per_synapse(net, lrs, wds)
    s = {"architecture": arch, "n_train": int(n_train), "mbs": int(mbs), "T1": T1, "T2": T2,
         "betas": [float(b) for b in betas], "third_phase": bool(third_phase), "random_sign": bool(random_sign),
         "optim": optim, "lrs": lrs, "wds": wds, "mmt": float(mmt), "lr_decay": bool(lr_decay),
         "data_aug": bool(data_aug), "seed": int(seed), "schedule": schedule, "tol": tol}
    if lr_decay:
        s["epochs"] = int(epochs)
    return s


class _Trainee:
    """What the loop checkpoints: the network's parameters and the optimiser's state."""

    def __init__(self, net, opt):
        self.net, self.opt = net, opt

    def get_state(self):
        arrays, meta = self.net.get_state()
        return arrays, {"net": meta, "optimizer": pack_optimizer(self.opt, arrays)}

    def set_state(self, arrays, meta):
        self.net.set_state(arrays, meta.get("net"))
        unpack_optimizer(self.opt, arrays, meta["optimizer"])


def train(net, Xtr, ytr, Xte=None, yte=None, epochs=1, mbs=128, T1=30, T2=10, betas=(0.0, 0.5), third_phase=False,
          random_sign=False, optim="sgd", lrs=0.01, wds=0.0, mmt=0.9, lr_decay=False, data_aug=False, save=None,
          seed=0, schedule="sync", tol=None, progress=True, args=None, *, checkpoint=None, checkpoint_every=None,
          allow_changes=False, settings=None, callbacks=(), max_steps=None):
    """Train ``net`` with EP; returns the :class:`~sparsecoding.training.History` (a list of per-epoch records:
    ``epoch``, ``train_error``, ``seconds``, ``lr_scale``, ``test_error`` when ``Xte`` is given).

    Parameters
    ----------
    net : ConvEBM or MLPEBM (its parameters are trained in place)
    Xtr, ytr : training images (N, C, H, W) (MLP: any shape with N first) and integer labels
    Xte, yte : optional test set, evaluated after every epoch (free phase of ``T1`` steps)
    epochs, mbs, seed : the schedule; epoch ``e`` visits the samples in the order of
        ``default_rng([seed, e]).permutation(N)`` in batches of ``mbs``
    T1, T2, betas, third_phase, random_sign, schedule, tol : the EP estimator (``ConvEBM.ep_gradients``)
    optim, lrs, wds, mmt : "sgd" or "adam"; learning rates and weight decays per synapse (or one
        value for all); SGD momentum
    lr_decay : cosine decay of the learning rates over ``epochs``
    data_aug : random crop (padding ``max(1, W // 8)``) and horizontal flip of 4-d inputs
    save : optional run folder (checkpoint.npz, metrics.csv, error_curves.png, args.json); an
        existing checkpoint there is resumed
    checkpoint : checkpoint path when there is no run folder (ignored with ``save``)
    checkpoint_every : also checkpoint every this many batches (default: once per epoch)
    allow_changes : resume even if the stored settings differ from these
    settings : the settings to store and compare (default :func:`run_settings` of these arguments)
    progress : progress bar; args : JSON-able dict written to ``args.json`` in the run folder
    callbacks : callables ``f(record)`` after every epoch
    max_steps : stop after this many batches of the whole run (a checkpoint is written; a later
        call resumes from it), e.g. to split a run into jobs

    Ctrl-C finishes the batch, writes the checkpoint (and the run folder's metrics and curves
    for the epochs done) and raises :class:`~sparsecoding.training.TrainingInterrupted`.
    """
    if len(Xtr) == 0:
        raise ValueError("Xtr has no samples")
    ytr = _check_labels(ytr, len(Xtr), net.n_classes, "ytr", "Xtr")
    if (Xte is None) != (yte is None):
        raise ValueError("give both Xte and yte, or neither")
    if Xte is not None:
        yte = _check_labels(yte, len(Xte), net.n_classes, "yte", "Xte")
    T1, T2, betas, tol = check_phase_args(T1, T2, betas, third_phase, schedule, tol)
    mbs = _check_int(mbs, "mbs", minimum=1)
    epochs = _check_int(epochs, "epochs", minimum=1)
    seed = _check_int(seed, "seed", minimum=0)
    if not 0 <= _check_number(mmt, "mmt", low=0) < 1:
        raise ValueError(f"mmt (the SGD momentum) must be in [0, 1), got {mmt!r}")
    opt = make_optimizer(net, optim, lrs, wds, mmt)
    if settings is None:
        settings = run_settings(net, len(Xtr), epochs, mbs, T1, T2, betas, third_phase, random_sign, optim, lrs, wds,
                                mmt, lr_decay, data_aug, seed, schedule, tol)
    if save:
        os.makedirs(save, exist_ok=True)
        checkpoint = os.path.join(save, "checkpoint.npz")
        if args is not None and not os.path.exists(checkpoint):
            _write_args(save, args)
    xp = net.xp
    timer = {}

    def on_epoch_start(epoch):
        opt.set_lr_scale(cosine_lr(epoch, epochs, 1e-5) if lr_decay else 1.0)
        timer["t0"] = time.perf_counter()

    def step(idx, rng, info):
        xb = xp.asarray(Xtr[idx])
        if data_aug and xb.ndim == 4:
            xb = horizontal_flip(random_crop(xb, rng, padding=max(1, xb.shape[-1] // 8)), rng)
        yb = ytr[idx]
        grads = net.ep_gradients(xb, yb, T1, T2, betas, third_phase, random_sign, rng, schedule, tol)
        wrong = int((to_numpy(net._output(net._last_free).argmax(axis=1)) != yb).sum())
        opt.step([g for pair in grads for g in pair])
        return {"train_error": wrong / len(idx), **net.after_step()}

    def on_epoch_end(epoch, record):
        extra = {"seconds": time.perf_counter() - timer.get("t0", time.perf_counter()),
                 "lr_scale": opt.lr[0] / opt.base_lr[0] if opt.base_lr[0] else 1.0}
        if Xte is not None:
            extra["test_error"] = evaluate(net, Xte, yte, T1, schedule=schedule, tol=tol)
        return extra

    done = _Done(_stored_history(checkpoint), save)
    try:
        history = fit_loop(_Trainee(net, opt), len(Xtr), step, epochs=epochs, batch_size=mbs, seed=seed,
                           checkpoint=checkpoint, checkpoint_every=checkpoint_every, settings=settings,
                           allow_changes=allow_changes, kind=type(net).__name__, on_epoch_start=on_epoch_start,
                           on_epoch_end=on_epoch_end, callbacks=[*callbacks, done], progress=progress, desc="EqProp",
                           max_steps=max_steps)
    except TrainingInterrupted as exc:
        if save:
            write_run_outputs(save, exc.history)
            if args is not None:
                _write_args(save, args)
        raise
    if save:
        write_run_outputs(save, history)
        if args is not None:
            _write_args(save, args)
    return history


def _stored_history(checkpoint):
    if checkpoint is None or not os.path.exists(checkpoint):
        return []
    try:
        _, meta = load_checkpoint(checkpoint)
        return list((meta.get("loop") or {}).get("history", []))
    except (OSError, ValueError, KeyError):
        return []  # the loop itself reports an unreadable checkpoint


class _Done:
    """Epoch callback: the run folder's metrics and curves after every epoch (stored epochs included)."""

    def __init__(self, records, folder):
        self.records, self.folder = records, folder

    def __call__(self, record):
        self.records.append(record)
        if self.folder:
            write_run_outputs(self.folder, self.records)


def _write_args(folder, args):
    with open(os.path.join(folder, "args.json"), "w") as f:
        json.dump(args, f, indent=2, default=str)


def write_run_outputs(folder, history):
    """``metrics.csv`` and ``error_curves.png`` of the epochs in ``history`` (nothing when it is empty)."""
    from ..training import History  # noqa: PLC0415

    history = history if isinstance(history, History) else History(history)
    if not history:
        return
    history.to_csv(os.path.join(folder, "metrics.csv"))
    from ..viz import save_curves  # noqa: PLC0415

    curves = {"train error": history.column("train_error")}
    if history.column("test_error"):
        curves["test error"] = history.column("test_error")
    try:  # matplotlib is an optional extra: without it the run keeps its csv and checkpoint, no picture
        save_curves(curves, os.path.join(folder, "error_curves.png"), xlabel="epoch", ylabel="error")
    except ImportError:
        return


def load_run(path):
    """``(arrays, net_meta, settings, history)`` of a checkpoint written by :func:`train`."""
    arrays, meta = load_checkpoint(path)
    loop = meta.get("loop") or {}
    model = meta.get("model") or {}
    if "net" not in model or "settings" not in loop:
        raise ValueError(f"{path} is not a checkpoint of sparsecoding.eqprop.train")
    return arrays, model["net"], loop["settings"], loop.get("history", [])
