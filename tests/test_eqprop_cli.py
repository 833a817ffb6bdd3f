"""End-to-end runs of ``sparsecoding eqprop`` on the bundled digits (small settings).

Training and evaluation run in subprocesses, as a user runs them: the test error printed at
the end of training equals ``--todo evaluate`` of the run folder in a new process, and a run
interrupted by SIGINT or SIGKILL and resumed ends with bit-identical checkpoint arrays.
"""
import csv
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

# a small CNN whose batches take a few tens of milliseconds: slow enough to be interrupted mid-run
SMALL = ["--task", "DIGITS", "--n-train", "256", "--n-test", "64", "--mbs", "32", "--T1", "30", "--T2", "10",
         "--epochs", "2", "--quiet"]


def _command(args):
    return [sys.executable, "-m", "sparsecoding", "eqprop", *args]


def _run(args, cwd, **kw):
    return subprocess.run(_command(args), capture_output=True, text=True, timeout=300, cwd=cwd, **kw)


def _start(args, cwd):
    return subprocess.Popen(_command(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)


def _records(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _position(ck):
    """(epoch, batch) of the checkpoint, None before the first one exists."""
    try:
        with np.load(ck) as z:
            loop = json.loads(bytes(z["__meta__"]).decode())["loop"]
    except FileNotFoundError:
        return None
    return loop["epoch"], loop["batch"]


def _file_id(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _wait_for(proc, ck, reached, timeout=120):
    """Poll until ``proc`` has written a checkpoint (a new file: writes are atomic renames) at a position
    for which ``reached(position)`` holds."""
    old = _file_id(ck)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        pos = _position(ck) if _file_id(ck) != old else None
        if pos is not None and reached(pos):
            return pos
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (status {proc.returncode}) before the interruption point; "
                        f"stdout {out!r} stderr {err!r}")
        time.sleep(0.003)
    proc.kill()
    pytest.fail("no checkpoint in time")


def _assert_same_arrays(ck_a, ck_b):
    a, _ = load_checkpoint(ck_a)
    b, _ = load_checkpoint(ck_b)
    assert sorted(a) == sorted(b)
    assert any(k.startswith("opt_") for k in a)  # the optimiser's buffers are in the checkpoint
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def _metrics(folder):
    rows = list(csv.DictReader(open(folder / "metrics.csv")))
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _one_line(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


LCA_SMALL = ["--channels", "8", "8", "16", "--kernels", "3", "3", "3", "--pools", "imm", "--strides", "1", "1", "1",
             "--paddings", "1", "1", "1", "--lca_ksize", "5", "--lca_stride", "1", "--lca_solver", "fista",
             "--lca_iters", "40", "--lca_tol", "1e-3", "--lca_lambda", "0.1", "--scale_feedback", "0.02"]


@pytest.mark.parametrize("model, net", [("CNN", ["--channels", "8", "16"]), ("MLP", ["--fc", "32", "10"]),
                                        ("LCACNN", LCA_SMALL + ["--dict_training", "learn"])])
def test_evaluate_in_a_new_process_reproduces_the_training_test_error(tmp_path, model, net):
    folder = tmp_path / "run"
    args = SMALL + ["--model", model, *net, "--save-dir", str(folder)]
    first = _run(args + ["--epochs", "1"], tmp_path)  # the last --epochs counts: one epoch
    assert first.returncode == 0, first.stderr
    done = _run(args, tmp_path)  # a larger --epochs (no --lr-decay) continues the run
    assert done.returncode == 0, done.stderr
    records = _records(done.stdout)
    assert [r["epoch"] for r in records] == [1, 2]
    assert [int(r["epoch"]) for r in _metrics(folder)] == [1, 2]
    # the run's T1 and --n-test are used, whatever this command says
    ev = _run(args + ["--todo", "evaluate", "--T1", "3"], tmp_path)
    assert ev.returncode == 0, ev.stderr
    result = _records(ev.stdout)[-1]
    assert result["T1"] == 30 and result["n_test"] == 64
    assert result["test_error"] == records[-1]["test_error"]
    assert f"test error {records[-1]['test_error']:.4f} after 2 epoch(s)" in done.stdout


@pytest.mark.parametrize("flag", ["--random-sign", "--data-aug", "--lr-decay", "--thirdphase"])
def test_interrupted_runs_resume_bit_identically(tmp_path, flag):
    args = SMALL + ["--checkpoint-every", "2", flag]
    ref_folder, folder = tmp_path / "reference", tmp_path / "run"
    reference = _start(args + ["--save-dir", str(ref_folder)], tmp_path)  # uninterrupted, alongside
    ck = str(folder / "checkpoint.npz")
    run = args + ["--save-dir", str(folder)]

    # SIGKILL once the first mid-epoch checkpoint exists: resume from the last checkpoint on disk
    proc = _start(run, tmp_path)
    _wait_for(proc, ck, lambda pos: True)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    # resume; SIGINT in the second epoch: checkpoint, metrics and curves of the epoch done, status 130
    proc = _start(run, tmp_path)
    _wait_for(proc, ck, lambda pos: pos[0] >= 1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted after 1 complete epoch(s)" in _one_line(err)
    assert _position(ck)[0] == 1
    assert [int(r["epoch"]) for r in _metrics(folder)] == [1]
    assert (folder / "error_curves.png").exists()

    # resume to the end
    done = _run(run, tmp_path)
    assert done.returncode == 0, done.stderr
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err
    _assert_same_arrays(ref_folder / "checkpoint.npz", folder / "checkpoint.npz")
    assert _metrics(folder) == _metrics(ref_folder)
    assert _records(done.stdout)[-1]["test_error"] == _records(out)[-1]["test_error"]


def test_short_run_improves_resumes_and_checks_settings(tmp_path, capsys):
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
    capsys.readouterr()
    # a changed setting is refused with one line naming it; the override is explicit
    assert main(base + ["--epochs", "3", "--T2", "6"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "--T2: 5 -> 6" in line and "--allow-changed-settings" in line
    assert main(base + ["--epochs", "2", "--T2", "6", "--allow-changed-settings"]) == 0
    # evaluate refuses another architecture
    assert main(base + ["--todo", "evaluate", "--channels", "4"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "--channels 8" in line and "not 4" in line
    assert main(base + ["--todo", "evaluate"]) == 0


def test_lr_decay_makes_epochs_a_setting(tmp_path, capsys):
    base = ["eqprop", "--channels", "4", "--kernels", "3", "--pools", "m", "--strides", "1", "--paddings", "1",
            "--T1", "5", "--T2", "2", "--n-train", "64", "--n-test", "16", "--lr-decay", "--quiet", "--save-dir",
            str(tmp_path)]
    assert main(base + ["--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(base + ["--epochs", "2"]) == 2
    assert "--epochs: 1 -> 2" in _one_line(capsys.readouterr().err)


LCA_NET = ["--channels", "6", "4", "--kernels", "3", "3", "--pools", "im", "--strides", "1", "1", "--paddings", "1", "1",
           "--lca_ksize", "3"]
BAD = [
    (["--mbs", "0"], "--mbs"), (["--epochs", "0"], "--epochs"), (["--T1", "0"], "--T1"), (["--T2", "-1"], "--T2"),
    (["--betas", "nan", "1"], "--betas"), (["--betas", "0.5", "0.5"], "--betas"),
    (["--thirdphase", "--betas", "0.5", "0"], "--betas"), (["--lrs", "-1"], "--lrs"), (["--wds", "inf"], "--wds"),
    (["--mmt", "1"], "--mmt"), (["--scale", "0"], "--scale"), (["--tol", "-1"], "--tol"), (["--seed", "-2"], "--seed"),
    (["--fc", "5"], "--fc"), (["--fc", "32", "5"], "--fc"), (["--kernels", "3"], "--kernels"),
    (["--strides", "1", "1", "1"], "--strides"), (["--paddings", "1"], "--paddings"), (["--pools", "m"], "--pools"),
    (["--pools", "mx"], "--pools"), (["--channels", "0", "8"], "--channels"), (["--kernels", "11", "3"], "--kernels"),
    (["--channels", "4", "4", "4", "4", "--kernels", "3", "3", "3", "3", "--strides", "1", "1", "1", "1",
      "--paddings", "1", "1", "1", "1", "--pools", "mmmm"], "--pools"),
    (["--model", "MLP", "--softmax"], "--softmax"), (["--act", "relu"], "--act"), (["--n-train", "0"], "--n-train"),
    (["--n-train", "5000"], "--n-train"), (["--n-test", "5000"], "--n-test"), (["--task", "MNIST"], "--data-dir"),
    (["--model", "LCACNN"], "LCACNN"), (["--lca_feats", "8"], "--lca_feats"), (["--lca_lambda", "0.1"], "--lca_lambda"),
    (["--scale_feedback", "0"], "--scale_feedback"), (["--dict_training", "learn"], "--dict_training"),
    (["--dict_training", "None"], "--dict_training"), (["--device", "tpu"], "--device"),
    (["--checkpoint-every", "0"], "--checkpoint-every"), (["--todo", "evaluate"], "--save-dir"),
    # the LCA front end: the reference layout (sparse slot first), the dictionary file, the options
    (["--model", "LCACNN", "--pools", "mi"], "--pools"), (["--model", "LCACNN", "--channels", "8"], "--channels"),
    (["--model", "LCACNN", *LCA_NET, "--lca_feats", "8"], "--lca_feats"),
    (["--model", "LCACNN", *LCA_NET, "--lca_ksize", "4"], "--lca_ksize"),
    (["--model", "LCACNN", *LCA_NET, "--dict_training", "finetune", "--lca_dict", "missing.npy"], "--lca_dict"),
    (["--model", "LCACNN", *LCA_NET, "--lca_dict", "x.npy", "--dict_training", "learn"], "--lca_dict"),
    (["--model", "LCACNN", *LCA_NET, "--scale_feedback", "-1"], "--scale_feedback"),
    (["--model", "LCACNN", *LCA_NET, "--todo", "gducheck"], "gducheck"),
]


@pytest.mark.parametrize("extra, option", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_values_are_one_line_errors_naming_the_option(tmp_path, capsys, extra, option):
    argv = ["eqprop", "--n-train", "32", "--n-test", "8", "--epochs", "1", "--T1", "2", "--T2", "1", "--quiet",
            *extra]
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse
        status = exc.code
    assert status not in (0, None)
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("sparsecoding eqprop: error: ") and option in line, line
    lca_option = extra[0].startswith("--lca") or extra[0] in ("--scale_feedback", "--dict_training")
    if lca_option and extra[1] != "None":
        assert "needs --model LCACNN" in line


def test_one_line_errors_in_a_real_process(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for extra, option in ((["--mbs", "0"], "--mbs"), (["--fc", "5"], "--fc"),
                          (["--save-dir", str(blocker / "run")], "--save-dir")):
        r = _run(["--n-train", "32", "--epochs", "1", "--quiet", *extra], tmp_path)
        assert r.returncode != 0 and option in _one_line(r.stderr)


def test_help_documents_every_option():
    from argparse import ArgumentParser

    from sparsecoding.eqprop.cli import add_arguments

    p = add_arguments(ArgumentParser())
    for action in p._actions:
        assert action.help, action.option_strings
        assert None not in (action.choices or ())


def _write_cifar10(folder, n):
    """``n`` random images per batch file in the standard python-batch format (``cifar-10-batches-py``)."""
    from conftest import cifar_batch, write_batch

    folder.mkdir()
    for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        write_batch(folder, cifar_batch(n=n, seed=i), name=name)


SEED_LCACNN = ("--model LCACNN --task CIFAR10 --data-aug --channels 64 256 512 --kernels 3 3 3 --pools immmm "
               "--strides 1 1 1 1 --paddings 1 1 1 1 --fc 10 --optim sgd --lrs 0.25 0.15 0.1 0.08 --wds 3e-4 3e-4 "
               "3e-4 3e-4 3e-4 --mmt 0.9 --lr-decay --epochs 120 --act my_hard_sig --todo train --T1 250 --T2 50 "
               "--mbs 128 --alg EP --betas 0.0 0.5 --scale 0.5 --thirdphase --loss cel --softmax --save --seed 2 "
               "--lca_feats 64 --lca_lambda 0.25 --lca_tau 100 --lca_eta 0.05 --lca_iters 600 --lca_stride 2 "
               "--lca_ksize 9 --dict_training {mode}")


@pytest.mark.parametrize("mode", ["pretrained", "finetune", "learn"])
def test_the_seeds_lcacnn_command_lines_run_on_cifar10_files(tmp_path, mode):
    # the seed's three LCACNN lines as written, plus --data-dir (4 images per batch file written here) and,
    # appended (the last value counts), a short schedule: one epoch, few steps
    _write_cifar10(tmp_path / "data", 4)
    D = np.random.default_rng(1).standard_normal((64, 3, 9, 9)).astype(np.float32)
    (tmp_path / "runs" / "lca-dict").mkdir(parents=True)
    np.save(tmp_path / "runs" / "lca-dict" / "dictionary.npy", D / np.linalg.norm(D.reshape(64, -1), axis=1)[:, None,
                                                                                                        None, None])
    args = SEED_LCACNN.format(mode=mode).split() + ["--data-dir", "data", "--epochs", "1", "--T1", "3", "--T2", "2",
                                                    "--quiet"]
    done = _run(args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ignoring values beyond the 3 layers of --channels" in done.stderr  # --strides, --paddings, --pools, --wds
    (folder,) = (tmp_path / "runs").glob("eqprop-*")
    for name in ("checkpoint.npz", "metrics.csv", "error_curves.png", "lca_dictionary.png", "dictionary.npy"):
        assert (folder / name).exists(), name
    row = _metrics(folder)[-1]
    assert 0 < float(row["lca_active"]) < 1 and "test_error" in row
    D_after = np.load(folder / "dictionary.npy")
    assert np.array_equal(D_after, np.load(tmp_path / "runs" / "lca-dict" / "dictionary.npy")) == (mode == "pretrained")
    # the run folder alone is enough: architecture, task and phases come from its checkpoint
    ev = _run(["--todo", "evaluate", "--save-dir", str(folder), "--data-dir", "data"], tmp_path)
    assert ev.returncode == 0, ev.stderr
    assert _records(ev.stdout)[-1]["test_error"] == json.loads(done.stdout.splitlines()[0])["test_error"]


def test_dictionary_json_sets_and_checks_the_geometry(tmp_path, capsys):
    # `sparsecoding lca learn` writes dictionary.json beside dictionary.npy: its stride cannot be read from the
    # array's shape, so it sets the geometry the options leave out and refuses a different one
    D = np.random.default_rng(0).standard_normal((6, 1, 3, 3)).astype(np.float32)
    np.save(tmp_path / "dictionary.npy", D / np.linalg.norm(D.reshape(6, -1), axis=1)[:, None, None, None])
    (tmp_path / "dictionary.json").write_text(json.dumps({"lca_feats": 6, "lca_ksize": 3, "lca_stride": 1}))
    base = ["eqprop", "--model", "LCACNN", "--channels", "6", "4", "--kernels", "3", "3", "--pools", "im",
            "--strides", "1", "1", "--paddings", "1", "1", "--lca_dict", str(tmp_path / "dictionary.npy"),
            "--n-train", "32", "--n-test", "8", "--epochs", "1", "--T1", "2", "--T2", "1", "--quiet",
            "--lca_iters", "3"]
    assert main(base) == 0  # --lca_ksize 3 and --lca_stride 1 from the JSON (the defaults are 9 and 2)
    status = main(base + ["--lca_stride", "2"])
    line = _one_line(capsys.readouterr().err)
    assert status != 0 and "--lca_stride 2: the dictionary file was learned with --lca_stride 1" in line
