"""ops.parallel: the batch split covers every sample once, and worker errors reach the caller."""
import threading

import pytest

from sparsecoding.ops.parallel import n_workers, run_split


@pytest.mark.parametrize("workers", ["1", "2", "5"])
@pytest.mark.parametrize("n", [1, 2, 7, 128])
def test_run_split_covers_the_batch_once(monkeypatch, workers, n):
    monkeypatch.setenv("SPARSECODING_THREADS", workers)
    assert n_workers() == int(workers)
    seen, lock = [], threading.Lock()

    def fn(lo, hi):
        with lock:
            seen.append((lo, hi))

    run_split(fn, n)
    covered = sorted(i for lo, hi in seen for i in range(lo, hi))
    assert covered == list(range(n))
    assert len(seen) == min(int(workers), n)


def test_run_split_propagates_errors(monkeypatch):
    monkeypatch.setenv("SPARSECODING_THREADS", "2")

    def fn(lo, hi):
        if lo > 0:
            raise RuntimeError("worker failed")

    with pytest.raises(RuntimeError, match="worker failed"):
        run_split(fn, 4)


def test_run_split_works_in_a_forked_child(monkeypatch):
    import multiprocessing as mp

    monkeypatch.setenv("SPARSECODING_THREADS", "2")
    barrier = threading.Barrier(2, timeout=30)
    run_split(lambda lo, hi: barrier.wait(), 4)  # both worker threads exist in the parent before the fork
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply_async(_child_sum, (10,)).get(timeout=60) == 45


def _child_sum(n):
    total, lock = [], threading.Lock()

    def fn(lo, hi):
        with lock:
            total.append(sum(range(lo, hi)))

    run_split(fn, n)
    return sum(total)


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_bad_thread_count_is_named(monkeypatch, value):
    monkeypatch.setenv("SPARSECODING_THREADS", value)
    with pytest.raises(ValueError, match="SPARSECODING_THREADS must be a positive integer"):
        run_split(lambda lo, hi: None, 4)


def test_run_split_nested_in_a_worker_runs_inline(monkeypatch):
    # an engine that splits its batch, called from inside another split (e.g. a Winograd conv in a
    # per-core worker), must not wait on the pool it is running in: every pair (outer, inner) once
    monkeypatch.setenv("SPARSECODING_THREADS", "2")
    seen, lock = [], threading.Lock()

    def outer(lo, hi):
        for i in range(lo, hi):
            def inner(a, b, i=i):
                with lock:
                    seen.extend((i, j) for j in range(a, b))
            run_split(inner, 3)

    run_split(outer, 4)
    assert sorted(seen) == [(i, j) for i in range(4) for j in range(3)]
