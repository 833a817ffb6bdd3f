"""Ground-truth recovery: learn a convolutional dictionary from synthetic data with a known one.

Signals are sparse codes convolved with 4 random (Hann-tapered) atoms of length 9, plus
white noise (``sparsecoding.data.sparse_conv_data``: 128 signals of length 64, 2% code
density, noise 0.01). An ``LCAConv1D`` with 6 atoms, initialised from data patches
(``init_from_patches``), learns with lca-pytorch's rule and a decaying rate; the
``DictionaryHealth`` callback adds per-epoch columns (usage, dead atoms, coherence and the
fraction of true atoms recovered to |cosine| >= 0.99 at the best relative shift) to the
fit's history. The figure shows each true atom over its best-matching learned atom and the
recovery over the epochs.

    python examples/recovery.py [--epochs 20] [--seed 14] [--out runs/recovery]
"""
import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sparsecoding.data import sparse_conv_data  # noqa: E402
from sparsecoding.lca import (DictionaryHealth, LCAConv1D, cross_correlation, init_from_patches,  # noqa: E402
                              match_atoms, mutual_coherence)

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--seed", type=int, default=14)
parser.add_argument("--n", type=int, default=128, help="number of signals")
parser.add_argument("--out", default="runs/recovery")
args = parser.parse_args()

X, D, _ = sparse_conv_data(args.n, 64, n_atoms=4, kernel_size=9, density=0.02, noise=0.01, seed=args.seed,
                           dtype="float32")
layer = LCAConv1D(6, 1, kernel_size=9, lambda_=0.1, eta=4.0, lca_iters=100, solver="fista", tol=1e-3,
                  input_zero_mean=False, input_unit_var=False, lr_schedule=lambda t: 4.0 * 30 / (30 + t))
init_from_patches(layer, X, seed=args.seed)
best0, _ = match_atoms(D, layer.get_weights())
mean_cos = [float(best0.mean())]
health = DictionaryHealth(layer, true_dictionary=D)
t0 = time.perf_counter()
history = layer.fit(X, epochs=args.epochs, batch_size=32, seed=0, progress=False,
                    callbacks=[health, lambda r: mean_cos.append(float(match_atoms(D, layer.get_weights())[0].mean()))])
best, idx = match_atoms(D, layer.get_weights())
print(f"{args.epochs} epochs in {time.perf_counter() - t0:.1f} s; recovery per epoch {history.column('recovery')}")
print(f"final: {history[-1]['recovery']:.2f} of the true atoms recovered (|cos| >= 0.99); best |cos| per atom "
      f"{np.round(best, 4).tolist()}; coherence {history[-1]['coherence']:.3f} (truth {mutual_coherence(D):.3f}); "
      f"dead atoms {history[-1]['dead_atoms']}")
os.makedirs(args.out, exist_ok=True)
history.to_csv(os.path.join(args.out, "history.csv"))

W = layer.get_weights()
fig, axes = plt.subplots(1, len(D) + 1, figsize=(3.2 * (len(D) + 1), 3))
for i, ax in enumerate(axes[:-1]):
    j = idx[i]
    Xc = cross_correlation(D[i:i + 1], W[j:j + 1] / np.linalg.norm(W[j]))[0, 0]
    m = int(np.argmax(np.abs(Xc)))
    t = m - (W.shape[2] - 1)  # best shift: true[x] ~ sign * learned[x - t]
    sign = np.sign(Xc[m])
    x = np.arange(D.shape[2])
    ax.plot(x, D[i, 0], "k-", lw=2, label="true")
    ax.plot(np.arange(W.shape[2]) + t, sign * W[j, 0] / np.linalg.norm(W[j]), "r--", lw=1.5,
            label=f"learned #{j}")
    ax.set_title(f"atom {i}: |cos| = {best[i]:.4f}")
    ax.set_xlim(min(0, t) - 0.5, max(D.shape[2], t + W.shape[2]) - 0.5)
    ax.legend(fontsize=7)
ax = axes[-1]
epochs = np.arange(len(mean_cos))
ax.plot(epochs[1:], history.column("recovery"), "o-", label="recovered (|cos| >= 0.99)")
ax.plot(epochs, mean_cos, "s-", label="mean best |cos|")
ax.set_xlabel("epoch")
ax.set_ylim(0, 1.05)
ax.set_title("recovery over epochs")
ax.legend(fontsize=7, loc="lower right")
fig.tight_layout()
path = os.path.join(args.out, "recovery.png")
fig.savefig(path, dpi=110)
print(f"figure: {path}")
