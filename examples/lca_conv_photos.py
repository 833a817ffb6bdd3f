"""Convolutional dictionary learning with LCA on RGB crops of bundled photographs.

The photographs ship with scikit-image (nothing is downloaded). They are
block-averaged by 2, whitened with Olshausen & Field's 1/f filter, and cut
into 32x32 crops, each standardised to zero mean and unit variance. A 64-atom
9x9 stride-2 dictionary is learned with lca-pytorch's built-in update rule;
the atoms come out as oriented, localised, Gabor-like edges and colour blobs.

    python examples/lca_conv_photos.py [--steps 300] [--out runs/lca_photos]
"""
import argparse
import time

from sparsecoding.data import natural_images, random_crops, whiten_images
from sparsecoding.lca import LCAConv2D, fit
from sparsecoding.viz import save_curves, save_dictionary

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=300)
parser.add_argument("--out", default="runs/lca_photos")
args = parser.parse_args()

images = whiten_images(natural_images(downsample=2))
X = random_crops(images, 32, 20000, seed=0)
layer = LCAConv2D(out_neurons=64, in_neurons=3, kernel_size=9, stride=2, lambda_=0.25, eta=0.1,
                  solver="fista", lca_iters=60, tol=1e-3, seed=0)
t0 = time.perf_counter()
history = fit(layer, X, batch_size=32, max_steps=args.steps, checkpoint=f"{args.out}/checkpoint.npz")
print(f"{len(history)} steps in {time.perf_counter() - t0:.0f} s, final energy {history[-1]['energy']:.2f}")
save_dictionary(layer.weights, f"{args.out}/dictionary.png", title="LCA, whitened photographs, 64 atoms 9x9")
save_curves({"energy per crop": [h["energy"] for h in history]}, f"{args.out}/energy.png")
