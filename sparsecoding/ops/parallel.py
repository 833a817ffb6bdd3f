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
"""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

try:
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - threadpoolctl is a dependency
    ThreadpoolController = None

__all__ = ["n_workers", "run_split", "blas_single_thread", "L2_CHUNK_BYTES"]

# Columns per worker chunk: about half of a core's 1 MiB L2 (bench/lca: 2 samples of
# 249 kB columns per chunk ran fastest; 1 and 4-8 samples were 4-10% slower).
L2_CHUNK_BYTES = 1 << 19

_pool = None
_pool_pid = None
_controller = None
_local = threading.local()  # .inside: this thread is one of run_split's workers


def n_workers():
    """Worker threads used by :func:`run_split` (``SPARSECODING_THREADS`` or the CPU count)."""
    env = os.environ.get("SPARSECODING_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"SPARSECODING_THREADS must be a positive integer, got {env!r}")
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _get_pool(n):
    global _pool, _pool_pid
    # a forked child inherits the executor but not its threads: make a new one there
    if _pool is None or _pool._max_workers != n or _pool_pid != os.getpid():
        _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="sparsecoding")
        _pool_pid = os.getpid()
    return _pool, _get_controller()


def _get_controller():
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


@contextlib.contextmanager
def blas_single_thread():
    """BLAS limited to the calling thread inside the block (as in :func:`run_split`'s workers): for
    timing the per-core kernels as they run there."""
    if ThreadpoolController is None:
        yield
        return
    with _get_controller().limit(limits=1, user_api="blas"):
        yield


def run_split(fn, n):
    """Call ``fn(lo, hi)`` on contiguous sample ranges covering ``range(n)``, one per worker.

    ``fn`` must only touch rows ``lo:hi`` of shared outputs and call GIL-free code
    (numpy, single-threaded numba kernels). Exceptions propagate.
    """
    workers = min(n_workers(), n)
    if workers <= 1 or ThreadpoolController is None or getattr(_local, "inside", False):
        # one worker, or called from inside a worker (an engine used within another split): in this
        # thread, since waiting on the pool from one of its own threads could deadlock
        fn(0, n)
        return
    pool, controller = _get_pool(workers)
    bounds = [n * i // workers for i in range(workers + 1)]

    def call(lo, hi):
        _local.inside = True
        try:
            fn(lo, hi)
        finally:
            _local.inside = False

    with controller.limit(limits=1, user_api="blas"):
        futures = [pool.submit(call, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
        for f in futures:
            f.result()
