"""What the README's user commands reach, run exactly as a user runs them.

* EqProp: ``sparsecoding eqprop --task DIGITS --thirdphase --epochs 10`` in a run
  folder, then ``--todo evaluate`` of that folder in a new process: final test
  error, seconds per epoch, and whether the reloaded checkpoint gives the same
  error (the stale-weights bug of an earlier version made them differ).
* The main job (``--demo``): ``sparsecoding demo --out <folder>`` with its defaults: wall
  time (the README promises about a minute on 2 cores), energy before and after, fraction
  active, and that the three pictures were written.
* LCA job (``--lca``): ``sparsecoding lca --out <folder>`` with its
  defaults: wall time, final energy and fraction active.

Writes ``bench/results/accuracy.json``; ``python -m bench.readme`` puts the
figures into the README.

Run: python -m bench.accuracy [--demo] [--lca] [--no-eqprop] [--epochs N]
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine_info, write_json

EQPROP = ["eqprop", "--task", "DIGITS", "--thirdphase"]


def _sparsecoding(args, **kw):
    return subprocess.run([sys.executable, "-m", "sparsecoding", *args], check=True, capture_output=True, text=True,
                          **kw)


def eqprop(epochs):
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(Path(tmp) / "run")
        command = EQPROP + ["--epochs", str(epochs)]
        t0 = time.perf_counter()
        _sparsecoding(command + ["--save-dir", folder, "--quiet"])
        wall = time.perf_counter() - t0
        rows = list(csv.DictReader(open(Path(folder) / "metrics.csv")))
        out = _sparsecoding(command + ["--save-dir", folder, "--todo", "evaluate"]).stdout
        evaluated = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])["test_error"]
    last = rows[-1]
    return {"command": "sparsecoding " + " ".join(command), "epochs": len(rows),
            "test_error": float(last["test_error"]), "test_accuracy": 1 - float(last["test_error"]),
            "train_error": float(last["train_error"]),
            "seconds_per_epoch": sum(float(r["seconds"]) for r in rows) / len(rows), "wall_seconds": wall,
            "evaluate_test_error": evaluated, "evaluate_matches": abs(evaluated - float(last["test_error"])) < 1e-12}


def lca_main_job():
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = _sparsecoding(["lca", "--out", str(Path(tmp) / "lca"), "--quiet"]).stdout
        wall = time.perf_counter() - t0
        rows = list(csv.DictReader(open(Path(tmp) / "lca" / "history.csv")))
    last = rows[-1]
    return {"command": "sparsecoding lca --out runs/lca", "wall_seconds": wall, "steps": len(rows),
            "energy": float(last["energy"]), "frac_active": float(last["frac_active"]), "stdout": out.strip()}


def demo_main_job():
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp) / "demo"
        t0 = time.perf_counter()
        out = _sparsecoding(["demo", "--out", str(out_dir), "--quiet"]).stdout
        wall = time.perf_counter() - t0
        pictures = sorted(p.name for p in out_dir.glob("*.png"))
    first = out.strip().splitlines()[0]  # "<steps> dictionary steps in <s> s; energy per sample a -> b (...), fraction active f (...)"
    e0, e1 = re.search(r"energy per sample ([\d.]+) -> ([\d.]+)", first).groups()
    return {"command": "sparsecoding demo", "wall_seconds": wall, "summary": first,
            "steps": int(first.split()[0]), "energy_first": float(e0),
            "energy_last": float(e1), "frac_active": float(re.search(r"fraction active ([\d.]+)", first).group(1)),
            "pictures": pictures}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.split("\n\n")[0],
                                epilog="Each part records the machine and code it ran on; parts not re-run are kept.")
    p.add_argument("--demo", action="store_true", help="time the main job, sparsecoding demo (default: off)")
    p.add_argument("--lca", action="store_true", help="run sparsecoding lca with its defaults (default: off)")
    p.add_argument("--no-eqprop", action="store_true", help="skip the EqProp DIGITS run (default: run it)")
    p.add_argument("--epochs", type=int, default=10, help="EqProp epochs (default: %(default)s)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    machine = machine_info()
    payload = {}
    previous = Path(__file__).resolve().parent / "results" / "accuracy.json"
    if previous.exists():  # keep the parts not re-run this time, with the machine each ran on
        payload = json.loads(previous.read_text())
        old_machine = payload.pop("machine", None)
        for part in payload.values():
            if isinstance(part, dict) and old_machine is not None:
                part.setdefault("machine", old_machine)
    for flag, name, job in ((not args.no_eqprop, "eqprop_digits", lambda: eqprop(args.epochs)),
                            (args.demo, "demo_main_job", demo_main_job), (args.lca, "lca_main_job", lca_main_job)):
        if flag:
            payload[name] = job() | {"machine": machine}
            print(json.dumps(payload[name], indent=1))
    print(f"wrote {write_json('accuracy', payload)}")


if __name__ == "__main__":
    main()
