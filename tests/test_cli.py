"""The top-level command: every family registered, `info`, one-line errors."""
import argparse
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from sparsecoding.cli import build_parser, main


def _commands(parser, prefix="sparsecoding"):
    """(name, parser) of every subcommand, nested ones (``lca learn``) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, p in action.choices.items():
                yield f"{prefix} {name}", p
                yield from _commands(p, f"{prefix} {name}")


def _shown(parser, action):
    """The help text of ``action`` as --help prints it (defaults filled in), on one line."""
    return " ".join(parser._get_formatter()._expand_help(action).split())


def test_every_family_is_registered_and_every_option_shows_its_default():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == {"info", "demo", "lca", "lpl", "foldiak", "eqprop", "bench"}
    commands = dict(_commands(parser))
    assert {"sparsecoding lca learn", "sparsecoding lca encode"} <= set(commands)
    checked = 0
    for name, p in [("sparsecoding", parser), *commands.items()]:
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            where = f"{name} {'/'.join(action.option_strings) or action.dest}"
            text = _shown(p, action)
            assert text, f"{where} has no help text"
            if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
                assert f"default: {'on' if action.default else 'off'}" in text, where
            elif action.default is None:  # the text says what happens without it
                assert "default" in text, f"{where}: {text!r}"
            else:
                shown = " ".join(map(str, action.default)) if isinstance(action.default, list) else \
                    str(action.default)
                assert "default" in text and shown in text, f"{where}: {text!r}"
            checked += 1
    assert checked > 150


def test_top_level_help_lists_every_command_on_one_line():
    r = subprocess.run([sys.executable, "-m", "sparsecoding", "--help"], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for name in ("info", "demo", "lca", "lpl", "foldiak", "eqprop", "bench"):
        i = next(i for i, line in enumerate(lines) if line.split()[:1] == [name])
        assert len(lines[i].split()) > 2, lines[i]  # the name and its description on one line
        assert lines[i + 1].split()[:1] in ([], ["options:"]) or lines[i + 1].startswith("    ") and \
            lines[i + 1].split()[0] in ("info", "demo", "lca", "lpl", "foldiak", "eqprop", "bench"), lines[i + 1]


def test_lca_learn_options_show_their_defaults():
    p = dict(_commands(build_parser()))["sparsecoding lca learn"]
    text = " ".join(p.format_help().split())
    for option, default in [("--lca_feats", 64), ("--lca_lambda", 0.25), ("--lca_tau", 100.0), ("--lca_eta", 0.01),
                            ("--lca_iters", 600), ("--lca_stride", 2), ("--lca_ksize", 9), ("--lca_solver", "lca"),
                            ("--task", "DIGITS"), ("--epochs", 5), ("--mbs", 32), ("--lambda_step", 0.0),
                            ("--save-dir", "runs/lca-dict")]:
        assert p.get_default(option.lstrip("-").replace("-", "_")) == default, option
        assert f"(default: {default})" in text, option
    assert "fewer iterations" in text


@pytest.mark.parametrize("argv", [["--help"], ["lca", "--help"], ["lca", "learn", "--help"],
                                  ["lca", "encode", "--help"], ["bench", "--help"]])
def test_help_of_every_level(argv):
    r = subprocess.run([sys.executable, "-m", "sparsecoding", *argv], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "" and r.stdout.startswith("usage: sparsecoding"), r.stderr
    if argv == ["lca", "--help"]:
        assert "learn" in r.stdout and "encode" in r.stdout


def test_lca_without_learn_is_the_lca_job():
    args = build_parser().parse_args(["lca", "--out", "x"])
    learn = build_parser().parse_args(["lca", "learn", "--save-dir", "x"])
    assert args.func.__module__ == "sparsecoding.lca.cli" and args.command == "lca" and args.out == "x"
    assert learn.func.__module__ == "sparsecoding.lca.learn_cli" and learn.command == "lca learn"


def test_info(capsys, monkeypatch, tmp_path):
    # versions, why cupy is (not) usable, the worker count and the cache folders, as the environment sets them
    import numba  # noqa: PLC0415

    monkeypatch.setenv("SPARSECODING_THREADS", "3")
    monkeypatch.setenv("SPARSECODING_CACHE_DIR", str(tmp_path))
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"numba {numba.__version__}" in out and "CPU worker threads: 3" in out
    assert str(tmp_path / "tune.json") in out
    assert "cupy: usable" in out or "cupy: not usable (" in out


def test_unknown_command_is_one_line():
    r = subprocess.run([sys.executable, "-m", "sparsecoding", "bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "invalid choice" in r.stderr


def test_demo_writes_its_pictures_and_says_where(tmp_path, capsys):
    # the one-minute demo with a short schedule: the three pictures, the energy falling, the paths printed
    assert main(["demo", "--out", str(tmp_path), "--steps", "6", "--n-samples", "96", "--features", "8",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    for name in ("features.png", "reconstruction.png", "energy.png"):
        assert (tmp_path / name).stat().st_size > 1000 and str(tmp_path / name) in out
    first, last = (float(v) for v in re.search(r"energy per sample ([\d.]+) -> ([\d.]+)", out).groups())
    assert "6 dictionary steps" in out and last < first
    # the saved layer codes new crops through `lca encode --model <demo folder>`: unit-norm atoms,
    # and codes whose energy is below that of the zero code (1/2 ||s||^2 = (D - 1)/2 per standardised crop)
    assert str(tmp_path / "model.npz") in out
    crops = np.random.default_rng(1).standard_normal((5, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "crops.npy", crops)
    assert main(["lca", "encode", "--model", str(tmp_path), "--input", str(tmp_path / "crops.npy"),
                 "--out", str(tmp_path / "codes.npz")]) == 0
    with np.load(tmp_path / "codes.npz") as f:
        assert f["codes"].shape == (5, 8, 16, 16) and (f["codes"] >= 0).all()
        assert (f["energy"] < 0.5 * (3 * 32 * 32 - 1)).all()


# --------------------------------------------------------------------------- bench
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHES = ("conv", "lca", "eqprop", "lpl", "foldiak", "lcacnn", "distributed", "accuracy", "peers", "readme")


def test_bench_list_from_the_checkout():
    r = subprocess.run([sys.executable, "-m", "sparsecoding", "bench", "--list"], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert set(BENCHES) <= set(names) and names[-1] == "readme" and len(names) == len(set(names))
    for line in r.stdout.splitlines():  # the name, then the first line of the module's docstring
        name, summary = line.split(None, 1)
        doc = open(os.path.join(ROOT, "bench", name, "__init__.py") if name == "peers" else
                   os.path.join(ROOT, "bench", f"{name}.py"), encoding="utf-8").read().split('"""')[1]
        assert summary.startswith(doc.strip().splitlines()[0]), line


