"""The top-level command: every family registered, `info`, one-line errors."""
import argparse
import subprocess
import sys

import pytest

from sparsecoding.cli import build_parser, main


def _commands(parser, prefix="sparsecoding"):
    """(name, parser) of every subcommand, nested ones (``lca learn``) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, p in action.choices.items():
                yield f"{prefix} {name}", p
                yield from _commands(p, f"{prefix} {name}")


def test_every_family_is_registered_and_every_option_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == {"info", "demo", "lca", "lpl", "foldiak", "eqprop"}
    commands = dict(_commands(parser))
    assert "sparsecoding lca learn" in commands
    for name, p in commands.items():
        for action in p._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.option_strings or action.dest} has no help text"


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


@pytest.mark.parametrize("argv", [["--help"], ["lca", "--help"], ["lca", "learn", "--help"]])
def test_help_of_every_level(argv):
    r = subprocess.run([sys.executable, "-m", "sparsecoding", *argv], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "" and r.stdout.startswith("usage: sparsecoding"), r.stderr
    if argv[0] == "lca":
        assert "learn" in r.stdout


def test_lca_without_learn_is_the_lca_job():
    args = build_parser().parse_args(["lca", "--out", "x"])
    learn = build_parser().parse_args(["lca", "learn", "--save-dir", "x"])
    assert args.func.__module__ == "sparsecoding.lca.cli" and args.command == "lca" and args.out == "x"
    assert learn.func.__module__ == "sparsecoding.lca.learn_cli" and learn.command == "lca learn"


def test_info(capsys):
    assert main(["info"]) == 0
    assert "sparsecoding" in capsys.readouterr().out


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
    first, last = (float(v) for v in out.split("energy per sample ")[1].split(",")[0].split(" -> "))
    assert "6 dictionary steps" in out and last < first
