"""Convolution pair (conv + conv_transpose) on the LCA workload, per engine.

Workload (DESIGN.md §9): N=128, C=3, 32x32, K=64 features 9x9, stride 2,
"same" padding, float32; codes in PyTorch's channels-first layout and in the
channels-last layout the iterative solvers keep on the CPU (where the GEMM
produces it and two transposes per pair are saved). Useful flops of the pair: 4*M*K*C*k^2, M = N*16*16.
Rates are reported as a fraction of this machine's float32 GEMM rate measured
in the same run. Also a sweep over kernel sizes and strides to validate the
``auto`` cost model's crossover.

Run: python -m bench.conv [--backend cupy]
"""
from __future__ import annotations


import numpy as np

from bench.common import begin, finish, median_time, print_table
from sparsecoding.ops.conv import ConvOperator, choose_method


def pair_time(xp, n, c, size, k_feats, k, stride, method, repeats=5, channels_last=False):
    r = np.random.default_rng(0)
    x = xp.asarray(r.standard_normal((n, c, size, size)), dtype="float32")
    w = xp.asarray(r.standard_normal((k_feats, c, k, k)), dtype="float32")
    op = ConvOperator(w, (size, size), stride, "same", method=method,
                      code_layout="channels_last" if channels_last else "channels_first")
    y = op.forward(x)

    def pair():
        op.forward(x)
        op.adjoint(y)

    t = median_time(pair, repeats=repeats, xp=xp)
    m = n * int(np.prod(op.geometry.out_shape))
    flops = 4.0 * m * k_feats * c * k * k
    return t, flops, op


def main(argv=None):
    argv, xp, g = begin(argv)
    rows = []
    for method in ["im2col", "fft"]:
        for cl in [False, True]:
            t, flops, op = pair_time(xp, 128, 3, 32, 64, 9, 2, method, repeats=9, channels_last=cl)
            rows.append({"workload": "lca N128 C3 32x32 K64 k9 s2", "method": method,
                         "code_layout": "channels-last (solver)" if cl else "channels-first (PyTorch)",
                         "ms": round(t * 1e3, 2), "GFLOP/s(useful)": round(flops / t / 1e9, 1),
                         "frac_gemm": round(flops / t / g, 3)})
    print_table(rows, list(rows[0]))
    best = max(r["frac_gemm"] for r in rows)
    print(f"best engine reaches {best:.2f} x the GEMM rate (target >= 0.40)")

    sweep = []
    for k in [1, 3, 5, 7, 9, 11]:
        for stride in [1, 2]:
            times = {m: pair_time(xp, 64, 3, 32, 64, k, stride, m, repeats=3)[0] for m in ["im2col", "fft"]}
            _, _, op = pair_time(xp, 1, 3, 32, 64, k, stride, "im2col", repeats=1)
            chosen = choose_method(op.geometry)
            faster = min(times, key=times.get)
            sweep.append({"k": k, "stride": stride, "im2col_ms": round(times["im2col"] * 1e3, 2),
                          "fft_ms": round(times["fft"] * 1e3, 2), "faster": faster, "auto": chosen,
                          "auto_loss": round(times[chosen] / times[faster], 2)})
    print("\ncost-model validation (N=64, C=3, 32x32, K=64, 'same'):")
    print_table(sweep, list(sweep[0]))
    finish("conv", xp, g, {"lca_pair": rows, "sweep": sweep})


if __name__ == "__main__":
    main()
