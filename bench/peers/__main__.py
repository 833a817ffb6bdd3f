"""``python -m bench.peers``: every workload against the installed peers, one table (see the package doc)."""
from __future__ import annotations

import argparse
import importlib
import sys

from bench.common import finish, gemm_rate, machine_info, np
from bench.peers import MODULES


def _fmt(v, unit="s"):
    if v is None:
        return "-"
    return f"{v * 1e3:.1f} ms" if v < 1.0 else f"{v:.2f} s"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    p.add_argument("--only", default=",".join(MODULES), help="comma-separated workload modules (default: all: %(default)s)")
    p.add_argument("--quick", action="store_true", help="smaller workloads, for a smoke test (default: off)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per side, median reported (default: %(default)s)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        p.error(f"--only: unknown workload(s) {unknown}; choose from {MODULES}")
    g = gemm_rate()
    info = machine_info()
    print(f"{info['cpu_model']}, {info['cpus']} cores, AVX-512 {info['avx512']}; float32 GEMM {g / 1e9:.0f} GFLOP/s")
    rows = []
    for name in names:
        mod = importlib.import_module(f"bench.peers.{name}")
        for r in mod.run(repeats=args.repeats, quick=args.quick):
            r["module"] = name
            rows.append(r)
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
            target = "" if r["target"] is None else f" (target {r['target']}x)"
            print(f"{r['workload']:<60} {r['ours']:<22} {_fmt(r['ours_s']):>9}  {r['peer']:<28} "
                  f"{_fmt(r['peer_s']):>9}  {ratio}{target}  {r['note']}", flush=True)
    finish("peers" + ("_quick" if args.quick else ""), np, g, {"rows": rows, "repeats": args.repeats})
    return 0


if __name__ == "__main__":
    sys.exit(main())
