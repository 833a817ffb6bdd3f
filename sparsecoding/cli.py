"""The ``sparsecoding`` command line: one subcommand per model family, each option's help with its default.

Each family registers its subcommand (``register(subparsers)`` in ``demo.py``,
``lca/cli.py``, ``plasticity/cli.py``, ``eqprop/cli.py``); bad values and failed
runs end with one line on stderr (:mod:`sparsecoding.cliutil`). ``sparsecoding
COMMAND --help`` describes a command and every option, with its default.
"""
from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .cliutil import CLIError, HelpFormatter, one_line_errors, run_command

DESCRIPTION = ("Sparse coding with the LCA, equilibrium propagation, LPL and Foldiak networks. Bad values end with "
               "one line on stderr\nand a non-zero exit status (SPARSECODING_DEBUG=1 shows the traceback).")

# the one line per command of ``sparsecoding --help`` (each family's own help may say more: it is replaced here so
# that the list stays one line a command at 80 columns)
COMMANDS = {
    "info": "versions and usable backends",
    "demo": "learn a conv dictionary on the bundled photos in about a minute",
    "lca": "LCA: learn dictionaries (also lca learn); code data (lca encode)",
    "lpl": "layer-local LPL training of a conv network, readout per layer",
    "foldiak": "Foldiak's anti-Hebbian network on bars or image patches",
    "eqprop": "equilibrium propagation training (EqProp reference options)",
    "bench": "run the benchmarks of a source checkout (--list names them)",
}

# the order ``sparsecoding bench`` lists and runs them in (other modules follow; readme, which writes the
# README's table from the others' results, comes last)
BENCH_ORDER = ("conv", "lca", "eqprop", "lpl", "foldiak", "lcacnn", "distributed", "accuracy", "peers", "readme")
NO_CHECKOUT = ("the benchmarks live in the source repository, not in the installed package: in a clone of it "
               "(git clone, then pip install -e .), run sparsecoding bench from its root, or python -m bench.NAME")


def _info(args):
    from . import __version__

    import os  # noqa: PLC0415

    import numba  # noqa: PLC0415
    import scipy  # noqa: PLC0415

    from .backend import BackendUnavailable, _load_cupy  # noqa: PLC0415
    from .ops._jit import cache_dir  # noqa: PLC0415
    from .ops.autotune import tune_file  # noqa: PLC0415
    from .ops.parallel import cpu_count, n_workers  # noqa: PLC0415

    workers = ("set by SPARSECODING_THREADS" if os.environ.get("SPARSECODING_THREADS")
               else "measured on this machine; SPARSECODING_THREADS=N sets it")
    try:
        _load_cupy()
        gpu = "usable"
    except BackendUnavailable as e:  # say why, in one line
        gpu = f"not usable ({str(e).splitlines()[0]})"
    print(f"sparsecoding {__version__}, numpy {np.__version__}, scipy {scipy.__version__}, numba {numba.__version__}\n"
          f"cupy: {gpu}\n"
          f"CPU worker threads: {n_workers()} of {cpu_count()} logical CPUs "
          f"({workers})\n"
          f"compiled kernels cache: {cache_dir() or 'none (compiling at each start)'}\n"
          f"engine choices measured on this machine: {tune_file()} (SPARSECODING_TUNE=off|refresh)")
    return 0


# --------------------------------------------------------------------------- bench
def _package_parent():
    """The folder above the imported package: the checkout's root for an editable install."""
    return Path(__file__).resolve().parent.parent


def _is_checkout(root):
    return all((root / p).is_file() for p in ("bench/__init__.py", "bench/common.py", "sparsecoding/__init__.py"))


def find_checkout(cwd=None):
    """The root of a source checkout holding ``bench/``: the current folder, else the package's parent; or None."""
    for root in (Path.cwd() if cwd is None else Path(cwd), _package_parent()):
        root = root.resolve()
        if _is_checkout(root):
            return root
    return None


def bench_modules(root):
    """``{name: (first docstring line, options of its Run: line, has --quick)}`` of the benchmarks in ``root/bench``,
    read without importing them (``python -m bench.NAME`` runs each)."""
    found = {}
    for path in sorted((root / "bench").iterdir()):
        if path.is_dir() and (path / "__main__.py").is_file():
            name, source = path.name, path / "__init__.py"
        elif path.suffix == ".py" and path.stem not in ("__init__", "common"):
            name, source = path.stem, path
            if "__main__" not in path.read_text(encoding="utf-8"):
                continue  # a helper module, not a benchmark
        else:
            continue
        main = path / "__main__.py" if path.is_dir() else path
        try:
            doc = ast.get_docstring(ast.parse(source.read_text(encoding="utf-8"))) or ""
            quick = "--quick" in main.read_text(encoding="utf-8")
        except (OSError, SyntaxError, ValueError):
            doc, quick = "", False
        lines = [ln.strip() for ln in doc.splitlines()]
        summary = lines[0] if lines else ""
        usage = next((ln for ln in lines if f"python -m bench.{name}" in ln), "")
        options = usage.split(f"python -m bench.{name}", 1)[1].split("``")[0].strip() if usage else ""
        found[name] = (summary, options, quick)
    rank = {n: i for i, n in enumerate(BENCH_ORDER)}
    order = sorted(found, key=lambda n: (n == "readme", rank.get(n, len(BENCH_ORDER)), n))
    return {n: found[n] for n in order}


