"""Shared benchmark helpers: timing medians, the machine's GEMM rate, JSON output."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from sparsecoding.backend import get_xp

RESULTS = Path(__file__).resolve().parent / "results"


def sync(xp):
    """Wait for the device (no-op on numpy)."""
    if xp is not np:
        xp.cuda.Device().synchronize()


def median_time(fn, repeats=5, warmup=1, xp=np):
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs."""
    for _ in range(warmup):
        fn()
    sync(xp)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(xp)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_rate(xp=np, dtype="float32", n=2048, repeats=7):
    """Measured GEMM rate of this machine in flop/s (median of ``repeats``)."""
    r = np.random.default_rng(0)
    a = xp.asarray(r.standard_normal((n, n)), dtype=dtype)
    b = xp.asarray(r.standard_normal((n, n)), dtype=dtype)
    t = median_time(lambda: a @ b, repeats=repeats, warmup=2, xp=xp)
    return 2.0 * n**3 / t


def _cpuinfo(field):
    """The value of the first ``field`` line of /proc/cpuinfo, or None where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model():
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_vendor():
    """The CPU vendor id from /proc/cpuinfo ("GenuineIntel", "AuthenticAMD"), or None where unknown."""
    return _cpuinfo("vendor_id")


def _has_avx512():
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return None


def code_version():
    """The git commit of the code measured (with '+' if the tree has uncommitted changes)."""
    import subprocess  # noqa: PLC0415

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "sparsecoding"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+" if dirty else "")


def machine_info(xp=np):
    info = {"code": code_version(), "python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
            "cpu_model": cpu_model(), "cpu_vendor": cpu_vendor(), "avx512": _has_avx512(),
            "machine": platform.machine(),
            "backend": "numpy" if xp is np else "cupy"}
    if xp is not np:
        info["gpu"] = xp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return info


def write_json(name, payload):
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    os.replace(tmp, path)
    return path


def begin(argv):
    """Common start of a benchmark: ``(argv, xp, gemm_rate)``, the rate printed."""
    argv = sys.argv[1:] if argv is None else argv
    xp = backend_from_argv(argv)
    g = gemm_rate(xp)
    print(f"float32 GEMM rate: {g / 1e9:.1f} GFLOP/s")
    return argv, xp, g


def finish(name, xp, g, payload):
    """Write ``payload`` with the machine and GEMM rate to ``results/<name>[_gpu].json`` and say where."""
    path = write_json(name + ("" if xp is np else "_gpu"), {"machine": machine_info(xp), "gemm_flops": g, **payload})
    print(f"wrote {path}")
    return path


def print_table(rows, columns):
    widths = [max(len(c), *(len(f"{r[c]}") for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(f"{r[c]}".ljust(w) for c, w in zip(columns, widths)))


def backend_from_argv(argv):
    """``--backend cupy`` on the command line picks the GPU."""
    name = "numpy"
    if "--backend" in argv:
        name = argv[argv.index("--backend") + 1]
    if name == "numpy":
        return np
    from sparsecoding.backend import _load_cupy

    return _load_cupy()


__all__ = ["cpu_model", "median_time", "gemm_rate", "machine_info", "write_json", "print_table", "get_xp", "sync", "backend_from_argv",
           "begin", "finish"]
