"""Shared pieces of the command lines: checked argument types, the device switch, one-line errors.

Every command answers a bad value or a failed run with one line on stderr
(``sparsecoding <command>: error: <what>``) and a non-zero exit status, never
a traceback (``SPARSECODING_DEBUG=1`` shows the traceback). Ctrl-C during
training writes a checkpoint and what the run has so far, then exits with 130.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile

__all__ = ["CLIError", "HelpFormatter", "one_line_errors", "positive_int", "nonnegative_int", "positive_float",
           "nonnegative_float", "finite_float", "probability", "device_backend", "writable_dir", "run_command"]


class CLIError(Exception):
    """A user-facing error of a command line: printed as one line."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default after its help text (unless the text already states it, "(default ...")
    and keeps the description's line breaks. Flags show "(default: off)" / "(default: on)", lists as
    they are typed ("16 32")."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or "default:" in text or action.default is argparse.SUPPRESS:
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return f"{text} (default: {'on' if action.default else 'off'})"
        if isinstance(action.default, (list, tuple)) and (action.option_strings or action.nargs):
            shown = " ".join(str(v) for v in action.default).replace("%", "%%")
            return f"{text} (default: {shown})"
        return super()._get_help_string(action)


def one_line_errors(parser):
    """Make ``parser`` (and the parsers it creates later) report a bad value as one line, not usage + error."""

    def error(message):
        parser.exit(2, f"{parser.prog}: error: {message} (see --help)\n")

    parser.error = error
    return parser


def _number(kind, text):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _bounded(kind, accept, expected):
    """An argparse type: a finite number of ``kind`` for which ``accept(value)`` holds."""

    def parse(text):
        value = _number(kind, text)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = expected
    return parse


positive_int = _bounded(int, lambda v: v >= 1, "an integer >= 1")
nonnegative_int = _bounded(int, lambda v: v >= 0, "an integer >= 0")
finite_float = _bounded(float, lambda v: True, "a finite number")
positive_float = _bounded(float, lambda v: v > 0, "a number > 0")
nonnegative_float = _bounded(float, lambda v: v >= 0, "a number >= 0")
probability = _bounded(float, lambda v: 0 < v < 1, "a number strictly between 0 and 1")


def device_backend(device):
    """``--device`` (cpu, gpu, cuda or a GPU index) -> backend name; a GPU index is made current."""
    text = str(device).strip().lower()
    if text == "cpu":
        return "numpy"
    if text in ("gpu", "cuda") or text.isdigit():
        from .backend import BackendUnavailable, _load_cupy  # noqa: PLC0415

        try:
            cp = _load_cupy()
        except BackendUnavailable as exc:
            raise CLIError(f"--device {device}: {exc}") from None
        if text.isdigit():
            n = cp.cuda.runtime.getDeviceCount()
            if int(text) >= n:
                raise CLIError(f"--device {device}: only {n} GPU(s) visible")
            cp.cuda.Device(int(text)).use()
        return "cupy"
    raise CLIError(f"--device must be cpu, gpu or a GPU index, got {device!r}")


def writable_dir(path, option="--out"):
    """Create ``path`` if needed and check that files can be written there."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise CLIError(f"{option} {path!r} is not a writable folder ({exc.strerror or exc})") from None
    return path


def run_command(prog, func, args):
    """Run ``func(args)``; known failures become one line on stderr and an exit status."""
    from .training import SettingsChanged, TrainingInterrupted  # noqa: PLC0415

    if os.environ.get("SPARSECODING_DEBUG"):
        return func(args)
    try:
        return func(args)
    except TrainingInterrupted as exc:
        where = f"; checkpoint {exc.checkpoint}: run the same command to resume" if exc.checkpoint else ""
        print(f"{prog}: interrupted after {len(exc.history)} complete epoch(s){where}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except SettingsChanged as exc:
        hint = "" if "--allow-changed-settings" in str(exc) else \
            " (--allow-changed-settings accepts the change, --no-resume starts over)"
        print(f"{prog}: error: {exc}{hint}", file=sys.stderr)
        return 2
    except (CLIError, ValueError, TypeError, OSError, FloatingPointError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
