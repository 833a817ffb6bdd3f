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


@pytest.fixture
def tune_cache(tmp_path, monkeypatch):
    from sparsecoding.ops import autotune

    monkeypatch.setenv("SPARSECODING_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SPARSECODING_TUNE", raising=False)
    monkeypatch.delenv("SPARSECODING_THREADS", raising=False)
    autotune.clear_memory()
    yield tmp_path / "cache"
    autotune.clear_memory()


def test_worker_count_is_measured_cached_and_overridable(tune_cache, monkeypatch):
    import json

    from sparsecoding.ops import autotune, parallel

    monkeypatch.setattr(parallel, "cpu_count", lambda: 4)
    calls = []
    real = parallel._unit_work
    monkeypatch.setattr(parallel, "_unit_work", lambda *a: (calls.append(1), real(*a)))
    n = n_workers()
    data = json.loads((tune_cache / "tune.json").read_text())
    entry = data[autotune.base_signature()]["worker threads, 4 logical CPUs"]
    # all logical CPUs, or one per core where SMT pairs them if that is more than 15% faster
    sec = entry["seconds"]
    assert set(sec) == {"2", "4"} and n == int(entry["choice"])
    assert entry["choice"] == ("2" if sec["2"] * 1.15 < sec["4"] else "4")
    assert calls  # it ran the work
    # a new process reads the stored choice and measures nothing, even where it is not the faster now
    entry["choice"] = "2" if n == 4 else "4"
    (tune_cache / "tune.json").write_text(json.dumps(data))
    autotune.clear_memory()
    calls.clear()
    assert n_workers() == int(entry["choice"]) and not calls
    # the environment overrides; with the tuning off, every logical CPU
    monkeypatch.setenv("SPARSECODING_THREADS", "3")
    assert n_workers() == 3
    monkeypatch.delenv("SPARSECODING_THREADS")
    monkeypatch.setenv("SPARSECODING_TUNE", "off")
    assert n_workers() == 4


def test_one_cpu_means_one_worker_without_measuring(tune_cache, monkeypatch):
    from sparsecoding.ops import parallel

    monkeypatch.setattr(parallel, "cpu_count", lambda: 1)
    assert n_workers() == 1
    assert not (tune_cache / "tune.json").exists()
