"""`sparsecoding lca` and `sparsecoding lca learn` end to end (in new processes where that matters): outputs,
evaluate, exact resume, settings, bad values; `lca learn` writes the dictionary file of the EqProp LCA front end."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sparsecoding.cli import main

SMALL = ["lca", "--data", "digits", "--features", "16", "--batch-size", "32", "--lca-iters", "30", "--quiet"]


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "sparsecoding", *args], capture_output=True, text=True, **kw)


def test_lca_digits_job_writes_outputs_and_resumes(tmp_path):
    out = tmp_path / "lca"
    args = SMALL + ["--steps", "4", "--out", str(out), "--checkpoint-every", "2"]
    assert main(args) == 0
    for name in ("dictionary.png", "weights.npy", "history.csv", "checkpoint.npz", "energy.png", "args.json"):
        assert (out / name).exists(), name
    w = np.load(out / "weights.npy")
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1, rtol=1e-5)
    assert main(SMALL + ["--steps", "6", "--out", str(out)]) == 0  # resumes from the checkpoint at step 4
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]


def test_final_summary_equals_evaluate_in_a_new_process(tmp_path):
    args = SMALL + ["--steps", "5", "--out", str(tmp_path)]
    trained = cli(*args)
    assert trained.returncode == 0, trained.stderr
    evaluated = cli(*args, "--evaluate")
    assert evaluated.returncode == 0, evaluated.stderr
    summary = evaluated.stdout.strip()
    assert summary.startswith("energy per sample on the first 256 samples") and summary in trained.stdout


def _wait_for(path, proc, timeout=120):
    t0 = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_run_resumes_bit_identical(tmp_path, sig):
    run = SMALL + ["--steps", "150", "--checkpoint-every", "5"]
    ref = cli(*run, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "sparsecoding", *run, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(out / "checkpoint.npz", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and len(err.strip().splitlines()) == 1 and "interrupted" in err
        assert (out / "weights.npy").exists() and (out / "history.csv").exists()  # what it had
    else:
        assert proc.returncode == -signal.SIGKILL
    resumed = cli(*run, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    np.testing.assert_array_equal(np.load(out / "weights.npy"), np.load(tmp_path / "ref" / "weights.npy"))
    assert (out / "history.csv").read_text() == (tmp_path / "ref" / "history.csv").read_text()


def test_changed_setting_is_refused_by_name(tmp_path):
    assert cli(*SMALL, "--steps", "2", "--out", str(tmp_path)).returncode == 0
    r = cli(*SMALL, "--steps", "4", "--lambda", "0.3", "--out", str(tmp_path))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "lambda_: 0.25 -> 0.3" in r.stderr and "--allow-changed-settings" in r.stderr
    r = cli(*SMALL, "--steps", "4", "--lambda", "0.3", "--out", str(tmp_path), "--allow-changed-settings")
    assert r.returncode == 0, r.stderr
    assert len(list(csv.DictReader(open(tmp_path / "history.csv")))) == 4
    r = cli(*SMALL, "--steps", "3", "--lambda", "0.5", "--out", str(tmp_path), "--no-resume")
    assert r.returncode == 0 and len(list(csv.DictReader(open(tmp_path / "history.csv")))) == 3


@pytest.mark.parametrize("bad,needle", [
    (["--batch-size", "0"], "--batch-size"), (["--steps", "0"], "--steps"), (["--epochs", "0"], "--epochs"),
    (["--checkpoint-every", "0"], "--checkpoint-every"), (["--eta", "nan"], "--eta"), (["--lambda", "-1"], "--lambda"),
    (["--out", "/proc/not-writable"], "--out"), (["--steps", "100", "--epochs", "1"], "--epochs 1"),
    (["--device", "tpu"], "--device"), (["--data", "mnist"], "--data")])
def test_bad_values_are_one_line(tmp_path, bad, needle):
    args = SMALL + ["--steps", "2", "--out", str(tmp_path / "o")] + bad
    r = cli(*args)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr


def test_steps_are_honoured_exactly(tmp_path):
    # 1797 digits / 32 = 56 steps per epoch: 100 steps need a second epoch, which is taken
    r = cli(*SMALL, "--steps", "100", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert len(list(csv.DictReader(open(tmp_path / "history.csv")))) == 100


# --- sparsecoding lca learn: the dictionary file of the EqProp LCA front end -----------------------------------------

LEARN = ["lca", "learn", "--lca_feats", "8", "--lca_ksize", "5", "--lca_iters", "20", "--n-samples", "96",
         "--mbs", "32", "--quiet"]
JSON_KEYS = {"lca_feats", "in_channels", "lca_ksize", "lca_stride", "lca_lambda", "task", "epochs", "seed"}


def run_main(args, capsys):
    """``main(args)`` in this process: (exit status, stdout, stderr); argparse errors exit through SystemExit."""
    try:
        rc = main(args)
    except SystemExit as exc:
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def metrics(folder):
    return list(csv.DictReader(open(folder / "metrics.csv")))


def test_learn_digits_writes_the_dictionary_file(tmp_path, capsys):
    out = tmp_path / "dict"
    rc, stdout, err = run_main(LEARN + ["--epochs", "2", "--save-dir", str(out)], capsys)
    assert rc == 0, err
    w = np.load(out / "dictionary.npy")
    assert w.shape == (8, 1, 5, 5) and w.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(w.reshape(8, -1), axis=1), 1, rtol=1e-5)
    meta = json.loads((out / "dictionary.json").read_text())
    assert JSON_KEYS <= set(meta)
    assert {k: meta[k] for k in JSON_KEYS} == {"lca_feats": 8, "in_channels": 1, "lca_ksize": 5, "lca_stride": 2,
                                                "lca_lambda": 0.25, "task": "DIGITS", "epochs": 2, "seed": 0}
    assert meta["n_samples"] == 96 and meta["steps"] == 6 and meta["complete"] is True
    assert (out / "features.png").stat().st_size > 0 and (out / "checkpoint.npz").exists()
    rows = metrics(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"lambda", "energy", "frac_active"} <= set(rows[0])
    assert all(float(r["energy"]) > 0 and 0 < float(r["frac_active"]) < 1 for r in rows)
    line = stdout.strip()
    assert len(line.splitlines()) == 1 and str(out / "dictionary.npy") in line


def test_the_front_end_codes_preprocessed_inputs_with_the_file(tmp_path, capsys):
    # the file is a dictionary of the layer the front end builds: it loads and codes layer.preprocess(x)
    from sparsecoding.data import digits_split
    from sparsecoding.lca import LCAConv2D

    out = tmp_path / "dict"
    assert run_main(LEARN + ["--epochs", "1", "--save-dir", str(out)], capsys)[0] == 0
    meta = json.loads((out / "dictionary.json").read_text())
    layer = LCAConv2D(meta["lca_feats"], meta["in_channels"], kernel_size=meta["lca_ksize"], stride=meta["lca_stride"],
                      lambda_=meta["lca_lambda"], lca_iters=20, pad="same")
    layer.weights = np.load(out / "dictionary.npy")
    x = digits_split(1400, seed=12345)[0][:4]
    s = layer.preprocess(x)
    np.testing.assert_allclose(s.reshape(4, -1).mean(1), 0, atol=1e-5)
    # unit variance with ddof=1, as lca-pytorch (the population std, ddof=0, before issue 13)
    np.testing.assert_allclose(s.reshape(4, -1).std(1, ddof=1), 1, rtol=1e-4)
    acts = layer.solve(s)["acts"]
    assert acts.shape == (4, 8, 4, 4) and (acts >= 0).all() and (acts > 0).any()


@pytest.mark.parametrize("step,every", [(-0.1, 2), (-0.2, 1), (0.05, 3)])
def test_learn_lambda_schedule_is_applied(tmp_path, capsys, step, every):
    out = tmp_path / "dict"
    rc, _, err = run_main(LEARN + ["--epochs", "5", "--lca_iters", "5", "--lambda_step", str(step),
                                   "--lambda_every", str(every), "--save-dir", str(out)], capsys)
    assert rc == 0, err
    expected = [max(0.0, 0.25 + step * (e // every)) for e in range(5)]
    got = [float(r["lambda"]) for r in metrics(out)]
    assert got == pytest.approx(expected, abs=1e-12) and min(got) >= 0
    assert json.loads((out / "dictionary.json").read_text())["lca_lambda"] == pytest.approx(expected[-1], abs=1e-12)


def test_learn_resume_is_bit_identical(tmp_path, capsys):
    args = LEARN + ["--lambda_step", "-0.05", "--checkpoint-every", "2"]
    assert run_main(args + ["--epochs", "1", "--save-dir", str(tmp_path / "cut")], capsys)[0] == 0
    assert run_main(args + ["--epochs", "3", "--save-dir", str(tmp_path / "cut")], capsys)[0] == 0
    assert run_main(args + ["--epochs", "3", "--save-dir", str(tmp_path / "ref")], capsys)[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "cut" / "dictionary.npy"),
                                  np.load(tmp_path / "ref" / "dictionary.npy"))
    assert (tmp_path / "cut" / "metrics.csv").read_text() == (tmp_path / "ref" / "metrics.csv").read_text()
    assert (tmp_path / "cut" / "dictionary.json").read_text() == (tmp_path / "ref" / "dictionary.json").read_text()
    # the same command again: nothing left to do, the same files
    before = (tmp_path / "cut" / "dictionary.npy").read_bytes()
    assert run_main(args + ["--epochs", "3", "--save-dir", str(tmp_path / "cut")], capsys)[0] == 0
    assert (tmp_path / "cut" / "dictionary.npy").read_bytes() == before


def test_learn_ctrl_c_checkpoints_exits_130_and_resumes_bit_identical(tmp_path, capsys):
    run = [*LEARN, "--n-samples", "64", "--lca_iters", "10", "--epochs", "15", "--checkpoint-every", "1"]
    out = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "sparsecoding", *run, "--save-dir", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(out / "checkpoint.npz", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 130 and len(err.strip().splitlines()) == 1 and "interrupted" in err, err
    assert json.loads((out / "dictionary.json").read_text())["complete"] is False  # what it had
    assert run_main(run + ["--save-dir", str(out)], capsys)[0] == 0  # resumed
    assert run_main(run + ["--save-dir", str(tmp_path / "ref")], capsys)[0] == 0  # uninterrupted
    np.testing.assert_array_equal(np.load(out / "dictionary.npy"), np.load(tmp_path / "ref" / "dictionary.npy"))
    assert (out / "metrics.csv").read_text() == (tmp_path / "ref" / "metrics.csv").read_text()


def test_learn_changed_setting_is_refused_by_name(tmp_path, capsys):
    out = ["--save-dir", str(tmp_path)]
    assert run_main(LEARN + ["--epochs", "1"] + out, capsys)[0] == 0
    rc, _, err = run_main(LEARN + ["--epochs", "2", "--lca_lambda", "0.3"] + out, capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "lca_lambda: 0.25 -> 0.3" in err and "--allow-changed-settings" in err
    rc, _, err = run_main(LEARN + ["--epochs", "2", "--lca_ksize", "3"] + out, capsys)
    assert rc == 2 and "lca_ksize: 5 -> 3" in err
    rc, _, err = run_main(LEARN + ["--epochs", "2", "--lca_lambda", "0.3", "--allow-changed-settings"] + out, capsys)
    assert rc == 0, err
    assert [float(r["lambda"]) for r in metrics(tmp_path)] == [0.25, 0.3]
    rc, _, err = run_main(LEARN + ["--epochs", "1", "--lca_lambda", "0.5", "--no-resume"] + out, capsys)
    assert rc == 0, err
    assert [float(r["lambda"]) for r in metrics(tmp_path)] == [0.5]


def test_learn_cifar10_from_the_python_batches(tmp_path, capsys):
    from conftest import cifar_batch, write_batch

    for i in range(1, 6):
        write_batch(tmp_path, cifar_batch(n=4, seed=i), name=f"data_batch_{i}")
    out = tmp_path / "dict"
    rc, stdout, err = run_main(["lca", "learn", "--task", "CIFAR10", "--data-dir", str(tmp_path), "--lca_feats", "4",
                                "--lca_ksize", "5", "--lca_iters", "10", "--mbs", "8", "--epochs", "1",
                                "--save-dir", str(out), "--quiet"], capsys)
    assert rc == 0, err
    w = np.load(out / "dictionary.npy")
    assert w.shape == (4, 3, 5, 5) and w.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(w.reshape(4, -1), axis=1), 1, rtol=1e-5)
    meta = json.loads((out / "dictionary.json").read_text())
    assert meta["task"] == "CIFAR10" and meta["in_channels"] == 3 and meta["n_samples"] == 20 and meta["steps"] == 2
    assert len(metrics(out)) == 1 and (out / "features.png").exists() and str(out / "dictionary.npy") in stdout


@pytest.mark.parametrize("bad,needle", [
    (["--lca_ksize", "4"], "--lca_ksize"), (["--lca_feats", "0"], "--lca_feats"),
    (["--task", "CIFAR10"], "--data-dir"), (["--task", "CIFAR10", "--data-dir", "/nowhere"], "data_batch_1"),
    (["--task", "MNIST"], "--task"), (["--lca_lambda", "-1"], "--lca_lambda"), (["--lca_eta", "nan"], "--lca_eta"),
    (["--lca_solver", "ista"], "--lca_solver"), (["--mbs", "0"], "--mbs"), (["--epochs", "0"], "--epochs"),
    (["--lambda_every", "0"], "--lambda_every"), (["--lca_tol", "-1"], "--lca_tol"),
    (["--save-dir", "/proc/not-writable"], "--save-dir"), (["--device", "tpu"], "--device")])
def test_learn_bad_values_are_one_line(tmp_path, capsys, bad, needle):
    rc, _, err = run_main(LEARN + ["--epochs", "1", "--save-dir", str(tmp_path / "o")] + bad, capsys)
    assert rc not in (0, None) and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert err.startswith("sparsecoding lca learn: error:"), err


def test_learn_must_come_right_after_lca(capsys):
    rc, _, err = run_main(["lca", "--seed", "3", "learn", "--quiet"], capsys)  # --seed 3 would be ignored
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "right after 'lca'" in err and "--seed 3" in err
    from sparsecoding.cli import build_parser

    args = build_parser().parse_args(["lca", "--out", "learn"])  # a run folder named learn is the lca job's
    assert args.action is None and args.out == "learn" and args.command == "lca"
