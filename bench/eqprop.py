"""EqProp benchmark: time per relaxation step and EP-gradient cost at equal quality.

(a) Per synchronous relaxation step, float32, batch 128:
    - seed 001's CIFAR-10 network: channels 3-64-128-256-512, 3x3, pools mmmm, paddings 1,
      fc 10, softmax readout, my_hard_sig;
    - an MNIST-sized CNN: 1-32-64, 5x5, pools mm, padding 1, fc 10.
    Useful flops per step: the forward convolution of every layer and the transposed
    convolution of every layer but the first; reported as a fraction of this machine's
    float32 GEMM rate measured in the same run (useful: the first layer's forward counted every
    step, as the autograd reference computes it; executed: it is computed once per phase here),
    and against the bare GEMMs of the same shapes (the bound for im2col at these shapes: thin
    GEMMs run below the square rate). Reference: the autograd PyTorch implementation took 568 ms
    and 70 ms per step on a 2-core AMD EPYC, 234 ms and 27 ms on a 2-core AVX-512 Xeon (issue 15);
    ``python -m bench.peers --only eqprop`` times it side by side on the machine at hand. The
    engine of each layer (im2col or Winograd, measured per machine: sparsecoding.ops.autotune)
    is printed.

(b) One training batch's EP gradient: the reference schedule (T1=250, T2=50, third phase,
    synchronous) against the asynchronous schedule with convergence-based stopping
    (tol on the largest state change), all compared by cosine similarity with the EP
    gradient after a 1,000-step free phase and 200-step nudged phases run asynchronously
    to convergence (MNIST-sized network unless --full).

Run: python -m bench.eqprop [--backend cupy] [--full] [--quick]
"""
from __future__ import annotations

import time

import numpy as np

from bench.common import begin, finish, median_time, print_table
from sparsecoding.backend import to_numpy
from sparsecoding.eqprop import ConvEBM

CIFAR = dict(in_size=32, channels=[3, 64, 128, 256, 512], kernels=[3] * 4, strides=[1] * 4, paddings=[1] * 4,
             pools="mmmm", fc=[10], softmax=True, loss="cel")
MNIST = dict(in_size=28, channels=[1, 32, 64], kernels=[5, 5], strides=[1, 1], paddings=[1, 1], pools="mm", fc=[10],
             softmax=False, loss="mse")


def useful_flops(net, batch, first_forward=True):
    """Forward convolution of every layer and transposed convolution of every layer but the first
    (DESIGN.md §9); ``first_forward=False`` drops the first layer's forward, which reads the
    static input and is computed once per phase rather than every step."""
    total = 0.0
    for k in range(net.n_conv):
        W = net.params[k][0]
        out = np.prod(net.conv_out_shapes[k])
        f = 2.0 * batch * out * W.shape[0] * np.prod(W.shape[1:])
        total += (f if first_forward else 0.0) if k == 0 else 2 * f
    for k in range(net.n_conv, len(net.params)):
        total += 4.0 * batch * np.prod(net.params[k][0].shape)
    return total


def gemm_bound(xp, net, batch, repeats=3):
    """Seconds that the bare GEMMs of one step take at their own shapes: for each conv layer the
    forward ``(N*M, C*J) x (C*J, K)`` and (all but the first) the adjoint ``(N*M, K) x (K, C*J)``
    with full-batch operands. Thin GEMMs (K or C*J ~ 64) run well below the square GEMM rate;
    this is the bound for an im2col implementation at these shapes."""
    r = np.random.default_rng(0)
    total = 0.0
    for k in range(net.n_conv):
        W = net.params[k][0]
        m = batch * int(np.prod(net.conv_out_shapes[k]))
        cj, kk = int(np.prod(W.shape[1:])), W.shape[0]
        a = xp.asarray(r.standard_normal((m, cj)), dtype=xp.float32)
        w = xp.asarray(r.standard_normal((cj, kk)), dtype=xp.float32)
        if k > 0:  # the first layer's forward reads the static input: computed once per phase
            total += median_time(lambda: a @ w, repeats=repeats, xp=xp)
            y = xp.asarray(r.standard_normal((m, kk)), dtype=xp.float32)
            total += median_time(lambda: y @ w.T, repeats=repeats, xp=xp)
    return total