def test_bench_outside_a_checkout_says_where_the_benchmarks_are(tmp_path, monkeypatch, capsys):
    from sparsecoding import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "_package_parent", lambda: tmp_path)  # an installed package: no bench/ beside it
    for argv in (["bench", "--list"], ["bench", "lca"]):
        assert main(argv) == 1
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1
        assert "the benchmarks live in the source repository" in err and "python -m bench.NAME" in err


@pytest.fixture
def fake_checkout(tmp_path, monkeypatch):
    """A checkout with two benchmark modules that record how they were run."""
    from sparsecoding import cli

    (tmp_path / "sparsecoding").mkdir()
    (tmp_path / "sparsecoding" / "__init__.py").write_text("")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "__init__.py").write_text("")
    (tmp_path / "bench" / "common.py").write_text('"""helpers, not a benchmark"""\n')
    body = ('import json, os, sys\n'
            'if __name__ == "__main__":\n'
            '    open("{name}.json", "w").write(json.dumps([sys.executable, os.getcwd(), sys.argv[1:]]))\n'
            '    sys.exit({rc})\n')
    (tmp_path / "bench" / "fast.py").write_text('"""A fast one.\n\nRun: python -m bench.fast [--quick]\n"""\n'
                                                + body.format(name="fast", rc=0))
    (tmp_path / "bench" / "slow.py").write_text('"""A slow one that fails."""\n' + body.format(name="slow", rc=3))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "_package_parent", lambda: tmp_path / "elsewhere")
    return tmp_path


def test_bench_runs_modules_in_the_checkout_with_the_same_interpreter(fake_checkout, capsys):
    import json

    assert main(["bench", "--list"]) == 0
    assert capsys.readouterr().out.splitlines() == ["fast  A fast one.  options: [--quick]",
                                                    "slow  A slow one that fails."]
    assert main(["bench", "fast", "--quick", "--", "--backend", "cupy"]) == 0
    run = json.loads((fake_checkout / "fast.json").read_text())
    assert run == [sys.executable, str(fake_checkout), ["--quick", "--backend", "cupy"]]
    assert "ran 1 benchmark(s)" in capsys.readouterr().out
    # --quick without names: only the modules with a quick mode; a failing module is one line and exit 1
    (fake_checkout / "fast.json").unlink()
    assert main(["bench", "--quick"]) == 0 and (fake_checkout / "fast.json").exists()
    assert not (fake_checkout / "slow.json").exists() and "left out: slow" in capsys.readouterr().out
    assert main(["bench", "slow", "fast"]) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(r"sparsecoding bench: error: 1 of 2 benchmark\(s\) failed: slow \(exit 3\) \(\d+ s\)\n", err)
    assert json.loads((fake_checkout / "slow.json").read_text())[2] == []
    assert main(["bench", "nope"]) == 1
    assert "unknown benchmark(s) nope; they are: fast, slow" in capsys.readouterr().err


def test_an_option_spelled_with_the_other_separator_gets_a_hint():
    # `lca` spells --lca-iters, `lca learn` keeps the seed's --lca_iters: one line naming the right spelling
    r = subprocess.run([sys.executable, "-m", "sparsecoding", "lca", "learn", "--lca-iters", "5"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("sparsecoding lca learn: error: unrecognized arguments: --lca-iters 5")
    assert "did you mean --lca-iters -> --lca_iters?" in r.stderr
