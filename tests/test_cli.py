"""The top-level command: every family registered, `info`, one-line errors."""
import subprocess
import sys

from sparsecoding.cli import build_parser, main


def test_every_family_is_registered_and_every_option_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == {"info", "lca", "lpl", "foldiak", "eqprop"}
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.dest != "help":
                assert action.help, f"sparsecoding {name} {action.option_strings} has no help text"


def test_info(capsys):
    assert main(["info"]) == 0
    assert "sparsecoding" in capsys.readouterr().out


def test_unknown_command_is_one_line():
    r = subprocess.run([sys.executable, "-m", "sparsecoding", "bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "invalid choice" in r.stderr
