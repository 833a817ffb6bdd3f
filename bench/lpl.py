"""LPL benchmark: one layer-local LPL step of the first VGG block, batch 256, 32x32, float32.

A step (``LPLConvNet(c_in, (64,), "i").train_step(x1, x2)``, mode "mixed", ReLU, Adam)
processes two views: the layer's forward convolution for each view, the LPL
statistics over positions, and the weight gradient of each view's delta (four
convolution-sized products, ``4 * 2 M K C k^2`` flops with ``M = 256*32*32``), then
the optimiser step. On the CPU it runs the per-core, cache-sized, channels-last path
of :mod:`sparsecoding.plasticity._lpl_cpu`. Reported as time per step (median, and
the spread over the runs) and as a fraction of this machine's float32 GEMM rate
measured in the same run. Layers: conv 3->64 and conv 64->64 (3x3, pad 1). The same
step against torch autograd: ``python -m bench.peers --only lpl``.

Also the DIGITS readout figure (test accuracy of a logistic regression on
globally pooled features of each layer, LPL-trained against the same network
at random initialisation).

Run: python -m bench.lpl [--backend cupy] [--quick]
"""
from __future__ import annotations

import time

import numpy as np

from bench.common import begin, finish, median_time, print_table


def step_time(xp, c_in, c_out, batch=256, size=32, repeats=5):
    """``(median s, min s, max s, flops)`` of one layer-local step (see the module doc)."""
    from sparsecoding.plasticity.lpl_net import LPLConvNet

    r = np.random.default_rng(0)
    x1 = xp.asarray(r.random((batch, c_in, size, size)), dtype=xp.float32)
    x2 = xp.asarray(r.random((batch, c_in, size, size)), dtype=xp.float32)
    net = LPLConvNet(c_in, (c_out,), "i", mode="mixed", seed=0, backend="cupy" if xp is not np else "numpy")
    times = []

    def step():
        t0 = time.perf_counter()
        net.train_step(x1, x2)
        times.append(time.perf_counter() - t0)

    t = median_time(step, repeats=repeats, xp=xp)
    flops = 4 * 2.0 * batch * size * size * c_out * c_in * 9
    return t, min(times[1:]), max(times[1:]), flops


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
        t, lo, hi, flops = step_time(xp, c_in, c_out, batch=64 if quick else 256, repeats=3 if quick else 5)
        rows.append({"layer": f"conv {c_in}->{c_out} 3x3, 32x32", "ms_per_step": round(t * 1e3, 1),
                     "ms_min_max": f"{lo * 1e3:.0f}-{hi * 1e3:.0f}", "GFLOP": round(flops / 1e9, 2),
                     "frac_gemm": round(flops / t / g, 3)})
    print_table(rows, list(rows[0]))
    readout = digits_readout(2 if quick else 10) if xp is np else []
    if readout:
        print("\nDIGITS linear readout (test accuracy, globally pooled features per layer):")
        print_table(readout, list(readout[0]))
    finish("lpl", xp, g, {"steps": rows, "digits_readout": readout})


if __name__ == "__main__":
    main()
