"""Per-machine measured choices (engine, chunk size), cached in the user's cache folder.

Which convolution engine is fastest, and how large a cache-resident chunk should be, depends
on the CPU (its caches, its vector width, how well the BLAS uses it) far more than on
anything a constant can say: on a 2-core AMD EPYC the im2col GEMMs were 2-2.6x faster than
torch's oneDNN step, on a 2-core AVX-512 Xeon they were level with it. So the choice is made
by a short measurement the first time a geometry is used on a machine, and remembered:

* :func:`tuned` times each candidate (one untimed run, then interleaved rounds, the minimum
  of each) and returns the fastest; the result is stored under the machine's signature (CPU
  model, worker threads, numpy version) and the geometry's key in ``tune.json`` in
  :func:`cache_root` -- ``$SPARSECODING_CACHE_DIR``, else ``$XDG_CACHE_HOME/sparsecoding``,
  by default ``~/.cache/sparsecoding`` (the folder the numba kernels are cached in; never
  inside the installed package). A later process reads it back and measures nothing.
* ``SPARSECODING_TUNE``: ``on`` (default), ``off`` (no measurement, no file: the caller's
  default choice), ``refresh`` (measure again and overwrite the stored choice).
* ``SPARSECODING_CONV_ENGINE``: force the conv engine where a choice is tuned (``im2col``,
  ``winograd2``, ``winograd4``, ``winograd2+im2col``, ``winograd4+im2col``; :func:`forced`).

What is measured: the conv engine and its chunk size per layer geometry
(:mod:`sparsecoding.ops.engines`), the fused LCA residual's chunk and sparse-product limit
(:mod:`~sparsecoding.ops.engines.im2col_numba`), and the worker thread count
(:func:`sparsecoding.ops.parallel.measured_workers`; ``SPARSECODING_THREADS`` overrides).

Where the cache folder cannot be written the measurement is kept in memory for the process.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import time

import numpy as np

from ..checkpoint import _create_temporary

__all__ = ["cache_root", "tune_file", "base_signature", "machine_signature", "tune_mode", "tuned", "forced",
           "clear_memory"]

MODES = ("on", "off", "refresh")

_memory = {}  # signature -> {key: entry}: this process's choices (also where nothing can be written)


def cache_root():
    """The package's cache folder: ``$SPARSECODING_CACHE_DIR``, ``$XDG_CACHE_HOME/sparsecoding`` or
    ``~/.cache/sparsecoding``."""
    own = os.environ.get("SPARSECODING_CACHE_DIR")
    if own:
        return os.path.abspath(own)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.abspath(os.path.join(base, "sparsecoding"))


def tune_file():
    return os.path.join(cache_root(), "tune.json")


@functools.lru_cache(maxsize=1)
def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: bumped when the measured code changes enough that stored choices are stale (2: the Winograd weight
#: transform as one GEMM and the candidates timed with frozen weights; the per-core channels-last im2col;
#: 3: the per-core channels-first gathers and scatters by runs, which change the split/whole and chunk choices)
TUNE_VERSION = 3


def base_signature():
    """The machine without its worker count: CPU model, logical CPUs, numpy version, :data:`TUNE_VERSION`
    (the key of the worker count's own measurement)."""
    from .parallel import cpu_count

    return f"{_cpu_model()} | {cpu_count()} CPUs | numpy {np.__version__} | v{TUNE_VERSION}"


def machine_signature():
    """What a measured choice depends on: CPU model, worker threads, numpy version (and :data:`TUNE_VERSION`)."""
    from .parallel import n_workers

    return f"{_cpu_model()} | {n_workers()} workers | numpy {np.__version__} | v{TUNE_VERSION}"


def tune_mode():
    mode = os.environ.get("SPARSECODING_TUNE", "on").strip().lower() or "on"
    if mode not in MODES:
        raise ValueError(f"SPARSECODING_TUNE must be one of {MODES}, got {mode!r}")
    return mode


def forced(env, allowed):
    """The value of environment variable ``env`` if set (checked against ``allowed``), else None."""
    value = os.environ.get(env, "").strip()
    if not value:
        return None
    if value not in allowed:
        raise ValueError(f"{env} must be one of {tuple(allowed)}, got {value!r}")
    return value


def clear_memory():
    """Forget this process's choices (the file is read again at the next :func:`tuned`)."""
    from . import parallel

    _memory.clear()
    parallel._workers_memo.clear()


def _load():
    try:
        with open(tune_file()) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _store(sig, key, entry):
    path = tune_file()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = _load()  # merge with what other processes wrote meanwhile
        data.setdefault(sig, {})[key] = entry
        fd, tmp = _create_temporary(os.path.dirname(path))  # 0666 less the umask, like any file the user writes
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file
    except OSError:
        pass


def _measure(candidates, rounds):
    for fn in candidates.values():  # compile, allocate, warm the caches
        fn()
    best = {k: float("inf") for k in candidates}
    for _ in range(rounds):
        for k, fn in candidates.items():
            # an untimed call first: a candidate that ran threaded BLAS leaves OpenBLAS threads spinning for a
            # while, and the candidate timed right after paid for them (2-core EPYC Zen 4, channels-first conv
            # pair, 3->64 9x9 stride 2, 64 samples: every per-core split timed at 17 ms after the whole-batch
            # form's threaded GEMM, 13 ms on its own)
            fn()
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def tuned(key, candidates, default, rounds=3, signature=None, margin=0.0):
    """The name of the fastest of ``candidates`` (name -> zero-argument callable) for ``key``.

    Read from this process's memory or the cache file when known for this machine (``signature``,
    default :func:`machine_signature`); otherwise measured (minimum over ``rounds`` interleaved
    rounds) and stored; ``default`` is kept unless the fastest beats it by more than ``margin``
    (a fraction of its time). ``SPARSECODING_TUNE=off`` returns ``default`` without measuring;
    ``refresh`` measures again.
    """
    mode = tune_mode()
    if mode == "off" or len(candidates) == 1:
        return default
    sig = machine_signature() if signature is None else signature
    if mode == "on":
        entry = _memory.get(sig, {}).get(key)
        if entry is None:
            entry = _load().get(sig, {}).get(key)
        if isinstance(entry, dict) and entry.get("choice") in candidates:
            _memory.setdefault(sig, {})[key] = entry
            return entry["choice"]
    times = _measure(candidates, rounds)
    choice = min(times, key=times.get)
    if default in times and times[default] <= (1.0 + margin) * times[choice]:
        choice = default
    entry = {"choice": choice, "seconds": {k: round(v, 6) for k, v in times.items()}}
    _memory.setdefault(sig, {})[key] = entry
    _store(sig, key, entry)
    return choice
