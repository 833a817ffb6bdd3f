"""Fully connected LCA dictionary learning on scikit-learn's bundled handwritten digits.

The seed's "MNIST fully connected" example on data that ships with a package:
8x8 digits, 128 atoms, a dense ``LCA`` layer (which lca-pytorch lacks), trained
with the closed-form dictionary gradient and ``sparsecoding.optim.SGD``.

    python examples/lca_dense_digits.py [--epochs 30] [--out runs/lca_digits]
"""
import argparse

from sparsecoding.data import load_digits
from sparsecoding.lca import LCA, fit
from sparsecoding.optim import SGD
from sparsecoding.viz import save_dictionary

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--out", default="runs/lca_digits")
args = parser.parse_args()

X, _ = load_digits()
X = X.reshape(len(X), -1)
layer = LCA(out_neurons=128, in_neurons=64, lambda_=0.5, solver="fista", lca_iters=300, tol=1e-4, seed=0)
opt = SGD([layer.weights], lr=0.5, momentum=0.9)
history = fit(layer, X, n_epochs=args.epochs, batch_size=64, optimizer=opt)
print(f"final energy {history[-1]['energy']:.3f}, fraction active {history[-1]['frac_active']:.3f}")
save_dictionary(layer.weights, f"{args.out}/dictionary.png", shape=(8, 8), title="dense LCA on digits, 128 atoms")
