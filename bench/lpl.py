"""LPL benchmark: one layer-local LPL step of the first VGG block, batch 256, 32x32, float32.

A step processes two views: the layer's forward convolution for each view and
the weight gradient of each view's delta (four convolution-sized products,
``4 * 2 M K C k^2`` flops with ``M = 256*32*32``), plus the LPL statistics.
Reported as time per step and as a fraction of this machine's float32 GEMM
rate measured in the same run. Layers: conv 3->64 and conv 64->64 (3x3, pad 1).

Also the DIGITS readout figure (test accuracy of a logistic regression on
globally pooled features of each layer, LPL-trained against the same network
at random initialisation).

Run: python -m bench.lpl [--backend cupy] [--quick]
"""
from __future__ import annotations

import time

import numpy as np

from bench.common import begin, finish, median_time, print_table
from sparsecoding.ops.conv import ConvOperator
from sparsecoding.plasticity.lpl import ACTIVATIONS, lpl_delta_conv


def step_time(xp, c_in, c_out, batch=256, size=32, repeats=5):
    r = np.random.default_rng(0)
    W = xp.asarray(r.standard_normal((c_out, c_in, 3, 3)) * np.sqrt(2 / (9 * c_in)), dtype=xp.float32)
    b = xp.zeros(c_out, dtype=xp.float32)
    x1 = xp.asarray(r.random((batch, c_in, size, size)), dtype=xp.float32)
    x2 = xp.asarray(r.random((batch, c_in, size, size)), dtype=xp.float32)
    f, fp = ACTIVATIONS["relu"]
    op = ConvOperator(W, (size, size), 1, 1)

    def step():
        a1 = op.forward(x1) + b.reshape(1, -1, 1, 1)
        a2 = op.forward(x2) + b.reshape(1, -1, 1, 1)
        p1, p2 = f(a1).mean(axis=(2, 3)), f(a2).mean(axis=(2, 3))
        kw = dict(mode="mixed", op=op)
        dW, db, _ = lpl_delta_conv(W, b, x2, p1, f, fp, 1, 1, a=a2, **kw)
        dW2, db2, _ = lpl_delta_conv(W, b, x1, p2, f, fp, 1, 1, a=a1, **kw)
        return dW + dW2

    t = median_time(step, repeats=repeats, xp=xp)
    flops = 4 * 2.0 * batch * size * size * c_out * c_in * 9
    return t, flops


def digits_readout(epochs):
    from sparsecoding.data import digits_split
    from sparsecoding.data.augment import digit_views
    from sparsecoding.plasticity.lpl_net import LPLConvNet
    from sparsecoding.readout import LogisticRegression

    Xtr, ytr, Xte, yte = digits_split(1300, seed=0)

    def readout(net):
        ftr, fte = net.features(Xtr, grid=1), net.features(Xte, grid=1)
        return [round(LogisticRegression(l2=1e-2).fit(a, ytr).score(b, yte), 4) for a, b in zip(ftr, fte)]

    rows = []
    for predictive in [True, False]:
        net = LPLConvNet(1, (32, 64, 128), "mmi", lr=1e-3, predictive=predictive, seed=0, mode="mixed")
        if not rows:
            rows.append({"network": "random init", "accuracy_per_layer": readout(net), "train_seconds": 0})
        t0 = time.perf_counter()
        net.fit(Xtr, epochs=epochs, batch_size=64, progress=False, augment=digit_views)
        rows.append({"network": "LPL" if predictive else "Hebbian + decorrelation (no predictive)",
                     "accuracy_per_layer": readout(net), "train_seconds": round(time.perf_counter() - t0, 1)})
    return rows


def main(argv=None):
    argv, xp, g = begin(argv)
    quick = "--quick" in argv
    rows = []
    for c_in, c_out in [(3, 64), (64, 64)]:
        t, flops = step_time(xp, c_in, c_out, batch=64 if quick else 256, repeats=3 if quick else 5)
        rows.append({"layer": f"conv {c_in}->{c_out} 3x3, 32x32", "ms_per_step": round(t * 1e3, 1),
                     "GFLOP": round(flops / 1e9, 2), "frac_gemm": round(flops / t / g, 3)})
    print_table(rows, list(rows[0]))
    readout = digits_readout(2 if quick else 10) if xp is np else []
    if readout:
        print("\nDIGITS linear readout (test accuracy, globally pooled features per layer):")
        print_table(readout, list(readout[0]))
    finish("lpl", xp, g, {"steps": rows, "digits_readout": readout})


if __name__ == "__main__":
    main()
