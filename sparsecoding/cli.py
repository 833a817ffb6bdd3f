"""The ``sparsecoding`` command line."""
from __future__ import annotations

import argparse
import sys


def _info(args):
    import numpy as np

    from . import __version__
    from .backend import cupy_available

    print(f"sparsecoding {__version__}, numpy {np.__version__}, cupy usable: {cupy_available()}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="sparsecoding", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="versions and backends")
    p.set_defaults(func=_info)
    return parser


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
