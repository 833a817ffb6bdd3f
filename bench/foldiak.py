"""Földiák's network: time to learn the 8x8 bars problem (presentations and CPU seconds).

Learning is declared done at the first check (every 400 presentations) where
every one of the 16 units is the best correlate of a distinct bar and each
unit fires for its own bar presented alone. Medians over seeds; batch size 8
(the per-presentation rules summed over 8 inputs) and 1 (Földiák's online
procedure). For reference, Földiák (1990) trained for thousands of presentations.

Run: python -m bench.foldiak
"""
from __future__ import annotations

import statistics
import sys
import time

from bench.common import machine_info, print_table, write_json
from sparsecoding.data import bars
from sparsecoding.plasticity import FoldiakNetwork


def time_to_learn(seed, batch_size, max_presentations=20000, check=400):
    X, T = bars(max_presentations, seed=seed)
    net = FoldiakNetwork(64, 16, seed=seed)
    t0 = time.process_time()
    net.partial_fit(X[:200], batch_size=batch_size, thresholds_only=True)
    for start in range(200, max_presentations, check):
        net.partial_fit(X[start:start + check], batch_size=batch_size)
        best, _ = net.feature_assignment(T)
        resp, _ = net.response_assignment(T)
        if len(set(best.tolist())) == 16 and len(set(resp.tolist())) == 16:
            return net.n_presented, time.process_time() - t0
    return None, time.process_time() - t0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    seeds = range(3 if "--quick" in argv else 7)
    rows = []
    for bs in [8, 1]:
        results = [time_to_learn(s, bs) for s in seeds]
        ok = [r for r in results if r[0] is not None]
        rows.append({"batch_size": bs, "learned": f"{len(ok)}/{len(results)}",
                     "median_presentations": statistics.median(r[0] for r in ok) if ok else "n/a",
                     "median_cpu_seconds": round(statistics.median(r[1] for r in ok), 2) if ok else "n/a"})
    print_table(rows, list(rows[0]))
    print(f"wrote {write_json('foldiak', {'machine': machine_info(), 'rows': rows})}")


if __name__ == "__main__":
    main()