def _bench(args):
    root = find_checkout()
    if root is None:
        raise CLIError(NO_CHECKOUT)
    modules = bench_modules(root)
    if args.list:
        width = max(map(len, modules))
        for name, (summary, options, _) in modules.items():
            print(f"{name:<{width}}  {summary}" + (f"  options: {options}" if options else ""))
        return 0
    unknown = [n for n in args.names if n not in modules]
    if unknown:
        raise CLIError(f"unknown benchmark(s) {', '.join(unknown)}; they are: {', '.join(modules)} (--list)")
    names = list(dict.fromkeys(args.names)) or list(modules)
    if args.quick and not args.names:
        slow = [n for n in names if not modules[n][2]]
        names = [n for n in names if modules[n][2]]
        print(f"--quick: running those with a quick mode ({', '.join(names)}); left out: {', '.join(slow)}")
    t0, failed = time.perf_counter(), []
    for name in names:
        extra = (["--quick"] if args.quick and modules[name][2] else []) + list(args.extra)
        if args.quick and not modules[name][2]:
            print(f"bench.{name} has no quick mode: it runs in full")
        cmd = [sys.executable, "-m", f"bench.{name}", *extra]
        print(f"== {' '.join(['python'] + cmd[1:])}  (in {root})", flush=True)
        rc = subprocess.run(cmd, cwd=root).returncode
        if rc:
            failed.append(f"{name} (exit {rc})")
    elapsed = time.perf_counter() - t0
    if failed:
        raise CLIError(f"{len(failed)} of {len(names)} benchmark(s) failed: {', '.join(failed)} ({elapsed:.0f} s)")
    print(f"ran {len(names)} benchmark(s) in {elapsed:.0f} s: {', '.join(names)}; "
          f"results in {root / 'bench' / 'results'}")
    return 0


def _register_bench(sub):
    p = sub.add_parser("bench", formatter_class=HelpFormatter,
                       help="run the benchmarks of a source checkout (--list names them)",
                       description="Run the benchmark modules of a source checkout (bench/ at the repository root: "
                       "the current folder, else the folder above the imported package), each as\n"
                       "python -m bench.NAME [--quick] [EXTRA ...] in the repository root with this interpreter.\n\n"
                       "  sparsecoding bench --list             one line per benchmark\n"
                       "  sparsecoding bench lca eqprop --quick the two, small workloads\n"
                       "  sparsecoding bench conv -- --backend cupy\n")
    one_line_errors(p)
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="benchmarks to run, in the order given (default: all of them, readme last)")
    p.add_argument("--list", action="store_true", help="name each benchmark with one line and exit")
    p.add_argument("--quick", action="store_true",
                   help="small workloads (passed to the benchmarks that have a quick mode; without NAMEs only "
                   "those run)")
    p.set_defaults(func=_bench, extra=[])
    return p


# --------------------------------------------------------------------------- the parser
def build_parser():
    from . import demo
    from .eqprop import cli as eqprop_cli
    from .lca import cli as lca_cli
    from .plasticity import cli as plasticity_cli

    parser = argparse.ArgumentParser(prog="sparsecoding", description=DESCRIPTION, formatter_class=HelpFormatter,
                                     epilog="Arguments after -- in sparsecoding bench go to every benchmark run.")
    one_line_errors(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of (sparsecoding COMMAND --help for its options):")
    p = sub.add_parser("info", formatter_class=HelpFormatter, help="versions and usable backends",
                       description="Print the versions of sparsecoding and numpy and whether cupy can be used.")
    p.set_defaults(func=_info)
    demo.register(sub)
    lca_cli.register(sub)
    plasticity_cli.register(sub)
    eqprop_cli.register(sub)
    _register_bench(sub)
    for action in sub._choices_actions:  # argparse's list of commands
        action.help = COMMANDS.get(action.dest, action.help)
    return parser


def _subparsers(parser):
    return {name: sp for a in parser._actions if isinstance(a, argparse._SubParsersAction)
            for name, sp in a.choices.items()}


def _unrecognized(parser, argv, rest):
    """One line for options the command does not know, naming the command and, where the option exists
    with '-' and '_' swapped (``lca`` spells ``--lca-iters``, ``lca learn`` the seed's ``--lca_iters``), it."""
    command = parser
    for token in argv:  # follow the subcommands named on the line
        sub = _subparsers(command)
        if token in sub:
            command = sub[token]
    known = {s for a in command._actions for s in a.option_strings}
    hints = []
    for token in rest:
        name = token.split("=", 1)[0]
        for other in ("--" + name[2:].replace("-", "_"), "--" + name[2:].replace("_", "-")):
            if name.startswith("--") and other != name and other in known:
                hints.append(f"{name} -> {other}")
    hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
    command.error(f"unrecognized arguments: {' '.join(rest)}{hint}")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if argv[:1] == ["bench"] and "--" in argv:  # everything after -- goes to the benchmarks
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest:
        _unrecognized(parser, argv, rest)
    if extra:
        args.extra = extra
    return run_command(f"sparsecoding {args.command}", args.func, args)


if __name__ == "__main__":
    sys.exit(main())
