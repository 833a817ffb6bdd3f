"""``sparsecoding lca learn``: learn the dictionary of the EqProp LCA front end (the seed's cifar_dictlearning.py).

Trains ``LCAConv2D(lca_feats, C, kernel_size=lca_ksize, stride=lca_stride, pad="same")`` with its own
``fit`` (lca-pytorch's dictionary rule, non-negative codes, every input standardised
per sample by ``layer.preprocess``, as the front end codes its inputs). Data
(``--task``): DIGITS, the 1,400 training images of scikit-learn's digits
(``digits_split(1400, seed=12345)``, 1x8x8); CIFAR10, the training batches in
``--data-dir`` (3x32x32); photos, 32x32 RGB crops of scikit-image's photographs
(downsampled 2x, not whitened: the front end codes raw images).

Lambda schedule: epoch ``e`` (0-based) uses
``max(0, lca_lambda + lambda_step * (e // lambda_every))``.

The save folder (``--save-dir``) holds:

* ``dictionary.npy``: float32 array ``(lca_feats, C, lca_ksize, lca_ksize)``, unit-norm
  atoms: the file ``sparsecoding eqprop --model LCACNN --lca_dict PATH`` reads;
* ``dictionary.json`` beside it: ``lca_feats``, ``in_channels``, ``lca_ksize``,
  ``lca_stride``, ``lca_lambda`` (the value of the last epoch), ``task``, ``epochs``
  (complete epochs), ``seed``, and the other settings of the run;
* ``features.png`` (the atoms), ``metrics.csv`` (per epoch: lambda, energy per sample,
  L1, L2, fraction of active units, solver iterations), ``checkpoint.npz``.

Running the same command again resumes the run exactly (a larger ``--epochs``
continues it); a changed setting is refused with the setting named
(``--allow-changed-settings`` to accept it, ``--no-resume`` to start over). Ctrl-C
writes a checkpoint and the files for the steps done, then exits with 130.
"""
from __future__ import annotations

import csv
import json
import os
import time

import numpy as np

from ..cliutil import (CLIError, HelpFormatter, _bounded, device_backend, finite_float, nonnegative_float,
                       nonnegative_int, one_line_errors, positive_float, positive_int, writable_dir)

__all__ = ["DICTIONARY", "lambda_at_epoch", "register", "run"]

DICTIONARY = "dictionary.npy"
DIGITS_TRAIN, DIGITS_SPLIT_SEED = 1400, 12345
PHOTO_CROP, PHOTO_DOWNSAMPLE, PHOTO_SAMPLES = 32, 2, 20000

# options that change what a run learns: stored in the checkpoint and compared on resume
# (--epochs only extends or shortens the schedule; --save-dir, --data-dir, --quiet, --device do not count)
SETTINGS = ("task", "n_samples", "lca_feats", "lca_lambda", "lca_tau", "lca_eta", "lca_iters", "lca_stride",
            "lca_ksize", "lca_solver", "lca_tol", "mbs", "lambda_step", "lambda_every", "seed")

odd_positive_int = _bounded(int, lambda v: v >= 1 and v % 2 == 1, "an odd integer >= 1")


