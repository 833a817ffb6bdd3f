"""``sparsecoding lpl`` and ``sparsecoding foldiak``: layer-local LPL training and Foldiak's network.

Both commands train through the learning loop (:func:`sparsecoding.training.fit_loop`)
and keep a checkpoint in ``--out`` (every ``--checkpoint-every`` batches, after
every epoch and on Ctrl-C). Running the same command again resumes it and ends
bit-identical to an uninterrupted run; a changed option is a one-line error naming
it (``--allow-changed-settings`` resumes anyway, ``--no-resume`` starts over).
``--epochs`` may grow between runs (except for ``lpl --greedy``, where it is the
length of each layer's stage). Ctrl-C writes the checkpoint and what the run has
so far, prints one line and exits with 130. ``--evaluate`` reloads the checkpoint
in ``--out`` and prints the same summary as the end of training.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from ..cliutil import (CLIError, HelpFormatter, device_backend, nonnegative_float, nonnegative_int, one_line_errors,
                       positive_float, positive_int, probability, writable_dir)

LPL_CHECKPOINTS = {"lpl": "checkpoint.npz", "hebbian+decorrelation": "checkpoint_nopred.npz"}
FOLDIAK_CHECKPOINT = "checkpoint.npz"


# ----------------------------------------------------------------------------------------- checkpoints
def _cli_settings(args, names, **resolved):
    """The options that shape a run, by option name (``--beta``), with defaults resolved."""
    out = {f"--{n.replace('_', '-')}": getattr(args, n) for n in names}
    out.update({f"--{n.replace('_', '-')}": v for n, v in resolved.items()})
    return out


def _read_checkpoint(path):
    from ..checkpoint import load_checkpoint  # noqa: PLC0415

    try:
        arrays, meta = load_checkpoint(path)
        loop = meta["loop"]
        return arrays, meta, loop
    except Exception as exc:  # a truncated or foreign file
        raise CLIError(f"{path} is not a readable training checkpoint ({type(exc).__name__}: {exc}); "
                       f"use --no-resume to start over") from None


def _check_options(loop, current, allow, path):
    """Compare the options stored in a checkpoint with the command's; a change is one error line naming them."""
    from ..training import SettingsChanged, check_settings  # noqa: PLC0415

    saved = {k: v for k, v in (loop.get("settings") or {}).items() if k.startswith("--")}
    changed = check_settings(saved, current, allow_changes=True)
    if changed and not allow:
        what = "; ".join(f"{k} {saved.get(k, '(unset)')!r} -> {current.get(k, '(unset)')!r}" for k in changed)
        raise SettingsChanged(f"{path} was written with other options ({what}): rerun with the same values, "
                              f"add --allow-changed-settings to resume anyway, or --no-resume to start over")


def _prepare(path, current, args):
    """Before training: ``--no-resume`` removes the checkpoint; a resumed one must have the same options."""
    if args.no_resume and os.path.exists(path):
        os.remove(path)
    if os.path.exists(path):
        _, _, loop = _read_checkpoint(path)
        _check_options(loop, current, args.allow_changed_settings, path)


def _restore(net, path, current, args):
    """``--evaluate``: load the checkpoint into ``net``; returns its History."""
    from ..training import History  # noqa: PLC0415

    if not os.path.exists(path):
        raise CLIError(f"--evaluate: no checkpoint {path}; train first with the same options and --out")
    arrays, meta, loop = _read_checkpoint(path)
    _check_options(loop, current, args.allow_changed_settings, path)
    try:
        net.set_state(arrays, meta.get("model", {}))
    except (KeyError, ValueError) as exc:
        raise CLIError(f"{path} does not fit this network ({exc})") from None
    return History(loop.get("history", []))


def _add_run_options(p, checkpoint_every):
    one_line_errors(p)
    p.add_argument("--checkpoint-every", type=positive_int, default=checkpoint_every, metavar="N",
                   help="also write the checkpoint every N batches (it is always written after each epoch and "
                        "on Ctrl-C)")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    p.add_argument("--allow-changed-settings", action="store_true",
                   help="resume (or evaluate) a checkpoint written with other options")
    p.add_argument("--evaluate", action="store_true",
                   help="no training: reload the checkpoint in --out and print the same summary as after training")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the initialisation, data and order")
    p.add_argument("--device", default="cpu", help="cpu, gpu or a GPU index")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


