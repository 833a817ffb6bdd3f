"""``sparsecoding lca``: learn a dictionary on bundled data and save its picture.

The run folder (``--out``) holds the checkpoint, ``weights.npy``, ``history.csv`` (one row per
dictionary step), ``dictionary.png`` and ``energy.png``. Running the same command again resumes
the run (``--steps`` larger continues it); a changed setting is refused with the setting named
(``--allow-changed-settings`` to accept it, ``--no-resume`` to start over). Ctrl-C writes a
checkpoint and the files for the steps done. ``--evaluate`` reloads the run and prints the same
summary as the end of training.

``sparsecoding lca learn [options]`` is the dictionary-learning job of the EqProp LCA front end
(the file ``--lca_dict`` reads); see ``sparsecoding lca learn --help``. ``sparsecoding lca encode
--model PATH --input DATA.npy`` codes data with a learned model (this job's run folder, ``lca
learn``'s dictionary, or a file of ``sparsecoding.save``); see ``sparsecoding lca encode --help``.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from ..cliutil import (CLIError, HelpFormatter, device_backend, nonnegative_float, nonnegative_int, positive_float,
                       one_line_errors, positive_int, writable_dir)
from . import encode_cli, learn_cli


# options that change what a run learns: stored in the checkpoint and compared on resume
# (--steps / --epochs only extend or shorten the schedule; --out, --quiet, --device do not count)
SETTINGS = ("data", "features", "kernel_size", "stride", "crop", "downsample", "no_whiten", "n_samples", "lambda_",
            "eta", "tau", "solver", "lca_iters", "tol", "signed", "batch_size", "seed", "eval_samples")


def _build(args, backend):
    from ..data import load_digits, natural_images, random_crops, whiten_images
    from . import LCA, LCAConv2D

    common = dict(lambda_=args.lambda_, eta=args.eta, lca_iters=args.lca_iters, tol=args.tol, solver=args.solver,
                  tau=args.tau, seed=args.seed, backend=backend, nonneg=not args.signed)
    if args.data == "photos":
        images = natural_images(downsample=args.downsample)
        if not args.no_whiten:
            images = whiten_images(images)
        X = random_crops(images, args.crop, args.n_samples, seed=args.seed)
        layer = LCAConv2D(args.features, 3, kernel_size=args.kernel_size, stride=args.stride, **common)
        return X, layer, None
    X, _ = load_digits()
    X = X.reshape(len(X), -1)[: args.n_samples]
    return X, LCA(args.features, X.shape[1], **common), (8, 8)


def evaluate(layer, X, n):
    """Energy per sample and fraction of active units of the codes of the first ``n`` samples."""
    xp = layer.xp
    s = layer.preprocess(xp.asarray(X[:n]))
    acts = layer.solve(s)["acts"]
    energy = float(xp.sum(layer.energy(s, acts))) / s.shape[0]
    return {"eval_energy": energy, "eval_frac_active": float(xp.mean((acts != 0).astype(acts.dtype)))}


def _summary(metrics, n):
    return (f"energy per sample on the first {n} samples {metrics['eval_energy']:.6g}, "
            f"fraction active {metrics['eval_frac_active']:.6g}")


def _write_outputs(args, layer, steps, shape):
    from ..training import History
    from ..viz import plot_features, save_curves

    np.save(os.path.join(args.out, "weights.npy"), layer.get_weights())
    History(steps=steps).to_csv(os.path.join(args.out, "history.csv"), steps=True)
    pic = os.path.join(args.out, "dictionary.png")
    plot_features(layer.weights, atom_shape=shape, path=pic,
                  title=f"{args.data}: {args.features} atoms after {len(steps)} steps")
    if steps:
        save_curves({"energy": [h["energy"] for h in steps]}, os.path.join(args.out, "energy.png"),
                    xlabel="dictionary step", ylabel="energy per sample", title="dictionary learning")
    return pic


def run(args):
    from ..checkpoint import load_checkpoint
    from ..training import TrainingInterrupted

    writable_dir(args.out)
    backend = device_backend(args.device)
    X, layer, shape = _build(args, backend)
    ck = os.path.join(args.out, "checkpoint.npz")
    settings = {k: getattr(args, k) for k in SETTINGS}
    n_eval = min(args.eval_samples, len(X))
    if args.evaluate:
        if not os.path.exists(ck):
            raise CLIError(f"--evaluate needs a trained run in --out {args.out!r} (no checkpoint.npz there)")
        arrays, meta = load_checkpoint(ck)
        stored = meta.get("loop", {}).get("settings", {})
        changed = [k for k in SETTINGS if k in stored and stored[k] != settings[k]]
        if changed:
            raise CLIError(f"--evaluate with other settings than the run in {args.out!r}: "
                           + ", ".join(f"--{k.rstrip('_').replace('_', '-')} {stored[k]!r}" for k in changed))
        layer.assign_weight_values(layer.xp.asarray(arrays["weights"]), normalize=False)
        print(_summary(evaluate(layer, X, n_eval), n_eval))
        return 0
    batch = min(args.batch_size, len(X))
    per_epoch = len(X) // batch
    epochs = args.epochs if args.epochs is not None else -(-args.steps // per_epoch)
    if epochs * per_epoch < args.steps:
        raise CLIError(f"--steps {args.steps} needs {-(-args.steps // per_epoch)} epochs of {per_epoch} steps; "
                       f"--epochs {args.epochs} allows {epochs * per_epoch} (leave --epochs out to fit --steps)")
    with open(os.path.join(args.out, "args.json"), "w") as f:
        json.dump({k: v for k, v in vars(args).items() if k != "func"} | {"epochs": epochs}, f, indent=2,
                  default=str)
    if args.no_resume and os.path.exists(ck):
        os.remove(ck)
    t0 = time.perf_counter()
    try:
        steps = layer.fit(X, epochs=epochs, batch_size=batch, seed=args.seed, checkpoint=ck,
                          checkpoint_every=args.checkpoint_every, allow_changes=args.allow_changed_settings,
                          settings=settings, progress=not args.quiet, max_steps=args.steps, record_steps=True).steps
    except TrainingInterrupted as exc:
        _write_outputs(args, layer, exc.history.steps, shape)  # what the run has, then the one-line exit
        raise
    elapsed = time.perf_counter() - t0
    pic = _write_outputs(args, layer, steps, shape)
    print(f"{len(steps)} steps in {elapsed:.1f} s; {_summary(evaluate(layer, X, n_eval), n_eval)}; "
          f"dictionary picture: {pic}")
    return 0


def register(sub):
    """Add the ``lca`` subcommand to the top-level parser's subparsers."""
    p = sub.add_parser("lca", formatter_class=HelpFormatter, description=__doc__,
                       help="LCA: learn dictionaries (also lca learn); code data (lca encode)")
    one_line_errors(p)
    a = p.add_argument
    a("--data", choices=["photos", "digits"], default="photos",
      help="photos: RGB crops of scikit-image's photographs (convolutional); digits: scikit-learn's digits (dense)")
    a("--out", default="runs/lca", help="run folder: checkpoint, weights.npy, history.csv, pictures; an existing "
      "run there is resumed")
    a("--features", type=positive_int, default=64, help="number of dictionary atoms")
    a("--kernel-size", type=positive_int, default=9, help="atom size (photos; odd)")
    a("--stride", type=positive_int, default=2, help="convolution stride (photos)")
    a("--crop", type=positive_int, default=32, help="crop size of the photographs")
    a("--downsample", type=positive_int, default=2, help="block-average the photographs by this factor")
    a("--no-whiten", action="store_true", help="skip the 1/f whitening filter of the photographs")
    a("--n-samples", type=positive_int, default=20000, help="training samples (photo crops; digits: at most 1797)")
    a("--lambda", dest="lambda_", type=nonnegative_float, default=0.25, help="sparsity penalty lambda")
    a("--eta", type=positive_float, default=0.1, help="dictionary step size (lca-pytorch's eta)")
    a("--tau", type=positive_float, default=100, help="LCA time constant (step 1/tau; solver lca)")
    a("--solver", choices=["lca", "fista", "cd"], default="fista",
      help="sparse coding solver: lca (the dynamics), fista, cd (coordinate descent: the exact LASSO path for "
           "digits, locally greedy for photos; --lca-iters caps its sweeps)")
    a("--lca-iters", type=positive_int, default=60, help="most solver iterations per batch")
    a("--tol", type=nonnegative_float, default=1e-3, help="stop a batch's solve at this relative duality gap")
    a("--signed", action="store_true", help="signed codes (off: non-negative codes)")
    a("--batch-size", type=positive_int, default=32, help="samples per dictionary step")
    a("--steps", type=positive_int, default=300, help="dictionary steps in total (a larger value continues a run)")
    a("--epochs", type=positive_int, default=None,
      help="passes over the data (default: as many as --steps needs; an error if fewer)")
    a("--checkpoint-every", type=positive_int, default=50, help="also checkpoint every this many steps")
    a("--no-resume", action="store_true", help="start over even if --out holds a run (its checkpoint is replaced)")
    a("--allow-changed-settings", action="store_true",
      help="resume a run in --out even though settings differ (the new values are used from now on)")
    a("--eval-samples", type=positive_int, default=256,
      help="the summary reports energy and fraction active on the first this many samples")
    a("--evaluate", action="store_true", help="print the summary of the run in --out and exit (no training)")
    a("--seed", type=nonnegative_int, default=0, help="seed of the data crops, dictionary and batch order")
    a("--device", default="cpu", help="cpu, gpu or a GPU index")
    a("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    actions = p.add_subparsers(dest="action", metavar="{learn,encode}", required=False,
                               help="learn: the dictionary file of the EqProp LCA front end; encode: code data "
                               "with a learned model (options after it: sparsecoding lca learn --help, "
                               "sparsecoding lca encode --help); without either, the job above")
    learn_cli.register(actions)
    encode_cli.register(actions)
    _learn_comes_first(p)
    return p


def _learn_comes_first(parser):
    """Refuse ``sparsecoding lca <options> learn`` (or ``encode``): the options before it would be ignored."""
    parse = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        ns, rest = parse(args, namespace)
        action = getattr(ns, "action", None)
        if action in ("learn", "encode") and args[:1] != [action]:
            parser.error(f"'{action}' must come right after 'lca' (options of sparsecoding lca {action} follow it; "
                         f"got {' '.join(args[:args.index(action)])!r} before it)")
        return ns, rest

    parser.parse_known_args = parse_known_args
    return parser