def lambda_at_epoch(start, step, every, epoch):
    """Lambda of 0-based ``epoch``: ``max(0, start + step * (epoch // every))``."""
    return max(0.0, start + step * (epoch // every))


def load_task(args):
    """The training images (N, C, H, W) in [0, 1] of ``--task``, the first ``--n-samples`` of them."""
    from ..data import digits_split, load_cifar10, natural_images, random_crops

    if args.task == "DIGITS":
        X = digits_split(DIGITS_TRAIN, seed=DIGITS_SPLIT_SEED)[0]
    elif args.task == "CIFAR10":
        if args.data_dir is None:
            raise CLIError("--task CIFAR10 needs --data-dir (the folder of the CIFAR-10 python batches; "
                           "nothing is downloaded)")
        X = load_cifar10(args.data_dir, train=True)[0]
    else:
        images = natural_images(downsample=PHOTO_DOWNSAMPLE)
        X = random_crops(images, PHOTO_CROP, args.n_samples or PHOTO_SAMPLES, seed=args.seed)
    return np.ascontiguousarray(X[: args.n_samples])


def _write_outputs(args, layer, history, X, complete):
    from ..backend import to_numpy
    from ..viz import plot_features

    out = args.save_dir
    weights = np.ascontiguousarray(to_numpy(layer.weights), dtype=np.float32)
    path = os.path.join(out, DICTIONARY)
    np.save(path, weights)
    lam = {r["epoch"]: r["lambda_"] for r in history.steps}  # the value the epoch's steps used
    steps = len(history.steps)
    last_lambda = history.steps[-1]["lambda_"] if steps else args.lca_lambda
    meta = {"lca_feats": int(weights.shape[0]), "in_channels": int(weights.shape[1]),
            "lca_ksize": int(weights.shape[2]), "lca_stride": args.lca_stride,
            "lca_lambda": float(last_lambda), "task": args.task, "epochs": len(history), "seed": args.seed,
            "shape": list(weights.shape), "dtype": "float32", "complete": complete, "steps": steps,
            "lca_lambda_start": args.lca_lambda, "lambda_step": args.lambda_step,
            "lambda_every": args.lambda_every, "lca_tau": args.lca_tau, "lca_eta": args.lca_eta,
            "lca_iters": args.lca_iters, "lca_solver": args.lca_solver, "lca_tol": args.lca_tol, "mbs": args.mbs,
            "n_samples": int(X.shape[0]), "image_shape": list(X.shape[1:]), "pad": "same", "nonneg": layer.nonneg,
            "input_zero_mean": layer.input_zero_mean, "input_unit_var": layer.input_unit_var}
    with open(os.path.join(out, "dictionary.json"), "w") as f:
        json.dump(meta, f, indent=2)
    with open(os.path.join(out, "metrics.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "lambda", "energy", "L1", "L2", "frac_active", "lca_iters_run"])
        w.writerows([r["epoch"], lam[r["epoch"]]] + [r[k] for k in ("energy", "L1", "L2", "frac_active",
                                                                    "lca_iters_run")] for r in history)
    plot_features(weights, path=os.path.join(out, "features.png"),
                  title=f"{args.task}: {weights.shape[0]} atoms after {len(history)} epoch(s)")
    return path, weights, last_lambda


def run(args):
    from ..training import TrainingInterrupted
    from . import LCAConv2D

    writable_dir(args.save_dir, "--save-dir")
    backend = device_backend(args.device)
    X = load_task(args)
    batch = min(args.mbs, len(X))
    per_epoch = len(X) // batch
    layer = LCAConv2D(args.lca_feats, X.shape[1], kernel_size=args.lca_ksize, stride=args.lca_stride,
                      lambda_=args.lca_lambda, tau=args.lca_tau, eta=args.lca_eta, lca_iters=args.lca_iters, solver=args.lca_solver,
                      tol=args.lca_tol, pad="same", seed=args.seed, backend=backend)

    def schedule(step):
        return lambda_at_epoch(args.lca_lambda, args.lambda_step, args.lambda_every, step // per_epoch)

    ck = os.path.join(args.save_dir, "checkpoint.npz")
    if args.no_resume and os.path.exists(ck):
        os.remove(ck)
    settings = {k: getattr(args, k) for k in SETTINGS}
    t0 = time.perf_counter()
    try:
        history = layer.fit(X, epochs=args.epochs, batch_size=batch, seed=args.seed, checkpoint=ck,
                            checkpoint_every=args.checkpoint_every, allow_changes=args.allow_changed_settings,
                            settings=settings, lambda_schedule=schedule, progress=not args.quiet,
                            record_steps=True)
    except TrainingInterrupted as exc:
        _write_outputs(args, layer, exc.history, X, complete=False)  # what the run has, then the one-line exit
        raise
    elapsed = time.perf_counter() - t0
    path, w, lam = _write_outputs(args, layer, history, X, complete=True)
    last = history[-1]
    print(f"{len(history)} epoch(s) ({len(history.steps)} steps of {batch} {args.task} images) in {elapsed:.1f} s; "
          f"last epoch: lambda {lam:.6g}, energy per sample {last['energy']:.6g}, "
          f"fraction active {last['frac_active']:.4g}; dictionary {path} "
          f"({'x'.join(map(str, w.shape))}, float32)")
    return 0


def register(sub):
    """Add ``learn`` to the subparsers of ``sparsecoding lca``."""
    p = sub.add_parser("learn", formatter_class=HelpFormatter, description=__doc__,
                       help="learn the dictionary file of the EqProp LCA front end (sparsecoding lca learn --help)")
    one_line_errors(p)
    a = p.add_argument
    a("--task", choices=["DIGITS", "CIFAR10", "photos"], default="DIGITS",
      help="training images: DIGITS (scikit-learn's 8x8 digits, 1,400 training images, 1 channel), CIFAR10 "
      "(the training batches in --data-dir, 3x32x32), photos (32x32 RGB crops of scikit-image's photographs)")
    a("--data-dir", default=None,
      help="folder of the CIFAR-10 python batches (--task CIFAR10; nothing is downloaded; default: none)")
    a("--n-samples", type=positive_int, default=None,
      help=f"use only the first this many training images (default: all of them; photos: {PHOTO_SAMPLES} crops)")
    a("--lca_feats", type=positive_int, default=64, help="number of dictionary features (atoms)")
    a("--lca_lambda", type=nonnegative_float, default=0.25, help="sparsity threshold lambda: the start value of "
      "the lambda schedule")
    a("--lambda_step", type=finite_float, default=0.0,
      help="added to lambda every --lambda_every epochs (0: constant lambda; lambda never goes below 0)")
    a("--lambda_every", type=positive_int, default=1, help="epochs between lambda schedule steps")
    a("--lca_tau", type=positive_float, default=100.0, help="LCA time constant (step 1/tau; --lca_solver lca)")
    a("--lca_eta", type=positive_float, default=0.01, help="dictionary step size (lca-pytorch's eta)")
    a("--lca_iters", type=positive_int, default=600, help="solver iterations per batch")
    a("--lca_stride", type=positive_int, default=2, help="convolution stride of the dictionary")
    a("--lca_ksize", type=odd_positive_int, default=9, help="atom size (odd: same padding)")
    a("--lca_solver", choices=["lca", "fista", "cd"], default="lca",
      help="lca: the seed's LCA dynamics; fista: reaches the same code in fewer iterations; cd: locally greedy "
           "coordinate descent (--lca_iters caps its sweeps)")
    a("--lca_tol", type=nonnegative_float, default=None,
      help="stop a batch's solve at this relative duality gap (default: none: run all --lca_iters steps)")
    a("--epochs", type=positive_int, default=5, help="passes over the data (a larger value continues a run)")
    a("--mbs", type=positive_int, default=32, help="batch size: images per dictionary step")
    a("--seed", type=nonnegative_int, default=0, help="seed of the dictionary, batch order (and photo crops)")
    a("--device", default="cpu", help="cpu, gpu or a GPU index")
    a("--save-dir", default=os.path.join("runs", "lca-dict"),
      help=f"folder of {DICTIONARY}, dictionary.json, features.png, metrics.csv, checkpoint.npz; an existing run "
      "there is resumed")
    a("--checkpoint-every", type=positive_int, default=50, help="also checkpoint every this many steps")
    a("--no-resume", action="store_true", help="start over even if --save-dir holds a run (its checkpoint is "
      "replaced)")
    a("--allow-changed-settings", action="store_true",
      help="resume a run in --save-dir even though settings differ (the new values are used from now on)")
    a("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run, command="lca learn")
    return p
