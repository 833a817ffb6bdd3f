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
