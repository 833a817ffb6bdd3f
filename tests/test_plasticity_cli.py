"""``sparsecoding lpl`` and ``sparsecoding foldiak`` end to end, in new processes, on bundled data.

The metrics printed after training equal those of evaluating the saved checkpoint;
a run stopped by SIGINT or SIGKILL and then resumed ends bit-identical to an
uninterrupted one; bad values and changed settings are one-line errors.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sparsecoding.checkpoint import load_checkpoint
from sparsecoding.cli import main

ENV = {k: v for k, v in os.environ.items() if k != "SPARSECODING_DEBUG"}
# short runs, long enough (a few hundred batches) for a signal to land mid-run
JOBS = {
    "foldiak": ["foldiak", "--task", "bars", "--n-samples", "4000", "--epochs", "2", "--checkpoint-every", "10",
                "--quiet"],
    "lpl": ["lpl", "--channels", "4", "8", "--pools", "mm", "--epochs", "3", "--mbs", "16", "--checkpoint-every", "5",
            "--quiet"],
}


def _run(args, timeout=180):
    return subprocess.run([sys.executable, "-m", "sparsecoding", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def _arrays(out):
    arrays, meta = load_checkpoint(out / "checkpoint.npz")
    return arrays, meta


@pytest.fixture(scope="module", params=sorted(JOBS))
def reference(request, tmp_path_factory):
    """An uninterrupted run of each job: (args, out folder, stdout)."""
    args = JOBS[request.param]
    out = tmp_path_factory.mktemp(request.param)
    r = _run(args + ["--out", str(out)])
    assert r.returncode == 0, r.stderr
    return args, out, r.stdout


def test_printed_metrics_equal_evaluation_of_the_checkpoint_in_a_new_process(reference):
    args, out, stdout = reference
    r = _run(args + ["--out", str(out), "--evaluate"])
    assert r.returncode == 0, r.stderr
    trained = stdout.strip().splitlines()
    assert len(trained) >= 2 and trained[:-1] == r.stdout.strip().splitlines()  # the last line: timing


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_and_resumed_run_ends_bit_identical(reference, sig, tmp_path):
    args, ref_out, _ = reference
    cmd = args + ["--out", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "-m", "sparsecoding", *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 120
    while not (tmp_path / "checkpoint.npz").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    arrays, meta = _arrays(tmp_path)
    loop = meta["loop"]
    assert loop["epoch"] < int(args[args.index("--epochs") + 1]), "the signal must land before the end of the run"
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "interrupted" in lines[0] and "resume" in lines[0], err
        written = "summary.json" if args[0] == "foldiak" else "readout.json"
        assert json.loads((tmp_path / written).read_text())["interrupted"] is True
    else:
        assert proc.returncode == -signal.SIGKILL
    r = _run(cmd)
    assert r.returncode == 0, r.stderr
    ref_arrays, ref_meta = _arrays(ref_out)
    arrays, meta = _arrays(tmp_path)
    assert sorted(arrays) == sorted(ref_arrays)
    for k in ref_arrays:
        np.testing.assert_array_equal(arrays[k], ref_arrays[k], err_msg=k)
    assert meta["model"] == ref_meta["model"]
    assert meta["loop"]["history"] == ref_meta["loop"]["history"]


@pytest.mark.parametrize("args, option", [
    (["foldiak", "--batch-size", "0"], "--batch-size"),
    (["foldiak", "--epochs", "0"], "--epochs"),
    (["foldiak", "--p", "1.5"], "--p"),
    (["foldiak", "--alpha", "nan"], "--alpha"),
    (["foldiak", "--beta", "-1"], "--beta"),
    (["foldiak", "--out", "/proc/no/such/folder"], "--out"),
    (["lpl", "--lr", "-1"], "--lr"),
    (["lpl", "--mbs", "0"], "--mbs"),
    (["lpl", "--channels", "8", "--pools", "mm"], "--pools"),
    (["lpl", "--n-train", "100000"], "--n-train"),
    (["lpl", "--data", "cifar10"], "--data-dir"),
    (["lpl", "--device", "tpu"], "--device"),
])
def test_invalid_value_is_one_line_naming_the_option(args, option, tmp_path):
    if "--out" not in args:
        args = args + ["--out", str(tmp_path)]
    r = _run(args, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1, r.stderr
    assert option in lines[0] and "Traceback" not in r.stderr


def test_changed_setting_is_an_error_unless_allowed_and_zero_is_kept(tmp_path):
    base = ["foldiak", "--n-samples", "240", "--batch-size", "8", "--warmup", "16", "--out", str(tmp_path), "--quiet"]
    assert _run(base + ["--beta", "0"]).returncode == 0
    arrays, meta = _arrays(tmp_path)
    assert meta["loop"]["settings"]["--beta"] == 0.0 and meta["loop"]["settings"]["beta"] == 0.0  # not the default
    r = _run(base)  # --beta back to its default 0.02
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "--beta 0.0 -> 0.02" in lines[0], r.stderr
    r = _run(base + ["--allow-changed-settings", "--epochs", "2"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["presentations"] == 16 + 2 * 240
    r = _run(base + ["--no-resume"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["presentations"] == 16 + 240
    r = _run(["foldiak", "--out", str(tmp_path / "empty"), "--evaluate"])
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "--evaluate" in r.stderr


def test_lpl_n_train_takes_the_first_images_of_digits(tmp_path):
    r = _run(["lpl", "--channels", "4", "--pools", "m", "--epochs", "1", "--mbs", "16", "--n-train", "64",
              "--out", str(tmp_path), "--quiet"])
    assert r.returncode == 0, r.stderr
    _, meta = _arrays(tmp_path)
    assert meta["model"]["optimizer"]["t"] == 64 // 16  # one Adam step per batch of the first 64 images


def test_foldiak_bars_job(tmp_path):
    assert main(["foldiak", "--task", "bars", "--n-samples", "3000", "--out", str(tmp_path), "--quiet"]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["distinct_bars"] == 16 and abs(s["mean_activity"] - 1 / 8) < 0.03
    assert (tmp_path / "weights.png").exists()


def test_lpl_job(tmp_path):
    assert main(["lpl", "--epochs", "1", "--channels", "8", "16", "--pools", "mm", "--out", str(tmp_path),
                 "--quiet"]) == 0
    r = json.loads((tmp_path / "readout.json").read_text())
    assert len(r["readout_accuracy"]["lpl"]) == 2 and all(0.1 < a <= 1 for a in r["readout_accuracy"]["lpl"])


def test_lpl_act_choices_are_the_activations_lpl_takes():
    import argparse

    from sparsecoding.cli import build_parser
    from sparsecoding.plasticity.lpl import LPL_ACTIVATIONS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    act = next(a for a in sub.choices["lpl"]._actions if a.dest == "act")
    assert sorted(act.choices) == sorted(LPL_ACTIVATIONS)