# ------------------------------------------------------------------------------------------------- LPL
def _lpl_data(args):
    from ..data import digits_split, load_cifar10, load_stl10  # noqa: PLC0415

    if args.data == "digits":
        Xtr, ytr, Xte, yte = digits_split(1300, seed=args.seed)
    else:
        if args.data_dir is None:
            raise CLIError(f"--data {args.data} needs --data-dir with the standard files (nothing is downloaded)")
        if args.data == "cifar10":
            Xtr, ytr = load_cifar10(args.data_dir, train=True)
            Xte, yte = load_cifar10(args.data_dir, train=False)
        else:
            Xtr, ytr = load_stl10(args.data_dir, "train")
            Xte, yte = load_stl10(args.data_dir, "test")
    if args.n_train is not None:
        if args.n_train > len(Xtr):
            raise CLIError(f"--n-train {args.n_train} exceeds the {len(Xtr)} training images of --data {args.data}")
        Xtr, ytr = Xtr[: args.n_train], ytr[: args.n_train]
    if args.mbs > len(Xtr):
        raise CLIError(f"--mbs {args.mbs} exceeds the number of training images ({len(Xtr)})")
    return Xtr, ytr, Xte, yte


_LPL_OPTIONS = ("data", "n_train", "channels", "pools", "act", "mbs", "lr", "lambda1", "lambda2", "mode", "greedy",
                "seed")


def _lpl_line(name, accs, stats):
    line = f"{name}: linear readout accuracy per layer {[round(a, 4) for a in accs]}"
    if name in stats:
        line += (f"; participation ratio {stats[name]['participation_ratio']}"
                 f"; mean activity {stats[name]['mean_activity']}")
    return line


def run_lpl(args):
    from ..data.augment import digit_views, lpl_views  # noqa: PLC0415
    from ..readout import LogisticRegression, participation_ratio  # noqa: PLC0415
    from ..training import TrainingInterrupted  # noqa: PLC0415
    from .lpl_net import LPLConvNet  # noqa: PLC0415

    if len(args.pools) != len(args.channels) or set(args.pools) - {"m", "i"}:
        raise CLIError(f"--pools must have one 'm' (2x2 max pool) or 'i' (none) per layer of --channels "
                       f"({len(args.channels)}), got {args.pools!r}")
    writable_dir(args.out)
    backend = device_backend(args.device)
    Xtr, ytr, Xte, yte = _lpl_data(args)
    current = _cli_settings(args, _LPL_OPTIONS + (("epochs",) if args.greedy else ()))
    variants = ["lpl", "hebbian+decorrelation"] if args.compare else ["lpl"]
    paths = {v: os.path.join(args.out, LPL_CHECKPOINTS[v]) for v in variants}
    if not args.evaluate:
        for v in variants:
            _prepare(paths[v], current, args)

    stats, results, seconds, histories = {}, {}, {}, {}

    def readout(net, name):
        ftr, fte = net.features(Xtr, grid=1), net.features(Xte, grid=1)
        stats[name] = {"participation_ratio": [round(participation_ratio(f), 2) for f in ftr],
                       "mean_activity": [round(float(f.mean()), 4) for f in ftr]}
        results[name] = [LogisticRegression(l2=1e-2).fit(a, ytr).score(b, yte) for a, b in zip(ftr, fte)]

    def make(predictive):
        return LPLConvNet(Xtr.shape[1], args.channels, args.pools, args.act, lambda1=args.lambda1,
                          lambda2=args.lambda2, predictive=predictive, mode=args.mode, lr=args.lr, seed=args.seed,
                          backend=backend)

    def write(interrupted=False):
        from ..training import History  # noqa: PLC0415

        out = {"readout_accuracy": results, "feature_stats": stats, "seconds": seconds,
               "epochs_complete": {v: len(h) for v, h in histories.items()}, "interrupted": interrupted}
        with open(os.path.join(args.out, "readout.json"), "w") as f:
            json.dump(out, f, indent=2)
        for v, h in histories.items():
            History(h).to_csv(os.path.join(args.out, f"history_{'lpl' if v == 'lpl' else 'nopred'}.csv"))
        if results:
            _plot_layers(results, os.path.join(args.out, "readout.png"))

    readout(make(True), "random")
    for v in variants:
        net = make(v == "lpl")
        if args.evaluate:
            histories[v] = _restore(net, paths[v], current, args)
        else:
            t0 = time.perf_counter()
            try:
                histories[v] = net.fit(
                    Xtr, epochs=args.epochs, batch_size=args.mbs, seed=args.seed, greedy=args.greedy,
                    augment=digit_views if args.data == "digits" else lpl_views, progress=not args.quiet,
                    checkpoint=paths[v], checkpoint_every=args.checkpoint_every,
                    allow_changes=args.allow_changed_settings, settings=current)
            except TrainingInterrupted as exc:
                histories[v] = exc.history
                seconds[v] = time.perf_counter() - t0
                write(interrupted=True)
                raise
            seconds[v] = time.perf_counter() - t0
        readout(net, v)
    if not args.evaluate:
        write()
    for name in results:
        print(_lpl_line(name, results[name], stats))
    if not args.evaluate:
        print("training: " + ", ".join(f"{v} {len(histories[v])} epoch(s) in {seconds[v]:.1f} s" for v in variants)
              + f"; results in {args.out}")
    return 0


