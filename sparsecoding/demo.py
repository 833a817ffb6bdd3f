"""``sparsecoding demo``: a convolutional LCA dictionary on the bundled photographs in about a minute.

Learns 32 RGB atoms 9x9 (stride 2, "same", non-negative codes, FISTA to a 1e-3 duality gap) on
32x32 crops of scikit-image's photographs (2x downsampled, 1/f whitened, standardised per crop),
with a progress bar, then writes to ``--out`` (default ``runs/demo``):

* ``features.png``: the learned atoms (sparsecoding.viz.plot_features);
* ``reconstruction.png``: four crops, their reconstructions ``Phi^T a`` and the residuals, each
  labelled with the relative error (sparsecoding.viz.plot_reconstruction);
* ``energy.png``: the energy per sample and the fraction of active units of each dictionary step
  (sparsecoding.viz.plot_history of the per-step records);
* ``model.npz``: the learned layer (``sparsecoding.save``; ``sparsecoding.load`` reads it back, and
  ``sparsecoding lca encode --model <folder>`` codes new images with it),

and prints where they are. Nothing is downloaded; the photographs come with scikit-image.
"""
from __future__ import annotations

import os
import time

import numpy as np

from .cliutil import HelpFormatter, nonnegative_int, one_line_errors, positive_int, writable_dir


def run(args):
    from .data import natural_images, random_crops, whiten_images
    from .io import save
    from .lca import LCAConv2D
    from .viz import plot_features, plot_history, plot_reconstruction

    writable_dir(args.out, "--out")
    t0 = time.perf_counter()
    X = random_crops(whiten_images(natural_images(downsample=2)), 32, args.n_samples, seed=args.seed)
    layer = LCAConv2D(args.features, 3, kernel_size=9, stride=2, lambda_=0.25, eta=0.1, solver="fista",
                      lca_iters=60, tol=1e-3, seed=args.seed)
    batch = min(32, len(X))
    epochs = -(-args.steps // max(1, len(X) // batch))
    history = layer.fit(X, epochs=epochs, batch_size=batch, seed=args.seed, max_steps=args.steps,
                        progress=not args.quiet, record_steps=True)
    steps = history.steps
    model = save(layer, os.path.join(args.out, "model.npz"))
    features = os.path.join(args.out, "features.png")
    plot_features(layer.weights, title=f"{args.features} atoms {layer.weights.shape[2]}x{layer.weights.shape[3]} "
                                       f"after {len(steps)} dictionary steps", path=features)
    s = layer.preprocess(X[:4])
    out = layer.solve(s)
    recon = os.path.join(args.out, "reconstruction.png")
    plot_reconstruction(s, out["recons"], n_samples=4, path=recon,
                        title="LCA codes of whitened crops: input x, reconstruction x^ = Phi^T a, residual x - x^")
    energy = os.path.join(args.out, "energy.png")
    plot_history(history, steps=True, keys=("energy", "frac_active"), path=energy,
                 labels={"energy": "1/2 ||s - Phi^T a||^2 + lambda ||a||_1", "frac_active": "fraction of active units"},
                 title="dictionary learning: energy per sample and sparsity of each batch before its step")
    active = float(np.mean(np.asarray(out["acts"]) != 0))
    m = max(1, min(10, len(steps) // 2))  # single batches vary (+-30% here): compare means of m steps
    first, last = (float(np.mean([h["energy"] for h in part])) for part in (steps[:m], steps[-m:]))
    print(f"{len(steps)} dictionary steps in {time.perf_counter() - t0:.0f} s; energy per sample "
          f"{first:.1f} -> {last:.1f} (means of the first and last {m} steps; the progress bar shows the running "
          f"mean of the epoch), "
          f"fraction active {active:.3f} (the 4 crops of the reconstruction picture)\n"
          f"features: {features}\nreconstruction: {recon}\nenergy curve: {energy}\nmodel: {model}")
    return 0


def register(sub):
    """Add the ``demo`` subcommand to the top-level parser's subparsers."""
    p = sub.add_parser("demo", formatter_class=HelpFormatter, description=__doc__,
                       help="learn a convolutional dictionary on the bundled photographs in about a minute")
    one_line_errors(p)
    a = p.add_argument
    a("--out", default="runs/demo", help="folder for the pictures")
    a("--features", type=positive_int, default=32, help="number of atoms")
    a("--steps", type=positive_int, default=120, help="dictionary steps (batches of 32 crops)")
    a("--n-samples", type=positive_int, default=4096, help="32x32 crops drawn from the photographs")
    a("--seed", type=nonnegative_int, default=0, help="seed of the crops, the dictionary and the batch order")
    a("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p
