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
