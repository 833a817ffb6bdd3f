"""Batch-parallel CPU execution: one thread per core, each on its own samples.

The LCA's two thin GEMMs (one side 64 wide) and the im2col copies around them
are bound by memory traffic when the whole batch streams through the shared
caches. Giving each core a contiguous share of the samples, processed in
chunks whose columns fit that core's L2, with single-threaded BLAS calls,
keeps the columns in cache between the copy and the GEMM: on the 2-core
development machine one LCA iteration of bench/lca went from 40 ms (BLAS
threads over the whole batch) to 26 ms.

BLAS threads are limited through ``threadpoolctl`` for the duration of a
call; without it (or with one core) the work runs in the calling thread.

How many workers: ``SPARSECODING_THREADS``, else measured once per machine between all logical
CPUs and half of them (:func:`measured_workers`; on SMT machines two hyperthreads share one
core's vector units, and GEMM-bound work may run no faster on both).
"""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - threadpoolctl is a dependency
    ThreadpoolController = None

__all__ = ["n_workers", "measured_workers", "cpu_count", "run_split", "blas_single_thread", "L2_CHUNK_BYTES"]

# Columns per worker chunk: about half of a core's 1 MiB L2 (bench/lca: 2 samples of
# 249 kB columns per chunk ran fastest; 1 and 4-8 samples were 4-10% slower).
L2_CHUNK_BYTES = 1 << 19

_pool = None
_pool_pid = None
_controller = None
_local = threading.local()  # .inside: this thread is one of run_split's workers


_workers_memo = {}  # (logical CPUs, tune mode) -> the measured worker count, for this process


def cpu_count():
    """Logical CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def n_workers():
    """Worker threads used by :func:`run_split`: ``SPARSECODING_THREADS`` if set, else measured once per
    machine (:func:`measured_workers`)."""
    env = os.environ.get("SPARSECODING_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"SPARSECODING_THREADS must be a positive integer, got {env!r}")
        return n
    return measured_workers()


def _unit_work(a, b, out, src, dst):
    """One unit of the per-core work the engines do: a cache-sized copy and a single-threaded GEMM."""
    np.copyto(dst, src)
    np.matmul(a, b, out=out)


def measured_workers():
    """The worker count that runs a fixed amount of per-core work fastest on this machine, among all
    logical CPUs and half of them (one per physical core where SMT pairs them: two hyperthreads
    share one core's vector units and caches, and GEMM-bound work often runs no faster, or slower,
    on both); measured on first use (about 0.1 s) and cached with the other per-machine choices
    (:mod:`sparsecoding.ops.autotune`; ``SPARSECODING_TUNE=off``: all logical CPUs). Every worker
    runs single-threaded BLAS, as in :func:`run_split`; fewer workers are chosen only when more than
    15% faster, so that a noisy measurement keeps all CPUs. Measured on the quiet 2-core AMD EPYC
    (Zen 4): 2 workers 12.6 ms, 1 worker 24.0 ms (4 runs, each within 2%)."""
    from . import autotune

    ncpu = cpu_count()
    mode = autotune.tune_mode()
    key = (ncpu, mode)
    if key in _workers_memo:
        return _workers_memo[key]
    counts = sorted({ncpu, max(1, ncpu // 2)})
    if mode == "off" or len(counts) == 1 or ThreadpoolController is None:
        _workers_memo[key] = ncpu
        return ncpu
    r = np.random.default_rng(0)
    a = r.standard_normal((256, 512)).astype(np.float32)
    b = r.standard_normal((512, 256)).astype(np.float32)
    units = 16 * ncpu
    bufs = [(np.empty((256, 256), np.float32), np.ones(1 << 18, np.float32), np.empty(1 << 18, np.float32))
            for _ in range(units)]

    def work(lo, hi):
        for u in range(lo, hi):
            _unit_work(a, b, *bufs[u])

    def with_workers(c):
        def run():
            with blas_single_thread():  # one worker runs in this thread: single-threaded BLAS there too
                run_split(work, units, workers=c)
        return run

    choice = autotune.tuned(f"worker threads, {ncpu} logical CPUs", {str(c): with_workers(c) for c in counts},
                            str(ncpu), rounds=5, signature=autotune.base_signature(), margin=0.15)
    _workers_memo[key] = int(choice)
    return _workers_memo[key]


def _get_pool(n):
    global _pool, _pool_pid
    # a forked child inherits the executor but not its threads: make a new one there
    if _pool is None or _pool._max_workers != n or _pool_pid != os.getpid():
        _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="sparsecoding")
        _pool_pid = os.getpid()
    return _pool


def _get_controller():
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


@contextlib.contextmanager
def blas_single_thread():
    """BLAS limited to the calling thread inside the block (as in :func:`run_split`'s workers): for
    timing the per-core kernels as they run there, and around loops made of per-core work (the EqProp
    relaxation), where a threaded BLAS call would leave OpenBLAS threads spinning on the workers' cores."""
    if ThreadpoolController is None:
        yield
        return
    with _get_controller().limit(limits=1, user_api="blas"):
        yield


def run_split(fn, n, workers=None):
    """Call ``fn(lo, hi)`` on contiguous sample ranges covering ``range(n)``, one per worker
    (``workers``, default :func:`n_workers`).

    ``fn`` must only touch rows ``lo:hi`` of shared outputs and call GIL-free code
    (numpy, single-threaded numba kernels). Exceptions propagate.
    """
    workers = min(n_workers() if workers is None else workers, n)
    if workers <= 1 or ThreadpoolController is None or getattr(_local, "inside", False):
        # one worker, or called from inside a worker (an engine used within another split): in this
        # thread, since waiting on the pool from one of its own threads could deadlock
        fn(0, n)
        return
    pool = _get_pool(workers)
    bounds = [n * i // workers for i in range(workers + 1)]

    def call(lo, hi):
        _local.inside = True
        try:
            fn(lo, hi)
        finally:
            _local.inside = False

    with blas_single_thread():
        futures = [pool.submit(call, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
        for f in futures:
            f.result()
