"""`sparsecoding lca encode` end to end: a model learned or saved in one process, coded in another, the codes
checked against the LASSO's KKT conditions on the standardised inputs (numpy, independently of the solvers) or
against the in-process encoders; bad values are one line on stderr and a non-zero exit, no traceback."""
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, strategies as st

import sparsecoding
from sparsecoding.cli import main
from sparsecoding.data import digits_split
from sparsecoding.lca import LCA, LCAConv2D


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sparsecoding", *args], capture_output=True, text=True, cwd=cwd)


def run_main(args, capsys):
    try:
        rc = main(args)
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def standardised(X, zero_mean, unit_var):
    """lca-pytorch's per-sample preprocessing, written out with numpy: mean, then std (ddof=1) + 1e-12."""
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    mean = X.mean(axis=1, keepdims=True) if zero_mean else np.zeros((len(X), 1))
    scale = (X - mean).std(axis=1, ddof=1, keepdims=True) + 1e-12 if unit_var else np.ones((len(X), 1))
    return (X - mean) / scale, mean[:, 0], scale[:, 0]


def assert_kkt(Phi, s, a, lam, nonneg, tol):
    """Optimality of ``a`` for min 1/2||s - Phi^T a||^2 + lam ||a||_1 (a >= 0 with nonneg), row by row:
    ``c = Phi (s - Phi^T a)`` equals ``lam sign(a)`` on the support and is at most ``lam`` in size off it
    (non-negative: ``c <= lam`` off it)."""
    c = (s - a @ Phi) @ Phi.T
    on = a != 0
    assert on.any() and (~on).any()
    assert np.abs(c[on] - lam * np.sign(a[on])).max() <= tol
    off = c[~on] if nonneg else np.abs(c[~on])
    assert off.max() <= lam + tol
    if nonneg:
        assert a.min() >= 0


