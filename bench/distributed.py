"""Distributed encoding with Dask: throughput with 1 and 2 workers against the in-process encoder.

Workload: 16,384 centred 8x8 grey patches of the bundled photographs, dense LCA with 256
unit-norm atoms, lambda 0.1, FISTA for 100 iterations (no early stop, so every chunk does the
same work), float32, chunks of 1,024 patches.

Measured in one run on this machine (medians of 3):
  * in-process: ``layer.encode`` chunk by chunk with BLAS on all cores, and with one thread;
  * ``sparsecoding.distributed.encode`` on a LocalCluster of 1 and of 2 single-threaded
    worker processes (the layer sent once per worker, chunks scattered beforehand);
  * Dask's per-chunk overhead: the same graph with a chunk function that returns at once.
Projection to 16 and 64 workers (on paper, from the figures above): each worker codes a
chunk in ``t_chunk`` (the 1-worker time per chunk) plus the per-chunk overhead, and the
scheduler hands out tasks at most at ``1 / overhead`` per second; inputs (``1,024 x 64``
float32, 256 kB) and codes (``1,024 x 256``, 1 MB) cross the network per chunk, so at
1 GB/s a chunk's transfer takes 1.3 ms. Throughput(W) = min(W / (t_chunk + transfer),
1 / overhead) chunks per second. The scheduler rate measured here on 2 cores bounds it.

Run: python -m bench.distributed
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from bench.common import machine_info, print_table, write_json

N, CHUNK, ATOMS, ITERS = 16384, 1024, 256, 100


def _patches():
    from sparsecoding.data import extract_patches, natural_images  # noqa: PLC0415

    grey = natural_images(color=False, downsample=2)  # list of (1, H, W)
    P = extract_patches(grey, 8, N, seed=0, flatten=True).astype(np.float32)
    return P - P.mean(axis=1, keepdims=True)


def _layer():
    from sparsecoding.lca import LCA  # noqa: PLC0415

    return LCA(ATOMS, 64, lambda_=0.1, solver="fista", lca_iters=ITERS, tol=None, seed=0,
               input_zero_mean=False, input_unit_var=False)


def _median(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _noop(block):
    return block[:, :1]


def main(argv=None):
    import dask.array as da  # noqa: PLC0415
    from distributed import Client, LocalCluster  # noqa: PLC0415
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    from sparsecoding import distributed as sd  # noqa: PLC0415

    import dask  # noqa: PLC0415

    # Dask's default worker environment sets MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's adaptive
    # mmap threshold: every MB-sized temporary of a solver step is then mapped and unmapped again, and a
    # chunk took 0.41 s instead of 0.25 s here (dense FISTA, 1 thread). Keep the BLAS thread limits only.
    dask.config.set({"distributed.nanny.pre-spawn-environ": {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1,
                                                             "OPENBLAS_NUM_THREADS": 1}})
    X = _patches()
    layer = _layer()

    def in_process():
        for i in range(0, N, CHUNK):
            layer.solve(X[i:i + CHUNK])

    rows = []
    in_process()  # warm (numba, BLAS)
    t_all = _median(in_process)
    with threadpool_limits(1):
        t_one = _median(in_process)
    rows += [{"encoder": "in-process, all cores", "seconds": round(t_all, 3), "patches_per_s": round(N / t_all)},
             {"encoder": "in-process, 1 thread", "seconds": round(t_one, 3), "patches_per_s": round(N / t_one)}]
    overheads = {}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            x = da.from_array(X, chunks=(CHUNK, 64)).persist()  # the chunks on the workers before timing
            client.wait_for_workers(workers)
            sd.encode(layer, x).compute()  # warm the workers (numba compile, the layer's key)
            t = _median(lambda: sd.encode(layer, x).compute())
            t_noop = _median(lambda: da.map_blocks(_noop, x, chunks=(CHUNK, 1)).compute())
            overheads[workers] = t_noop / (N // CHUNK) * workers
            rows.append({"encoder": f"dask, {workers} worker process(es)", "seconds": round(t, 3),
                         "patches_per_s": round(N / t)})
            if workers == 1:
                t_chunk = t / (N // CHUNK)
    print_table(rows, ["encoder", "seconds", "patches_per_s"])
    overhead = overheads[1]
    transfer = (CHUNK * 64 * 4 + CHUNK * ATOMS * 4) / 1e9  # seconds at 1 GB/s
    proj = []
    for w in (16, 64):
        chunks_per_s = min(w / (t_chunk + transfer), 1 / overhead)
        proj.append({"workers": w, "patches_per_s": round(chunks_per_s * CHUNK),
                     "bound": "scheduler" if chunks_per_s == 1 / overhead else "compute + transfer"})
    print(f"per-chunk compute (1 worker) {1e3 * t_chunk:.1f} ms, Dask overhead per chunk {1e3 * overhead:.2f} ms, "
          f"transfer per chunk at 1 GB/s {1e3 * transfer:.2f} ms")
    print_table(proj, ["workers", "patches_per_s", "bound"])
    path = write_json("distributed", {"machine": machine_info(), "workload": {"patches": N, "chunk": CHUNK,
                      "atoms": ATOMS, "fista_iterations": ITERS}, "rows": rows, "chunk_compute_s": t_chunk,
                      "overhead_per_chunk_s": overhead, "transfer_per_chunk_s_at_1GBps": transfer,
                      "projection": proj})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
