"""The ``sparsecoding`` command line: one subcommand per model family.

    sparsecoding demo      a convolutional dictionary on the bundled photographs in about a minute
    sparsecoding lca       learn a dictionary on bundled data and save its picture
    sparsecoding lpl       layer-local LPL training, linear readout per layer
    sparsecoding foldiak   Foldiak's anti-Hebbian network (bars, natural-image patches)
    sparsecoding eqprop    equilibrium propagation (the EqProp reference code's arguments)
    sparsecoding info      versions and usable backends

Each family registers its subcommand (``register(subparsers)`` in
``lca/cli.py``, ``plasticity/cli.py``, ``eqprop/cli.py``); bad values and
failed runs end with one line on stderr (:mod:`sparsecoding.cliutil`).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from .cliutil import HelpFormatter, one_line_errors, run_command


def _info(args):
    from . import __version__
    from .backend import cupy_available

    print(f"sparsecoding {__version__}, numpy {np.__version__}, cupy usable: {cupy_available()}")
    return 0


def build_parser():
    from . import demo
    from .eqprop import cli as eqprop_cli
    from .lca import cli as lca_cli
    from .plasticity import cli as plasticity_cli

    parser = argparse.ArgumentParser(prog="sparsecoding", description=__doc__, formatter_class=HelpFormatter)
    one_line_errors(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="versions and backends")
    p.set_defaults(func=_info)
    demo.register(sub)
    lca_cli.register(sub)
    plasticity_cli.register(sub)
    eqprop_cli.register(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return run_command(f"sparsecoding {args.command}", args.func, args)


if __name__ == "__main__":
    sys.exit(main())
