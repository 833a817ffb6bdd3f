"""LPL's two-dimensional toy experiment: one linear neuron, a slow feature and a noisy one.

The x-component of the input is a cluster centre (+-1) that persists between
consecutive frames; the y-component is fresh noise of growing standard
deviation sigma. LPL (predictive + Hebbian) stays selective for x at every
sigma; Hebbian-only plasticity follows the direction of largest variance (y
once sigma > 1); predictive-only plasticity collapses (the weights decay to 0).

    python examples/lpl_toy.py [--out runs/lpl_toy]
"""
import argparse
import os

import numpy as np

from sparsecoding.plasticity.lpl import toy_selectivity

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="runs/lpl_toy")
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)

sigmas = np.linspace(0.25, 4.0, 12)
curves = {}
for variant in ["lpl", "hebbian", "predictive"]:
    sel, norm = [], []
    for s in sigmas:
        v, w = toy_selectivity(s, variant)
        sel.append(v)
        norm.append(np.linalg.norm(w))
    curves[variant] = (np.array(sel), np.array(norm))
    print(f"{variant:10s} selectivity for x: " + " ".join(f"{v:.2f}" for v in sel))
    print(f"{'':10s} |w|:                " + " ".join(f"{n:.2g}" for n in norm))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
for name, (sel, norm) in curves.items():
    axes[0].plot(sigmas, sel, marker="o", label=name)
    axes[1].semilogy(sigmas, norm, marker="o", label=name)
axes[0].set_xlabel("sigma of the fast noise (y)")
axes[0].set_ylabel("selectivity |w_x| / (|w_x| + |w_y|)")
axes[1].set_xlabel("sigma of the fast noise (y)")
axes[1].set_ylabel("|w| after training")
axes[0].legend()
fig.tight_layout()
fig.savefig(f"{args.out}/toy.png")
print(f"picture: {args.out}/toy.png")
