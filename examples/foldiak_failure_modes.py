"""Földiák's network done right, next to the two ways the seed notebook went wrong.

The seed notebook (shared/seeds/002_*) computed each output in one shot,
``y = sigmoid(C p + p - t)`` with ``p = W x``, with positive "lateral" weights and
raw, non-centred image patches in [0, 1], and got no sparse, distinct features.
This script trains four networks and saves their weight tapestries:

1. bars, one-shot output (no settling)          -> units do not split the bars
2. bars, settled to equilibrium (Földiák 1990)  -> every unit detects one bar
3. natural patches, raw and non-centred         -> every unit learns the mean patch
4. natural patches, whitened and centred        -> localised, oriented features

    python examples/foldiak_failure_modes.py [--out runs/foldiak_modes]
"""
import argparse
import json
import os

import numpy as np

from sparsecoding.data import bars, natural_patches
from sparsecoding.plasticity import FoldiakNetwork
from sparsecoding.viz import save_dictionary

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="runs/foldiak_modes")
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)

X, T = bars(8000, seed=0)
summary = {}
for name, one_shot in [("bars_one_shot", True), ("bars_settled", False)]:
    net = FoldiakNetwork(64, 16, one_shot=one_shot, seed=1)
    net.fit(X, batch_size=8, warmup=200, progress=True)
    best, _ = net.feature_assignment(T)
    y = net.transform(X[:2000])
    summary[name] = {"distinct_bars": int(len(set(best.tolist()))), "mean_activity": float(y.mean())}
    save_dictionary(net.Q, f"{args.out}/{name}.png", shape=(8, 8), title=name.replace("_", " "))

for name, kw in [("patches_raw", dict(whitened=False, centred=False)), ("patches_whitened", {})]:
    P = natural_patches(20000, seed=0, **kw)
    net = FoldiakNetwork(64, 64, p=0.05, beta=0.005, seed=1)
    net.fit(P, epochs=4, batch_size=16, warmup=500, progress=True)
    Q = np.asarray(net.Q)
    # similarity of the learned features to each other: near 1 means they all learned the same thing
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    off = np.abs(Qn @ Qn.T)[~np.eye(len(Q), dtype=bool)]
    summary[name] = {"mean_abs_feature_similarity": float(off.mean()),
                     "mean_activity": float(net.transform(P[:2000]).mean())}
    save_dictionary(Q, f"{args.out}/{name}.png", shape=(8, 8), title=name.replace("_", " "))

print(json.dumps(summary, indent=2))
with open(f"{args.out}/summary.json", "w") as f:
    json.dump(summary, f, indent=2)
