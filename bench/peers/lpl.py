"""One layer-local LPL step against torch autograd of the same loss (issue 15).

The work, for one 3x3 conv layer (padding 1, ReLU), a batch of ``B`` images seen in
two views ``x1``, ``x2`` (``mode="mixed"``, :class:`~sparsecoding.plasticity.lpl_net.LPLConvNet`'s
default; ``B`` = 256, 32x32 inputs as in ``bench/lpl.py``, float32)::

    a_v = conv(x_v, W) + b,  z_v = relu(a_v),  p_v = mean over positions of z_v   (B, M)
    L_v = L_pred(p_v, SG[p_other]) + lambda1 L_hebb(z_v) + lambda2 L_dec(z_v)
    loss = (L_1 + L_2) / 2,  then one Adam step on (W, b)

with the Hebbian and decorrelation losses over every position as a sample
(``B * 32 * 32`` rows of ``M`` = 64 channels) and the predictive loss on the pooled
features (DESIGN.md §7, lambda1 = 1, lambda2 = 10, eps = 1e-4). Ours:
``LPLConvNet(c_in, (64,), "i").train_step(x1, x2)`` (the three loss values come back
too); the peer: the same loss written in torch (channels-first tensors, as a user
would write it), ``loss.backward()`` and ``torch.optim.Adam.step()``, torch threads =
the cores. Before timing, the gradient both sides apply is compared once (our
``-delta`` against torch's ``W.grad`` / ``b.grad``, and both against torch in float64),
so the two sides do the same work. Layers: 3 -> 64 and 64 -> 64. The note gives each side's
spread over the timed runs and its median CPU seconds per step (all threads).
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np

from bench.peers.common import optional, row

LAMBDA1, LAMBDA2, EPS = 1.0, 10.0, 1e-4


def _torch_loss(torch, W, b, x1, x2):
    F = torch.nn.functional

    def one(z, p, target):
        n, m = z.shape[:2]
        l_pred = 0.5 * ((p - target) ** 2).sum() / (m * n)
        flat = z.permute(0, 2, 3, 1).reshape(-1, m)
        zc = flat - flat.mean(0, keepdim=True)
        cov = zc.T @ zc / (flat.shape[0] - 1)
        var = torch.diagonal(cov)
        l_hebb = -torch.log(var + EPS).sum() / m
        off = cov - torch.diag(var)
        l_dec = (off * off).sum() / (m * m - m)
        return l_pred + LAMBDA1 * l_hebb + LAMBDA2 * l_dec

    z1 = torch.relu(F.conv2d(x1, W, b, padding=1))
    z2 = torch.relu(F.conv2d(x2, W, b, padding=1))
    p1, p2 = z1.mean((2, 3)), z2.mean((2, 3))
    return 0.5 * (one(z2, p2, p1.detach()) + one(z1, p1, p2.detach()))


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def run(*, repeats=3, quick=False):
    from sparsecoding.plasticity.lpl_net import LPLConvNet

    torch = optional("torch")
    if torch is not None:
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    batch, size = (64, 32) if quick else (256, 32)
    rows = []
    for c_in, c_out in [(64, 64), (3, 64)]:
        r = np.random.default_rng(0)
        x1 = r.random((batch, c_in, size, size), dtype=np.float32)
        x2 = r.random((batch, c_in, size, size), dtype=np.float32)
        net = LPLConvNet(c_in, (c_out,), "i", lambda1=LAMBDA1, lambda2=LAMBDA2, eps=EPS, mode="mixed", seed=0)
        W0, b0 = net.params[0][0].copy(), net.params[0][1].copy()
        note = ""
        fns = {"ours": lambda: net.train_step(x1, x2)}
        if torch is not None:
            def grads(dtype):
                W = torch.tensor(W0, dtype=dtype, requires_grad=True)
                b = torch.tensor(b0, dtype=dtype, requires_grad=True)
                _torch_loss(torch, W, b, torch.tensor(x1, dtype=dtype), torch.tensor(x2, dtype=dtype)).backward()
                return W.grad.numpy().astype(np.float64), b.grad.numpy().astype(np.float64)

            gW64, gb64 = grads(torch.float64)
            gW32, gb32 = grads(torch.float32)
            (_, dW, db), = net._gradients(x1, x2, [0])
            note = (f"grad rel. err. ours vs torch f32 {_rel(dW, gW32):.1e} (b {_rel(db, gb32):.1e}); "
                    f"vs f64: ours {_rel(dW, gW64):.1e}, torch f32 {_rel(gW32, gW64):.1e}")
            Wt = torch.tensor(W0, requires_grad=True)
            bt = torch.tensor(b0, requires_grad=True)
            opt = torch.optim.Adam([Wt, bt], lr=1e-3)
            tx1, tx2 = torch.from_numpy(x1), torch.from_numpy(x2)

            def peer():
                opt.zero_grad(set_to_none=True)
                _torch_loss(torch, Wt, bt, tx1, tx2).backward()
                opt.step()

            fns["peer"] = peer
        # interleaved as common.interleaved, keeping every run: the spread (min-max) shows how stable
        # the time is, and the process CPU seconds (both threads) compare the sides on a loaded machine
        runs = {k: [] for k in fns}
        cpu = {k: [] for k in fns}
        for fn in fns.values():
            fn()
        for _ in range(repeats):
            for k, fn in fns.items():
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                runs[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
        med = {k: statistics.median(v) for k, v in runs.items()}
        spread = "; ".join(f"{k} {min(v) * 1e3:.0f}-{max(v) * 1e3:.0f} ms, CPU {statistics.median(cpu[k]):.2f} s"
                           for k, v in runs.items())
        rows.append(row(f"LPL layer-local step, {c_in}->{c_out} 3x3, B={batch} {size}x{size}, two views",
                        "LPLConvNet.train_step", med["ours"], "torch autograd + Adam", med.get("peer"), target=1.5,
                        note=f"{note}; spread {spread}"))
    return rows
