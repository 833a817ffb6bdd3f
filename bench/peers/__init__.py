"""Side-by-side benchmarks against the peer libraries that are installed, one table.

``python -m bench.peers [--only NAME,...] [--quick] [--repeats 3]`` runs every
workload module below in one process, each one timing our code and its peers
interleaved (run A, run B, run A, ...; each timed call right after an untimed call of
the same side, so that neither pays for the other's still-spinning thread pools nor
is timed cold), and prints one table: the median time of
each side, the ratio peer time / our time, and the target. The CPU model and the
float32 GEMM rate measured at the start of the same run head the table; the JSON
goes to ``bench/results/peers.json``.

Peers are optional and never dependencies of the package or its tests: torch
(CPU build; the EqProp reference's autograd step, torch convolutions, the LPL loss
under autograd), lca-pytorch (``lcapt``), alphacsc, SPAMS (``spams``), SPORCO and
scikit-learn. A peer that is not importable gives a row that says so; the
workload still times our side. Install them beside the package, e.g.
``pip install torch==2.13.0 alphacsc spams sporco scikit-learn``.

A workload module defines ``run(*, repeats, quick) -> list[dict]``; each row has
``workload``, ``ours`` (label), ``ours_s``, ``peer`` (label), ``peer_s`` (None when
the peer is missing), ``target`` (the ratio the issue asks for, or None) and
``note``. :func:`bench.peers.common.interleaved` does the timing.
"""
MODULES = ["conv", "csc", "lasso", "eqprop", "lpl"]
