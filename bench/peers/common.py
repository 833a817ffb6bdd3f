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


#: Calls longer than this (s, in the warm-up round) are timed without the untimed call before them: the
#: thread pools' spinning lasts milliseconds, and the long solves (seconds) would take twice as long to time.
PRIME_BELOW_S = 0.5


def interleaved(fns, repeats=3, warmup=1, prime=None):
    """Median wall time (s) of each callable in ``fns`` (dict label -> fn), runs interleaved.

    Each round runs every function in turn, so slow drifts of the machine (other load, clock
    changes) touch all sides alike. With ``prime`` each timed call follows an untimed call of the
    same function, so that no side pays for the thread pools the other left spinning (OpenBLAS's
    and torch's OpenMP threads keep spinning for a while after their last parallel region) and none
    is timed cold (after a 0.3 s rest the conv pair took 21-27 ms instead of 17, torch's 38-41 ms
    instead of 30); ``prime=None``: for the functions whose warm-up call took under
    :data:`PRIME_BELOW_S`. ``warmup`` rounds are not timed.
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