def _plot_layers(results, path):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, accs in results.items():
        ax.plot(range(1, len(accs) + 1), accs, marker="o", label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel("linear readout accuracy (test)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------- Foldiak
_FOLDIAK_DEFAULTS = {"bars": {"units": 16, "n_samples": 8000, "epochs": 1, "p": 1 / 8, "beta": 0.02},
                     "patches": {"units": 64, "n_samples": 20000, "epochs": 4, "p": 0.05, "beta": 0.005}}


def _foldiak_summary(net, X, T, p):
    from ..backend import to_numpy  # noqa: PLC0415

    y = to_numpy(net.transform(X[: min(len(X), 2000)]))
    units = y.shape[1]
    co = (y.T @ y / len(y))[~np.eye(units, dtype=bool)].mean() if units > 1 else float("nan")
    summary = {"presentations": int(net.n_presented), "mean_activity": float(y.mean()),
               "mean_coactivity": float(co), "p": p}
    if T is not None:
        best, _ = net.feature_assignment(T)
        summary["distinct_bars"] = int(len(set(best.tolist())))
    return summary


def run_foldiak(args):
    from ..backend import to_numpy  # noqa: PLC0415
    from ..data import bars, natural_patches  # noqa: PLC0415
    from ..training import TrainingInterrupted  # noqa: PLC0415
    from ..viz import plot_features  # noqa: PLC0415
    from .foldiak import FoldiakNetwork  # noqa: PLC0415

    writable_dir(args.out)
    backend = device_backend(args.device)
    # None means "the task's default": an explicit 0 (e.g. --beta 0) is kept
    d = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in _FOLDIAK_DEFAULTS[args.task].items()}
    if args.task == "bars":
        X, T = bars(d["n_samples"], seed=args.seed)
    else:  # whitened, centred patches; a slower feed-forward rate averages over more inputs per unit
        X, T = natural_patches(d["n_samples"], seed=args.seed), None
    current = _cli_settings(args, ("task", "alpha", "gamma", "batch_size", "warmup", "one_shot", "seed"),
                            units=d["units"], n_samples=d["n_samples"], p=d["p"], beta=d["beta"])
    path = os.path.join(args.out, FOLDIAK_CHECKPOINT)
    net = FoldiakNetwork(X.shape[1], d["units"], p=d["p"], alpha=args.alpha, beta=d["beta"], gamma=args.gamma,
                         one_shot=args.one_shot, seed=args.seed, backend=backend)

    def report(history, seconds=None, interrupted=False):
        summary = _foldiak_summary(net, X, T, d["p"])
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary | {"epochs_complete": len(history), "seconds": seconds, "interrupted": interrupted},
                      f, indent=2)
        history.to_csv(os.path.join(args.out, "history.csv"))
        pic = os.path.join(args.out, "weights.png")
        plot_features(to_numpy(net.Q), atom_shape=(8, 8), path=pic,
                      title=f"Foldiak {args.task}{' one-shot' if args.one_shot else ''}"
                            f"{' (interrupted)' if interrupted else ''}: feed-forward weights Q of the "
                            f"{net.Q.shape[0]} units (one 8x8 tile per unit)")
        return summary, pic

    if args.evaluate:
        _restore(net, path, current, args)
        print(json.dumps(_foldiak_summary(net, X, T, d["p"])))
        return 0
    _prepare(path, current, args)
    t0 = time.perf_counter()
    try:
        history = net.fit(X, epochs=d["epochs"], batch_size=args.batch_size, seed=args.seed, warmup=args.warmup,
                          checkpoint=path, checkpoint_every=args.checkpoint_every,
                          allow_changes=args.allow_changed_settings, settings=current, progress=not args.quiet)
    except TrainingInterrupted as exc:
        report(exc.history, time.perf_counter() - t0, interrupted=True)
        raise
    elapsed = time.perf_counter() - t0
    summary, pic = report(history, elapsed)
    print(json.dumps(summary))
    print(f"{len(history)} epoch(s), this run {elapsed:.1f} s; picture: {pic}")
    return 0


# ------------------------------------------------------------------------------------------------ parsers
# options whose default (None) depends on other options state it in their help; this empty format of
# the default keeps the formatter from adding "(default: None)"
_NO_AUTO = "%(default).0s"


