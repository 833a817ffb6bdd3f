"""`sparsecoding lca` end to end, in new processes: outputs, evaluate, exact resume, settings, bad values."""
import csv
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
