"""``sparsecoding lca``: learn a dictionary on bundled data and save its picture."""
from __future__ import annotations

import csv
import json
import os
import time

import numpy as np

from ..cliutil import HelpFormatter, device_backend


def _write_history(history, path):
    if not history:
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)


def run(args):
    from ..data import load_digits, natural_images, random_crops, whiten_images
    from . import LCA, LCAConv2D, fit
    from ..viz import save_curves, save_dictionary

    os.makedirs(args.out, exist_ok=True)
    backend = device_backend(args.device)
    with open(os.path.join(args.out, "args.json"), "w") as f:
        json.dump(vars(args) | {"func": None}, f, indent=2, default=str)
    common = dict(lambda_=args.lambda_, eta=args.eta, lca_iters=args.lca_iters, tol=args.tol, solver=args.solver,
                  tau=args.tau, seed=args.seed, backend=backend, nonneg=not args.signed)
    if args.data == "photos":
        images = natural_images(downsample=args.downsample)
        if not args.no_whiten:
            images = whiten_images(images)
        X = random_crops(images, args.crop, args.n_samples, seed=args.seed)
        layer = LCAConv2D(args.features, 3, args.kernel_size, args.stride, **common)
        shape = None
    else:
        X, _ = load_digits()
        X = X.reshape(len(X), -1)
        layer = LCA(args.features, X.shape[1], **common)
        shape = (8, 8)
    t0 = time.perf_counter()
    history = fit(layer, X, n_epochs=args.epochs, batch_size=args.batch_size,
                  checkpoint=os.path.join(args.out, "checkpoint.npz"), checkpoint_every=args.checkpoint_every,
                  resume=not args.no_resume, seed=args.seed, progress=not args.quiet, max_steps=args.steps)
    elapsed = time.perf_counter() - t0
    np.save(os.path.join(args.out, "weights.npy"), layer.get_weights())
    _write_history(history, os.path.join(args.out, "history.csv"))
    pic = save_dictionary(layer.weights, os.path.join(args.out, "dictionary.png"), shape=shape,
                          title=f"{args.data}: {args.features} atoms after {len(history)} steps")
    save_curves({"energy": [h["energy"] for h in history]}, os.path.join(args.out, "energy.png"),
                ylabel="energy per sample", title="dictionary learning")
    last = history[-1]
    print(f"{len(history)} steps in {elapsed:.1f} s; energy {last['energy']:.4g}, "
          f"fraction active {last['frac_active']:.3f}; dictionary picture: {pic}")
    return 0


def register(sub):
    """Add the ``lca`` subcommand to the top-level parser's subparsers."""
    p = sub.add_parser("lca", formatter_class=HelpFormatter, help="learn an LCA dictionary on bundled data and save its picture")
    p.add_argument("--data", choices=["photos", "digits"], default="photos",
                   help="photos: RGB crops of scikit-image's photographs (conv); digits: scikit-learn's digits (dense)")
    p.add_argument("--out", default="runs/lca")
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--kernel-size", type=int, default=9)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--crop", type=int, default=32)
    p.add_argument("--downsample", type=int, default=2, help="block-average the photographs by this factor")
    p.add_argument("--no-whiten", action="store_true", help="skip the 1/f whitening filter of the photographs")
    p.add_argument("--n-samples", type=int, default=20000)
    p.add_argument("--lambda", dest="lambda_", type=float, default=0.25)
    p.add_argument("--eta", type=float, default=0.1)
    p.add_argument("--tau", type=float, default=100)
    p.add_argument("--solver", choices=["lca", "fista"], default="fista")
    p.add_argument("--lca-iters", type=int, default=60)
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--signed", action="store_true", help="signed codes (default non-negative)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps", type=int, default=300, help="stop after this many dictionary steps")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, gpu or a GPU index")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)
    return p
