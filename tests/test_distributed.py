"""sparsecoding.distributed on a LocalCluster of 2 worker processes: encoding, data-parallel dictionary
learning and a worker killed mid-encode, against the single-process library."""
import os
import signal
import time

import numpy as np
import pytest

dask_array = pytest.importorskip("dask.array", reason="the 'distributed' extra (dask) is part of the test extra")
distributed = pytest.importorskip("distributed")

from sparsecoding import distributed as sd  # noqa: E402
from sparsecoding.lca import LCA, LCAConv2D  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def images(n=24, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16)).astype(np.float32)


@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_distributed_encoding_equals_single_process(client, kind):
    if kind == "conv":
        layer = LCAConv2D(8, 3, kernel_size=5, stride=2, lca_iters=40, seed=0, dtype="float64")
        X = images().astype(np.float64)
    else:
        layer = LCA(12, 20, lca_iters=40, seed=0, dtype="float64")
        X = np.random.default_rng(1).standard_normal((30, 20))
    x = dask_array.from_array(X, chunks=(7,) + X.shape[1:])  # uneven chunks: 7, 7, 7, ...
    codes, metrics = sd.encode(layer, x, metrics=True)
    got = codes.compute()
    s = layer.preprocess(X)
    out = layer.solve(s)
    np.testing.assert_allclose(got, out["acts"], rtol=1e-12, atol=1e-12)
    energy = (0.5 * np.sum(out["recon_errors"] ** 2) + layer.lambda_ * np.abs(out["acts"]).sum()) / len(X)
    assert metrics["energy_per_sample"].compute() == pytest.approx(energy, rel=1e-12)
    assert metrics["frac_active"].compute() == pytest.approx(np.mean(out["acts"] != 0), rel=1e-12)
    # inputs already standardised
    np.testing.assert_allclose(sd.encode(layer, dask_array.from_array(s, chunks=(10,) + s.shape[1:]),
                                         preprocessed=True).compute(), out["acts"], rtol=1e-12, atol=1e-12)


def test_distributed_dictionary_learning_equals_single_process(client):
    X = images(32, seed=2).astype(np.float64)
    kw = dict(epochs=1, batch_size=16, seed=3)
    single, dist = (LCAConv2D(8, 3, kernel_size=5, stride=2, lca_iters=30, seed=0, dtype="float64")
                    for _ in range(2))
    h1 = single.fit(X, progress=False, **kw)
    h2 = dist.fit(X, client=client, progress=False, **kw)  # the layers' own fit, data-parallel
    np.testing.assert_allclose(dist.weights, single.weights, rtol=1e-12, atol=1e-12)
    for a, b in zip(h1, h2):
        for key in ("energy", "L1", "L2", "frac_active"):
            assert a[key] == pytest.approx(b[key], rel=1e-12)
    np.testing.assert_allclose(np.linalg.norm(dist.weights.reshape(8, -1), axis=1), 1, rtol=1e-12)


def test_distributed_learning_resumes_exactly(client, tmp_path):
    X = images(32, seed=4)
    kw = dict(epochs=2, batch_size=8, seed=5, checkpoint_every=2)
    ref = LCAConv2D(6, 3, kernel_size=5, stride=2, lca_iters=20, seed=0)
    sd.fit(ref, X, client=client, checkpoint=str(tmp_path / "ref.npz"), **kw)
    part = LCAConv2D(6, 3, kernel_size=5, stride=2, lca_iters=20, seed=0)
    sd.fit(part, X, client=client, checkpoint=str(tmp_path / "run.npz"), max_steps=5, **kw)
    # the checkpoint restores the dictionary
    resumed = LCAConv2D(6, 3, kernel_size=5, stride=2, lca_iters=20, seed=9)
    hist = sd.fit(resumed, X, client=client, checkpoint=str(tmp_path / "run.npz"), **kw)
    assert np.array_equal(resumed.weights, ref.weights) and len(hist) == 2


def test_a_worker_killed_mid_encode_still_gives_the_complete_result(client):
    layer = LCAConv2D(8, 3, kernel_size=5, stride=2, lca_iters=400, seed=0)
    X = images(48, seed=6)
    x = dask_array.from_array(X, chunks=(3,) + X.shape[1:])  # 16 chunk tasks of a few tens of ms each
    future = client.compute(sd.encode(layer, x))
    deadline = time.time() + 60
    while not any(ts for ts in client.processing().values()) and time.time() < deadline:
        time.sleep(0.01)
    victim = next(addr for addr, tasks in client.processing().items() if tasks)
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)  # a crash mid-task; the nanny starts a new worker process
    got = future.result(timeout=120)
    ref = layer.solve(layer.preprocess(X))["acts"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    client.wait_for_workers(2, timeout=60)


def test_bad_input_is_named(client):
    with pytest.raises(ValueError, match="built-in rule only: drop optimizer"):
        LCA(4, 6).fit(np.zeros((8, 6)), client=client, optimizer=object())
    layer = LCAConv2D(4, 3, kernel_size=5, stride=2)
    x = dask_array.from_array(images(8), chunks=(4, 3, 8, 16))
    with pytest.raises(ValueError, match="chunked along the samples"):
        sd.encode(layer, x)
    with pytest.raises(ValueError, match="samples first"):
        sd.encode(layer, dask_array.from_array(np.zeros(5), chunks=5))
