"""Timing helpers for the peer benchmarks: interleaved medians, optional imports."""
from __future__ import annotations

import importlib
import statistics
import time


def optional(name):
    """The module ``name`` if it imports, else None (peers are never required)."""
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken peer install counts as missing
        return None


#: Calls longer than this (s, in the warm-up round) are timed without the untimed calls before them: the
#: thread pools' spinning lasts a fraction of it, and the long solves (seconds) would take twice as long to time.
PRIME_BELOW_S = 0.5
#: The untimed calls before a timed one last at least this long (s): OpenBLAS's idle threads spin for up to
#: about 0.1-0.2 s after its last threaded call. Measured (2-core EPYC Zen 4): the dense coordinate_descent
#: (bench/peers/lasso.py, 35 ms alone) took 53 / 51 / 35 ms when started 0 / 0.05 / 0.2 s after a threaded
#: float32 GEMM, 49 ms as the second call after it: one untimed call did not cover the spin, and in the
#: interleaved rounds that came after FISTA's threaded products the path was timed at 48-56 ms.
PRIME_MIN_S = 0.25


def interleaved(fns, repeats=3, warmup=1, prime=None):
    """Median wall time (s) of each callable in ``fns`` (dict label -> fn), runs interleaved.

    Each round runs every function in turn, so slow drifts of the machine (other load, clock
    changes) touch all sides alike. With ``prime`` each timed call follows untimed calls of the
    same function, repeated for at least :data:`PRIME_MIN_S`, so that no side pays for the thread
    pools the other left spinning (OpenBLAS's and torch's OpenMP threads keep spinning for a while
    after their last parallel region) and none is timed cold (after a 0.3 s rest, instead of
    calls, the conv pair took 21-27 ms instead of 17, torch's 38-41 ms instead of 30);
    ``prime=None``: for the functions whose warm-up call took under :data:`PRIME_BELOW_S`.
    ``warmup`` rounds are not timed.
    """
    first = {}
    for _ in range(warmup):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            first[k] = time.perf_counter() - t0
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            if prime or (prime is None and first.get(k, 0.0) < PRIME_BELOW_S):
                t_end = time.perf_counter() + PRIME_MIN_S
                fn()
                while time.perf_counter() < t_end:
                    fn()
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def row(workload, ours, ours_s, peer, peer_s, target=None, note=""):
    """One result row (``ratio`` = peer time / our time, None when the peer is missing)."""
    ratio = None if peer_s is None or ours_s is None else peer_s / ours_s
    return {"workload": workload, "ours": ours, "ours_s": ours_s, "peer": peer, "peer_s": peer_s,
            "ratio": ratio, "target": target, "note": note}
