"""EqProp relaxation step against the EqProp reference code (issue 15).

The reference (seed 001, reworked from Laborieux et al.'s Equilibrium-Propagation code):
``P_CNN.Phi`` builds the primitive function with torch modules,
``Phi = sum_conv <pool(conv(s_{k-1}) + b), s_k> + sum_fc <W s_{k-1} + b, s_k>`` (with
``softmax`` the last fc layer is a readout outside Phi), and each step of ``P_CNN.forward``
takes ``torch.autograd.grad(Phi, states)`` and sets ``s_k = sigma(dPhi/ds_k)``
(``my_hard_sig``; free phase, beta = 0). It is reproduced here line for line with
``torch.nn.Conv2d`` / ``MaxPool2d(2, 2)`` / ``Linear`` holding our network's weights.

Networks (batch 128, float32):

* seed 001's CIFAR-10 command: ``--channels 64 128 256 512 --kernels 3 3 3 3 --pools mmmm
  --strides 1 1 1 1 --paddings 1 1 1 1 --fc 10 --softmax --act my_hard_sig --loss cel``
  (input 3x32x32);
* the MNIST-sized CNN of bench/eqprop.py: 1-32-64, 5x5, padding 1, pools mm, fc 10, mse.

Ours: :class:`sparsecoding.eqprop.ConvEBM`, the time per step of a 5-step relaxation
(``relax``: public channels-first states in and out, as bench/eqprop.py times it); the
reference: the time per step of 5 autograd steps. Both sides are checked once, untimed, to
compute the same new states from the same states. Target: ratio >= 1.5.
"""
from __future__ import annotations

import numpy as np

from bench.peers.common import interleaved, optional, row

CIFAR = dict(in_size=32, channels=[3, 64, 128, 256, 512], kernels=[3] * 4, strides=[1] * 4, paddings=[1] * 4,
             pools="mmmm", fc=[10], softmax=True, loss="cel")
MNIST = dict(in_size=28, channels=[1, 32, 64], kernels=[5, 5], strides=[1, 1], paddings=[1, 1], pools="mm",
             fc=[10], softmax=False, loss="mse")
STEPS = 5


def reference_net(torch, net, cfg):
    """The reference ``P_CNN`` step with our network's weights: ``step(x, neurons) -> neurons``."""
    nn, F = torch.nn, torch.nn.functional
    convs = []
    for k in range(net.n_conv):
        W, b = net.params[k]
        m = nn.Conv2d(cfg["channels"][k], cfg["channels"][k + 1], cfg["kernels"][k], stride=cfg["strides"][k],
                      padding=cfg["paddings"][k], bias=True)
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(np.asarray(W)))
            m.bias.copy_(torch.from_numpy(np.asarray(b)))
        convs.append(m)
    fcs = []
    for k in range(net.n_conv, len(net.params)):
        W, b = net.params[k]
        m = nn.Linear(W.shape[1], W.shape[0], bias=True)
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(np.asarray(W)))
            m.bias.copy_(torch.from_numpy(np.asarray(b)))
        fcs.append(m)
    synapses = convs + fcs
    pools = [nn.MaxPool2d(2, stride=2) if p == "m" else nn.Identity() for p in cfg["pools"]]
    conv_len, tot_len = len(convs), len(synapses)
    softmax = cfg["softmax"]

    def activation(v):  # the reference's my_hard_sig: (1 + hardtanh(x - 1)) / 2 = clip(x / 2, 0, 1)
        return (1 + F.hardtanh(v - 1)) * 0.5

    def phi(x, neurons):
        mbs = x.size(0)
        layers = [x] + neurons
        val = 0.0
        for idx in range(conv_len):
            val += torch.sum(pools[idx](synapses[idx](layers[idx])) * layers[idx + 1], dim=(1, 2, 3)).squeeze()
        last = tot_len - 1 if softmax else tot_len
        for idx in range(conv_len, last):
            val += torch.sum(synapses[idx](layers[idx].view(mbs, -1)) * layers[idx + 1], dim=1).squeeze()
        return val

    def step(x, neurons):
        mbs = x.size(0)
        p = phi(x, neurons)
        init_grads = torch.ones(mbs, dtype=torch.float, requires_grad=True)
        grads = torch.autograd.grad(p, neurons, grad_outputs=init_grads, create_graph=False)
        out = []
        for g in grads:  # free phase: every state (the last too, mse or softmax) is sigma(dPhi/ds)
            s = activation(g)
            s.requires_grad = True
            out.append(s)
        return out

    return step


def _one(torch, name, cfg, repeats, quick):
    from sparsecoding.eqprop import ConvEBM

    batch = 16 if quick else 128
    net = ConvEBM(**cfg, activation="my_hard_sig", seed=0)
    r = np.random.default_rng(0)
    x = r.uniform(0, 1, (batch, cfg["channels"][0], cfg["in_size"], cfg["in_size"])).astype(np.float32)
    s = net.relax(x, net.init_states(batch), 3).state
    fns = {"ours": lambda: net.relax(x, s, STEPS)}
    label = "reference (torch autograd)" if torch is not None else "torch (not installed)"
    if torch is not None:
        step = reference_net(torch, net, cfg)
        xt = torch.from_numpy(x)

        def start():
            return [torch.from_numpy(np.array(v)).requires_grad_(True) for v in s]

        # the same work: one step from the same states gives the same new states
        mine = net.step(x, s)
        theirs = step(xt, start())
        for k, (a, b) in enumerate(zip(mine, theirs)):
            err = float(np.max(np.abs(np.asarray(a) - b.detach().numpy())))
            assert err < 1e-4, f"{name}: state {k} differs from the reference step by {err:.2e}"

        def peer():
            neurons = start()
            for _ in range(STEPS):
                neurons = step(xt, neurons)

        fns["peer"] = peer
    t = interleaved(fns, repeats=repeats)
    peer_s = t["peer"] / STEPS if "peer" in t else None
    wl = f"EqProp relaxation step, {name}, batch {batch}"
    engines = ", ".join(net._op(k).engine.replace("-native", "") for k in range(net.n_conv))
    return row(wl, "ConvEBM.relax", t["ours"] / STEPS, label, peer_s, 1.5,
               f"{net.layout}; engines {engines}; per step of {STEPS}")


def run(*, repeats=3, quick=False):
    torch = optional("torch")
    return [_one(torch, "seed 001 CIFAR net 64-128-256-512", CIFAR, repeats, quick),
            _one(torch, "MNIST CNN 1-32-64 5x5", MNIST, repeats, quick)]
