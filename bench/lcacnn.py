"""The LCA front end for EqProp on DIGITS: the plain CNN and the three dictionary modes, one table.

Everything runs as a user runs it, through the command line, in one scratch folder:

1. ``sparsecoding lca learn --task DIGITS`` learns the dictionary file (16 atoms 5x5,
   stride 2, lambda 0.1, FISTA to a 1e-3 duality gap) into ``runs/lca-dict``, where
   ``sparsecoding eqprop --model LCACNN`` finds it by default;
2. ``sparsecoding eqprop --task DIGITS --thirdphase`` trains the plain CNN (channels
   16 32) and LCACNN (sparse layer 16, then conv 16 32: the same conv stack on the code)
   with ``--dict_training pretrained``, ``finetune`` and ``learn``, and ``finetune`` with
   feedback (``--scale_feedback 0.05``), same epochs, batches and learning rates.

Reported per run: final test accuracy, the fraction of active LCA units in the last
epoch, and the CPU time of the training process (user + system, children included).
Writes ``bench/results/lcacnn.json``.

Run: python -m bench.lcacnn [--epochs N]
"""
from __future__ import annotations

import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine_info, print_table, write_json

LCA = ["--lca_feats", "16", "--lca_ksize", "5", "--lca_stride", "2", "--lca_lambda", "0.1", "--lca_solver", "fista",
       "--lca_tol", "1e-3", "--lca_iters", "200"]
LEARN = ["lca", "learn", "--task", "DIGITS", *LCA, "--epochs", "5", "--quiet"]
COMMON = ["eqprop", "--task", "DIGITS", "--thirdphase", "--quiet"]
CNN = ["--model", "CNN", "--channels", "16", "32", "--kernels", "3", "3", "--pools", "mm", "--strides", "1", "1",
       "--paddings", "1", "1"]
LCACNN = ["--model", "LCACNN", "--channels", "16", "16", "32", "--kernels", "3", "3", "3", "--pools", "imm",
          "--strides", "1", "1", "1", "--paddings", "1", "1", "1", *LCA]
RUNS = [("CNN", CNN), ("LCACNN pretrained", LCACNN + ["--dict_training", "pretrained"]),
        ("LCACNN finetune", LCACNN + ["--dict_training", "finetune"]),
        ("LCACNN learn", LCACNN + ["--dict_training", "learn"]),
        ("LCACNN finetune, feedback 0.05", LCACNN + ["--dict_training", "finetune", "--scale_feedback", "0.05"])]


def _run(args, cwd):
    """Run ``sparsecoding args`` in ``cwd``; returns (wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sparsecoding", *args], cwd=cwd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    epochs = argv[argv.index("--epochs") + 1] if "--epochs" in argv else "10"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = _run(LEARN, tmp)
        print(f"dictionary: {wall:.1f} s wall, {cpu:.1f} s CPU ({' '.join(LEARN)})", flush=True)
        dict_cpu = cpu
        for name, extra in RUNS:
            folder = str(Path(tmp) / name.replace(" ", "_").replace(",", ""))
            args = COMMON + extra + ["--epochs", epochs, "--save-dir", folder]
            wall, cpu = _run(args, tmp)
            last = list(csv.DictReader(open(os.path.join(folder, "metrics.csv"))))[-1]
            rows.append({"model": name, "test_accuracy": round(1 - float(last["test_error"]), 4),
                         "lca_active": round(float(last["lca_active"]), 4) if last.get("lca_active") else "-",
                         "cpu_seconds": round(cpu, 1), "wall_seconds": round(wall, 1),
                         "command": "sparsecoding " + " ".join(args[:-2])})
            print(rows[-1], flush=True)
    print_table(rows, ["model", "test_accuracy", "lca_active", "cpu_seconds", "wall_seconds"])
    print(f"(the pretrained and finetune runs start from the dictionary of `sparsecoding {' '.join(LEARN)}`, "
          f"{dict_cpu:.1f} CPU s, not included above)")
    path = write_json("lcacnn", {"machine": machine_info(), "epochs": int(epochs), "dictionary_command":
                                 "sparsecoding " + " ".join(LEARN), "dictionary_cpu_seconds": dict_cpu, "runs": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
