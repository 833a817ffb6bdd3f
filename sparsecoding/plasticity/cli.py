"""``sparsecoding lpl`` and ``sparsecoding foldiak``: layer-local LPL training and Foldiak's network."""
from __future__ import annotations

import json
import os
import time

import numpy as np

from ..cliutil import HelpFormatter, device_backend


def _lpl_data(args):
    from ..data import digits_split, load_cifar10, load_stl10

    if args.data == "digits":
        return digits_split(1300, seed=args.seed)
    if args.data_dir is None:
        raise SystemExit(f"--data {args.data} needs --data-dir with the standard files")
    if args.data == "cifar10":
        Xtr, ytr = load_cifar10(args.data_dir, train=True)
        Xte, yte = load_cifar10(args.data_dir, train=False)
    else:
        Xtr, ytr = load_stl10(args.data_dir, "train")
        Xte, yte = load_stl10(args.data_dir, "test")
    if args.n_train:
        Xtr, ytr = Xtr[: args.n_train], ytr[: args.n_train]
    return Xtr, ytr, Xte, yte


def run_lpl(args):
    from ..data.augment import digit_views, lpl_views
    from .lpl_net import LPLConvNet
    from ..readout import LogisticRegression, participation_ratio

    os.makedirs(args.out, exist_ok=True)
    backend = device_backend(args.device)
    Xtr, ytr, Xte, yte = _lpl_data(args)

    stats = {}

    def readout(net, name=None):
        ftr, fte = net.features(Xtr, grid=1), net.features(Xte, grid=1)
        if name is not None:
            stats[name] = {"participation_ratio": [round(participation_ratio(f), 2) for f in ftr],
                           "mean_activity": [round(float(f.mean()), 4) for f in ftr]}
        return [LogisticRegression(l2=1e-2).fit(a, ytr).score(b, yte) for a, b in zip(ftr, fte)]

    results = {}
    variants = [True, False] if args.compare else [True]
    for predictive in variants:
        net = LPLConvNet(Xtr.shape[1], args.channels, args.pools, args.act, lambda1=args.lambda1,
                         lambda2=args.lambda2, predictive=predictive, mode=args.mode, lr=args.lr, seed=args.seed,
                         backend=backend)
        if "random" not in results:
            results["random"] = readout(net, "random")
        t0 = time.perf_counter()
        net.fit(Xtr, epochs=args.epochs, batch_size=args.mbs, seed=args.seed, greedy=args.greedy,
                augment=digit_views if args.data == "digits" else lpl_views, progress=True)
        name = "lpl" if predictive else "hebbian+decorrelation"
        results[name + "_seconds"] = time.perf_counter() - t0
        results[name] = readout(net, name)
    with open(os.path.join(args.out, "readout.json"), "w") as f:
        json.dump(results | {"feature_stats": stats}, f, indent=2)
    _plot_layers(results, os.path.join(args.out, "readout.png"))
    for k, v in results.items():
        print(k, [round(a, 4) for a in v] if isinstance(v, list) else round(v, 1))
    for k, v in stats.items():
        print(k, "participation ratio per layer", v["participation_ratio"], "mean activity", v["mean_activity"])
    return 0


def _plot_layers(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, accs in results.items():
        if isinstance(accs, list):
            ax.plot(range(1, len(accs) + 1), accs, marker="o", label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel("linear readout accuracy (test)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_foldiak(args):
    from ..backend import to_numpy
    from ..data import bars
    from ..data import natural_patches
    from .foldiak import FoldiakNetwork
    from ..viz import save_dictionary

    os.makedirs(args.out, exist_ok=True)
    backend = device_backend(args.device)
    if args.task == "bars":
        X, T = bars(args.n_samples or 8000, seed=args.seed)
        units, p, beta, epochs = args.units or 16, args.p or 1 / 8, args.beta or 0.02, args.epochs or 1
    else:
        # whitened, centred patches; a slower feed-forward rate averages over more inputs per unit
        X = natural_patches(args.n_samples or 20000, seed=args.seed)
        T = None
        units, p, beta, epochs = args.units or 64, args.p or 0.05, args.beta or 0.005, args.epochs or 4
    net = FoldiakNetwork(X.shape[1], units, p=p, alpha=args.alpha, beta=beta, gamma=args.gamma,
                         one_shot=args.one_shot, seed=args.seed, backend=backend)
    t0 = time.perf_counter()
    net.fit(X, epochs=epochs, batch_size=args.batch_size, warmup=200, progress=True)
    elapsed = time.perf_counter() - t0
    y = to_numpy(net.transform(X[: min(len(X), 2000)]))
    co = (y.T @ y / len(y))[~np.eye(units, dtype=bool)].mean()
    summary = {"presentations": net.n_presented, "seconds": elapsed, "mean_activity": float(y.mean()),
               "mean_coactivity": float(co), "p": p}
    if T is not None:
        best, _ = net.feature_assignment(T)
        summary["distinct_bars"] = int(len(set(best.tolist())))
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    pic = save_dictionary(to_numpy(net.Q), os.path.join(args.out, "weights.png"), shape=(8, 8),
                          title=f"Foldiak {args.task}{' one-shot' if args.one_shot else ''}")
    print(json.dumps(summary), f"picture: {pic}")
    return 0


def register(sub):
    """Add the ``lpl`` and ``foldiak`` subcommands to the top-level parser's subparsers."""
    p = sub.add_parser("lpl", formatter_class=HelpFormatter,
                       help="layer-local LPL training of a conv network and linear readout per layer")
    p.add_argument("--data", choices=["digits", "cifar10", "stl10"], default="digits")
    p.add_argument("--data-dir", default=None, help="folder with the CIFAR-10 / STL-10 files (nothing is downloaded)")
    p.add_argument("--out", default="runs/lpl")
    p.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--pools", default="mmi")
    p.add_argument("--act", default="relu", choices=["relu", "tanh", "sigmoid", "linear"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--mbs", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lambda1", type=float, default=1.0)
    p.add_argument("--lambda2", type=float, default=10.0)
    p.add_argument("--mode", choices=["pool", "positions", "mixed"], default="mixed")
    p.add_argument("--greedy", action="store_true", help="train layers one after another")
    p.add_argument("--compare", action="store_true", help="also train without the predictive term and plot both")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run_lpl)

    p = sub.add_parser("foldiak", formatter_class=HelpFormatter,
                       help="Foldiak's anti-Hebbian network on bars or natural-image patches")
    p.add_argument("--task", choices=["bars", "patches"], default="bars")
    p.add_argument("--out", default="runs/foldiak")
    p.add_argument("--units", type=int, default=None, help="default 16 (bars) or 64 (patches)")
    p.add_argument("--n-samples", type=int, default=None, help="default 8000 (bars), 20000 (patches)")
    p.add_argument("--epochs", type=int, default=None, help="default 1 (bars), 4 (patches)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--p", type=float, default=None, help="target firing probability (default 1/8 bars, 0.05 patches)")
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--beta", type=float, default=None, help="default 0.02 (bars), 0.005 (patches)")
    p.add_argument("--gamma", type=float, default=0.02)
    p.add_argument("--one-shot", action="store_true", help="no settling: the seed notebook's failure mode")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run_foldiak)