def step_time(xp, cfg, batch=128, repeats=5, steps=5):
    """Median time per step of a ``steps``-step relaxation (one-off input term amortised)."""
    net = ConvEBM(**cfg, activation="my_hard_sig", seed=0, backend="numpy" if xp is np else "cupy")
    r = np.random.default_rng(0)
    x = xp.asarray(r.uniform(0, 1, (batch, cfg["channels"][0], cfg["in_size"], cfg["in_size"])), dtype=xp.float32)
    s = net.relax(x, net.init_states(batch), 3).state
    t = median_time(lambda: net.relax(x, s, steps), repeats=repeats, xp=xp) / steps
    return net, t, useful_flops(net, batch), useful_flops(net, batch, first_forward=False)


def cosine(a, b):
    va = np.concatenate([to_numpy(g).ravel() for pair in a for g in pair])
    vb = np.concatenate([to_numpy(g).ravel() for pair in b for g in pair])
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb) + 1e-30))


def gradient_quality(xp, cfg, batch, quick):
    net = ConvEBM(**cfg, activation="my_hard_sig", seed=0, backend="numpy" if xp is np else "cupy")
    r = np.random.default_rng(1)
    x = xp.asarray(r.uniform(0, 1, (batch, cfg["channels"][0], cfg["in_size"], cfg["in_size"])), dtype=xp.float32)
    y = r.integers(0, 10, batch)
    # the gold standard: phases run to convergence (asynchronous updates settle to the fixed point;
    # synchronous updates of a layered network can end in a period-2 cycle instead)
    gold = net.ep_gradients(x, y, 1000 if not quick else 400, 200, (0.0, 0.5), third_phase=True, schedule="async")
    rows = []
    setups = [("reference: sync, T1=250, T2=50", dict(T1=250, T2=50, schedule="sync", tol=None)),
              ("async, T1=250, T2=50", dict(T1=250, T2=50, schedule="async", tol=None)),
              ("sync + stop at tol 1e-4", dict(T1=250, T2=50, schedule="sync", tol=1e-4)),
              ("async + stop at tol 1e-4", dict(T1=250, T2=50, schedule="async", tol=1e-4)),
              ("async + stop at tol 1e-3", dict(T1=250, T2=50, schedule="async", tol=1e-3))]
    for name, kw in setups:
        t0 = time.perf_counter()
        g = net.ep_gradients(x, y, kw["T1"], kw["T2"], (0.0, 0.5), third_phase=True, schedule=kw["schedule"],
                                tol=kw["tol"])
        if xp is not np:
            xp.cuda.Device().synchronize()
        rows.append({"schedule": name, "seconds": round(time.perf_counter() - t0, 2),
                     "cosine_to_gold": round(cosine(g, gold), 4)})
    base = rows[0]["seconds"]
    for row in rows:
        row["speedup"] = round(base / row["seconds"], 2)
    return rows


def main(argv=None):
    argv, xp, g = begin(argv)
    quick, full = "--quick" in argv, "--full" in argv
    rows = []
    for name, cfg, ref_ms in [("MNIST CNN 1-32-64 5x5", MNIST, 70), ("CIFAR CNN 64-128-256-512", CIFAR, 568)]:
        net, t, flops, executed = step_time(xp, cfg, repeats=3 if quick else 5)
        bound = gemm_bound(xp, net, 128)
        rows.append({"network": name,
                     "engines": ",".join(net._op(k).engine.replace("-native", "") for k in range(net.n_conv)),
                     "ms_per_step": round(t * 1e3, 1), "useful_GFLOP": round(flops / 1e9, 2),
                     "executed_GFLOP": round(executed / 1e9, 2), "frac_gemm_useful": round(flops / t / g, 3),
                     "frac_gemm_executed": round(executed / t / g, 3),
                     "bare_gemm_ms": round(bound * 1e3, 1), "frac_of_bare_gemm": round(bound / t, 3),
                     "reference_ms": ref_ms, "vs_reference": round(ref_ms / (t * 1e3), 2)})
    print_table(rows, list(rows[0]))
    quality = gradient_quality(xp, CIFAR if full else MNIST, 128 if full else 64, quick)
    print(f"\nEP gradient of one batch ({'CIFAR' if full else 'MNIST-sized'} network), third phase, beta 0.5:")
    print_table(quality, list(quality[0]))
    finish("eqprop", xp, g, {"steps": rows, "gradient_quality": quality})


if __name__ == "__main__":
    main()