LPL_DESCRIPTION = """sparsecoding lpl: layer-local LPL training of a VGG-like conv network (each layer learns
from its own predictive + Hebbian + decorrelation delta on two augmented views per image), then
a linear readout of every layer's features.

"""
FOLDIAK_DESCRIPTION = """sparsecoding foldiak: Foldiak's anti-Hebbian network (settling to equilibrium, then the
anti-Hebbian lateral, Hebbian feed-forward and threshold rules) on the bars problem or on
whitened natural-image patches.

"""
# the commands' shared behaviour, from the module notes (without the first line, which names both)
_RUNS = __doc__.split("\n", 2)[2].replace("``", "")


def register(sub):
    """Add the ``lpl`` and ``foldiak`` subcommands to the top-level parser's subparsers."""
    p = sub.add_parser("lpl", formatter_class=HelpFormatter, description=LPL_DESCRIPTION + _RUNS,
                       help="layer-local LPL training of a conv network and linear readout per layer")
    p.add_argument("--data", choices=["digits", "cifar10", "stl10"], default="digits",
                   help="digits: scikit-learn's bundled 8x8 digits (1300 train / 497 test); cifar10, stl10: "
                        "the standard files in --data-dir")
    p.add_argument("--data-dir", default=None, help="folder with the CIFAR-10 / STL-10 files (nothing is downloaded; default: none)" + _NO_AUTO)
    p.add_argument("--out", default="runs/lpl", help="folder for the checkpoint, readout.json and pictures")
    p.add_argument("--n-train", type=positive_int, default=None,
                   help="train (and fit the readout) on the first N training images only (default: all)" + _NO_AUTO)
    p.add_argument("--channels", type=positive_int, nargs="+", default=[32, 64, 128],
                   help="output channels of each 3x3 conv layer")
    p.add_argument("--pools", default="mmi", help="one letter per layer: m (2x2 max pool after it) or i (none)")
    p.add_argument("--act", default="relu", choices=["relu", "tanh", "sigmoid", "linear"], help="activation")
    p.add_argument("--epochs", type=positive_int, default=10,
                   help="epochs (with --greedy: epochs per layer)")
    p.add_argument("--mbs", "--batch-size", dest="mbs", type=positive_int, default=64, help="mini-batch size")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate")
    p.add_argument("--lambda1", type=nonnegative_float, default=1.0, help="weight of the Hebbian (variance) term")
    p.add_argument("--lambda2", type=nonnegative_float, default=10.0, help="weight of the decorrelation term")
    p.add_argument("--mode", choices=["pool", "positions", "mixed"], default="mixed",
                   help="pool: losses on globally pooled features; positions: every position a sample; mixed: "
                        "predictive on pooled features, Hebbian and decorrelation over positions")
    p.add_argument("--greedy", action="store_true", help="train layers one after another")
    p.add_argument("--compare", action="store_true", help="also train without the predictive term and plot both")
    _add_run_options(p, checkpoint_every=20)
    p.set_defaults(func=run_lpl)

    p = sub.add_parser("foldiak", formatter_class=HelpFormatter, description=FOLDIAK_DESCRIPTION + _RUNS,
                       help="Foldiak's anti-Hebbian network on bars or natural-image patches")
    p.add_argument("--task", choices=["bars", "patches"], default="bars",
                   help="bars: the 8x8 bars problem; patches: whitened 8x8 patches of the bundled photographs")
    p.add_argument("--out", default="runs/foldiak", help="folder for the checkpoint, summary.json and weights.png")
    p.add_argument("--units", type=positive_int, default=None, help="number of units (default: 16 bars, 64 patches)" + _NO_AUTO)
    p.add_argument("--n-samples", type=positive_int, default=None,
                   help="training inputs (default: 8000 bars, 20000 patches)" + _NO_AUTO)
    p.add_argument("--epochs", type=positive_int, default=None, help="passes over the inputs (default: 1 bars, 4 patches)" + _NO_AUTO)
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="inputs settled at once; the rules apply the summed per-presentation deltas (1: online)")
    p.add_argument("--warmup", type=nonnegative_int, default=200,
                   help="presentations that adapt the thresholds only, before learning")
    p.add_argument("--p", type=probability, default=None,
                   help="target firing probability (default: 1/8 bars, 0.05 patches)" + _NO_AUTO)
    p.add_argument("--alpha", type=nonnegative_float, default=0.1, help="lateral (anti-Hebbian) learning rate")
    p.add_argument("--beta", type=nonnegative_float, default=None,
                   help="feed-forward (Hebbian) learning rate (default: 0.02 bars, 0.005 patches)" + _NO_AUTO)
    p.add_argument("--gamma", type=nonnegative_float, default=0.02, help="threshold learning rate")
    p.add_argument("--one-shot", action="store_true", help="no settling: the seed notebook's failure mode")
    _add_run_options(p, checkpoint_every=100)
    p.set_defaults(func=run_foldiak)
