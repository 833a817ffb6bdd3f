"""End-to-end runs of the command line on bundled data (small settings)."""
import csv
import json

import numpy as np

from sparsecoding.cli import main


def test_lca_digits_job_writes_outputs_and_resumes(tmp_path):
    out = tmp_path / "lca"
    args = ["lca", "--data", "digits", "--features", "16", "--steps", "4", "--batch-size", "32", "--lca-iters", "30",
            "--out", str(out), "--quiet", "--checkpoint-every", "2"]
    assert main(args) == 0
    for name in ("dictionary.png", "weights.npy", "history.csv", "checkpoint.npz", "energy.png"):
        assert (out / name).exists(), name
    w = np.load(out / "weights.npy")
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1, rtol=1e-5)
    assert main(args[:-3] + ["--steps", "6", "--quiet"]) == 0  # resumes from the checkpoint at step 4
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]


def test_eqprop_short_run_improves_and_resumes(tmp_path):
    base = ["eqprop", "--task", "DIGITS", "--channels", "8", "--kernels", "3", "--pools", "m", "--strides", "1",
            "--paddings", "1", "--fc", "10", "--T1", "15", "--T2", "5", "--mbs", "32", "--lrs", "0.1", "0.05",
            "--thirdphase", "--quiet", "--save-dir", str(tmp_path)]
    assert main(base + ["--epochs", "1"]) == 0
    assert main(base + ["--epochs", "2"]) == 0  # resumes at epoch 1
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[-1]["test_error"]) < 0.5  # chance is 0.9
    assert float(rows[1]["train_error"]) < float(rows[0]["train_error"])
    assert (tmp_path / "error_curves.png").exists() and (tmp_path / "args.json").exists()
    assert main(base + ["--todo", "evaluate"]) == 0