@pytest.mark.parametrize("nonneg,standardise", [(False, True), (True, False)])
def test_saved_dense_layer_codes_satisfy_the_kkt_conditions(tmp_path, nonneg, standardise):
    # a user's path: save a layer, code an array in a new process with every default of the command
    rng = np.random.default_rng(1)
    layer = LCA(24, 16, lambda_=0.3, solver="fista", lca_iters=20000, tol=1e-13, nonneg=nonneg, dtype="float64",
                input_zero_mean=standardise, input_unit_var=standardise, seed=3)
    sparsecoding.save(layer, tmp_path / "model.npz")
    X = 3.0 + 2.0 * rng.standard_normal((40, 16))  # an offset and a scale the standardisation removes
    np.save(tmp_path / "x.npy", X)
    r = cli("lca", "encode", "--model", "model.npz", "--input", "x.npy", "--save-recons", cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert len(r.stdout.strip().splitlines()) == 1 and "40 samples" in r.stdout and "x_codes.npz" in r.stdout
    with np.load(tmp_path / "x_codes.npz") as z:
        out = {k: z[k] for k in z.files}
    a, Phi = out["codes"], layer.get_weights()
    assert a.shape == (40, 24) and a.dtype == np.float64
    s, mean, scale = standardised(X, standardise, standardise)
    assert_kkt(Phi, s, a, 0.3, nonneg, tol=1e-6)
    np.testing.assert_allclose(out["energy"], 0.5 * ((s - a @ Phi) ** 2).sum(1) + 0.3 * np.abs(a).sum(1), rtol=1e-10)
    # reconstructions in the input's units: offset + scale * Phi^T a
    if standardise:
        np.testing.assert_allclose(out["offset"], mean, rtol=1e-12)
        np.testing.assert_allclose(out["scale"], scale, rtol=1e-12)
    else:
        assert "offset" not in out and "scale" not in out
    np.testing.assert_allclose(out["recons"], mean[:, None] + scale[:, None] * (a @ Phi), rtol=1e-10, atol=1e-12)
    assert float(out["lambda_"]) == 0.3 and out["converged"].all()
    assert f"fraction active {np.mean(a != 0):.4g}" in r.stdout


def test_lca_learn_dictionary_then_encode_in_new_processes(tmp_path):
    # sparsecoding lca learn with a short schedule, then lca encode with its defaults: the codes are those of the
    # layer the learn job describes (dictionary.npy + dictionary.json), coded in this process
    r = cli("lca", "learn", "--epochs", "1", "--n-samples", "64", "--lca_feats", "8", "--lca_ksize", "5",
            "--lca_iters", "40", "--lca_solver", "fista", "--quiet", "--save-dir", "dict", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    X = digits_split(1400, seed=12345)[2][:50]  # held-out digits (N, 1, 8, 8), float
    np.save(tmp_path / "digits.npy", X)
    r = cli("lca", "encode", "--model", "dict", "--input", "digits.npy", "--out", "codes.npz", "--save-recons",
            cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "50 samples" in r.stdout and "standardised per sample" in r.stdout
    meta = json.loads((tmp_path / "dict" / "dictionary.json").read_text())
    W = np.load(tmp_path / "dict" / "dictionary.npy")
    layer = LCAConv2D(W.shape[0], W.shape[1], kernel_size=W.shape[2], stride=meta["lca_stride"],
                      lambda_=meta["lca_lambda"], lca_iters=meta["lca_iters"], solver=meta["lca_solver"], pad="same")
    layer.weights = W
    want = layer.forward(X.astype(np.float32))  # preprocess (per-sample standardisation) + encode
    with np.load(tmp_path / "codes.npz") as z:
        codes, recons, scale, offset = z["codes"], z["recons"], z["scale"], z["offset"]
    assert codes.shape == want.shape == (50, 8, 4, 4)
    np.testing.assert_allclose(codes, want, rtol=1e-5, atol=1e-6)
    _, mean, sd = standardised(X, True, True)
    np.testing.assert_allclose(offset, mean, rtol=1e-5)
    np.testing.assert_allclose(scale, sd, rtol=1e-5)
    np.testing.assert_allclose((recons - offset[:, None, None, None]) / scale[:, None, None, None],
                               layer.compute_recon(want, in_shape=(8, 8)), rtol=1e-4, atol=1e-5)


def test_lca_run_folder_with_solver_options_satisfies_the_kkt_conditions(tmp_path, capsys):
    # the run folder of sparsecoding lca (digits: a dense layer), coded to optimality with the command's options
    assert main(["lca", "--data", "digits", "--features", "12", "--steps", "2", "--n-samples", "64", "--quiet",
                 "--out", str(tmp_path / "run")]) == 0
    X = digits_split(1400, seed=12345)[2][:30].reshape(30, 64)
    np.save(tmp_path / "x.npy", X)
    rc, out, err = run_main(["lca", "encode", "--model", str(tmp_path / "run"), "--input", str(tmp_path / "x.npy"),
                             "--out", str(tmp_path / "c.npz"), "--max-iter", "20000", "--tol", "1e-9",
                             "--lambda", "0.2", "--batch-size", "7"], capsys)
    assert rc == 0 and err == "", err
    assert "fista, lambda 0.2" in out and "5 of 5 batch(es) reached --tol 1e-09" in out
    Phi = np.load(tmp_path / "run" / "weights.npy").astype(np.float64)
    codes = np.load(tmp_path / "c.npz")["codes"].astype(np.float64)
    s, _, _ = standardised(X, True, True)
    assert_kkt(Phi, s, codes, 0.2, nonneg=True, tol=2e-4)  # float32 model


def test_estimators_code_as_their_transform(tmp_path, capsys):
    from sparsecoding import ConvLCADictionaryLearning, LCADictionaryLearning, LCASparseCoder

    X = digits_split(1400, seed=12345)[0][:96]
    flat = X.reshape(len(X), -1)
    dense = LCADictionaryLearning(10, lambda_=0.2, max_iter=1, batch_size=32, random_state=0).fit(flat)
    conv = ConvLCADictionaryLearning(6, kernel_size=3, stride=2, max_iter=1, batch_size=32, random_state=0,
                                     transform_max_iter=50).fit(X)
    coder = LCASparseCoder(dense.components_, lambda_=0.1, solver="fista", transform_tol=None,
                           transform_max_iter=200)
    np.save(tmp_path / "flat.npy", flat[:20])
    np.save(tmp_path / "img.npy", X[:20])
    cases = [(dense, "flat.npy", [], dense), (conv, "img.npy", [], conv),
             # the command's options become the estimator's parameters
             (coder, "flat.npy", ["--lambda", "0.3", "--solver", "lca", "--max-iter", "300"],
              LCASparseCoder(dense.components_, lambda_=0.3, solver="lca", transform_tol=None,
                             transform_max_iter=300))]
    for i, (est, data, options, reference) in enumerate(cases):
        sparsecoding.save(est, tmp_path / f"m{i}.npz")
        rc, out, err = run_main(["lca", "encode", "--model", str(tmp_path / f"m{i}.npz"), "--input",
                                 str(tmp_path / data), "--out", str(tmp_path / f"c{i}.npz"), *options], capsys)
        assert rc == 0 and err == "", err
        assert "inputs as given" in out  # the estimators do not standardise
        want = reference.transform(np.load(tmp_path / data))
        np.testing.assert_allclose(np.load(tmp_path / f"c{i}.npz")["codes"], want, rtol=1e-9, atol=1e-12)


@given(n=st.integers(1, 9), d=st.integers(2, 7), k=st.integers(1, 8), batch=st.integers(1, 10),
       solver=st.sampled_from(["fista", "lca"]), seed=st.integers(0, 2**16))
def test_batches_are_coded_as_the_whole_array(tmp_path_factory, n, d, k, batch, solver, seed):
    # with a fixed number of iterations (no --tol) every row's code is independent of the others: the command's
    # batches give the codes the layer computes for the whole array in one call
    tmp = tmp_path_factory.mktemp("batches")
    rng = np.random.default_rng(seed)
    layer = LCA(k, d, lambda_=0.1, solver=solver, lca_iters=30, tau=50, dtype="float64", seed=seed)
    sparsecoding.save(layer, tmp / "m.npz")
    X = rng.standard_normal((n, d))
    np.save(tmp / "x.npy", X)
    assert main(["lca", "encode", "--model", str(tmp / "m.npz"), "--input", str(tmp / "x.npy"),
                 "--out", str(tmp / "c.npz"), "--batch-size", str(batch)]) == 0
    with np.load(tmp / "c.npz") as z:
        np.testing.assert_allclose(z["codes"], layer.forward(X), rtol=1e-9, atol=1e-12)
        assert len(z["n_iter"]) == -(-n // batch) and (z["n_iter"] == 30).all()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("encode")
    conv = LCAConv2D(4, 1, kernel_size=3, stride=1, lca_iters=20, solver="fista")
    sparsecoding.save(conv, d / "conv.npz")
    sparsecoding.save(LCA(4, 6, lca_iters=20, solver="fista"), d / "dense.npz")
    from sparsecoding.plasticity.foldiak import FoldiakNetwork

    sparsecoding.save(FoldiakNetwork(6, 3), d / "foldiak.npz")
    from sparsecoding.checkpoint import save_checkpoint

    save_checkpoint(d / "checkpoint.npz", {"weights": np.ones(3)}, {"loop": {}})
    rng = np.random.default_rng(0)
    np.save(d / "img.npy", rng.random((5, 1, 6, 6)))
    np.save(d / "rgb.npy", rng.random((5, 3, 6, 6)))
    np.save(d / "rows.npy", rng.random((5, 7)))
    bad = rng.random((5, 1, 6, 6))
    bad[3, 0, 2, 2] = np.nan
    np.save(d / "nan.npy", bad)
    np.savez(d / "two.npz", a=rng.random((5, 1, 6, 6)), b=rng.random((5, 1, 6, 6)))
    np.save(d / "lonely.npy", rng.random((4, 1, 3, 3)))
    (d / "empty").mkdir()
    return d


@pytest.mark.parametrize("model,data,extra,needle", [
    ("missing.npz", "img.npy", [], "--model missing.npz: no such file"),
    ("foldiak.npz", "img.npy", [], "holds a FoldiakNetwork; lca encode codes with LCA"),
    ("checkpoint.npz", "img.npy", [], "training checkpoint"),
    ("empty", "img.npy", [], "the folder holds no model"),
    ("lonely.npy", "img.npy", [], "needs the dictionary.json"),
    ("conv.npz", "missing.npy", [], "--input missing.npy: no such file"),
    ("conv.npz", "rgb.npy", [], "with 1 channel(s)"),
    ("dense.npz", "rows.npy", [], "codes rows (N, 6)"),
    ("conv.npz", "nan.npy", [], "sample 3 has NaN or Inf"),
    ("conv.npz", "two.npz", [], "choose one with --key"),
    ("conv.npz", "two.npz", ["--key", "c"], "--key 'c'"),
    ("conv.npz", "img.npy", ["--lambda", "-1"], "--lambda"),
    ("conv.npz", "img.npy", ["--batch-size", "0"], "--batch-size"),
    ("conv.npz", "img.npy", ["--device", "tpu"], "--device"),
    ("conv.npz", "img.npy", ["--out", "/proc/no/such/folder/c.npz"], "--out"),
    ("conv.npz", "img.npy", ["--out", "empty"], "--out empty: a folder"),
])
def test_bad_values_are_one_line(files, capsys, monkeypatch, model, data, extra, needle):
    monkeypatch.chdir(files)
    extra = extra if "--out" in extra else ["--out", "out.npz", *extra]
    rc, out, err = run_main(["lca", "encode", "--model", model, "--input", data, *extra], capsys)
    assert rc not in (0, None) and out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert err.startswith("sparsecoding lca encode: error:"), err
    assert not (files / "out.npz").exists()


def test_bad_input_in_a_new_process_is_one_line_without_traceback(files):
    r = cli("lca", "encode", "--model", "conv.npz", "--input", "nan.npy", cwd=files)
    assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.strip() == "sparsecoding lca encode: error: --input nan.npy: sample 3 has NaN or Inf values"


def test_encode_must_come_right_after_lca(capsys):
    rc, _, err = run_main(["lca", "--seed", "3", "encode", "--model", "m", "--input", "x"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "'encode' must come right after 'lca'" in err
