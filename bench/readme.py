"""Write the README's table of figures from the benchmark results (never by hand).

Reads ``bench/results/{conv,lca,eqprop,accuracy,foldiak,lpl,lcacnn,peers}.json`` as the
benchmarks last wrote them on the current code and replaces the README
between ``<!-- figures:begin -->`` and ``<!-- figures:end -->``. Every row
names the CPU and, for timings, the float32 GEMM rate measured in the same
run; peers appear only where the same run measured them.

Run all, then this: ``python -m bench.conv; python -m bench.lca; python -m
bench.eqprop; python -m bench.foldiak; python -m bench.lpl; python -m
bench.lcacnn; python -m bench.accuracy --demo --lca; python -m bench.peers; python -m
bench.readme``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"


def _load(name):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _where(result):
    m = result.get("machine", {})
    cpu = m.get("cpu_model", "CPU model not recorded")
    gemm = result.get("gemm_flops")
    code = f"code {m['code']}" if m.get("code") else "code before the session-3 changes (re-measure)"
    return f"{cpu}, {m.get('cpus', '?')} cores" + (f", GEMM {gemm / 1e9:.0f} GFLOP/s" if gemm else "") + f"; {code}"


def rows():
    out = []
    conv = _load("conv")
    if conv:
        for r in conv["lca_pair"]:
            if r["method"] == "im2col" and "solver" in r["code_layout"]:
                out.append(("conv + conv_transpose, LCA workload (N=128, 3->64, 9x9, stride 2)",
                            f"{r['ms']} ms, {r['frac_gemm']:.2f} of the GEMM rate", _where(conv), "bench.conv"))
    lca = _load("lca")
    if lca:
        by = {r["solver"]: r for r in lca["conv"]}
        if "lca" in by and "fista" in by:
            f = by["fista"]
            out.append(("conv LCA iteration, same workload (tau=100)", f"{by['lca']['ms_per_iter']} ms per iteration",
                        _where(lca), "bench.lca"))
            out.append(("conv FISTA, same workload, to a 1e-3 energy gap",
                        f"{f['ms_per_iter']} ms per iteration, {f['iters_to_1e-3']} iterations, "
                        f"{f['seconds_to_1e-3']} s", _where(lca), "bench.lca"))
        best = {}
        for r in lca.get("dense", []):
            if isinstance(r["speedup"], (int, float)) and r["solver"].startswith("sparsecoding"):
                best[r["target"]] = max(best.get(r["target"], 0), r["speedup"])
        if best:
            out.append(("dense LASSO, 1,024 patches x 256 atoms, to the peer's energy",
                        ", ".join(f"{v}x faster than scikit-learn {k.split()[-1]}" for k, v in best.items()),
                        _where(lca), "bench.lca"))
    eq = _load("eqprop")
    if eq:
        for r in eq["steps"]:
            out.append((f"EqProp relaxation step, {r['network']}, batch 128",
                        f"{r['ms_per_step']} ms, {r['frac_gemm_useful']:.2f} of the GEMM rate", _where(eq),
                        "bench.eqprop"))
        grads = eq.get("gradient_quality", [])
        if grads:
            ref = grads[0]
            best = max(grads, key=lambda r: r["speedup"])
            out.append(("EqProp gradient of one batch, convergence stops vs the T1=250/T2=50 schedule",
                        f"{best['seconds']} s ({best['schedule']}, cosine {best['cosine_to_gold']}) vs "
                        f"{ref['seconds']} s (cosine {ref['cosine_to_gold']})", _where(eq), "bench.eqprop"))
    acc = _load("accuracy")
    if acc and "eqprop_digits" in acc:
        r = acc["eqprop_digits"]
        same = "the same" if r["evaluate_matches"] else f"{r['evaluate_test_error']:.4f} (differs!)"
        out.append((f"`{r['command']}`",
                    f"{100 * r['test_accuracy']:.1f}% test accuracy after {r['epochs']} epochs, "
                    f"{r['seconds_per_epoch']:.1f} s per epoch; `--todo evaluate` of the saved run: {same}",
                    _where(r if "machine" in r else acc), "bench.accuracy"))
    if acc and "demo_main_job" in acc:
        r = acc["demo_main_job"]
        out.append((f"`{r['command']}` (the main job)",
                    f"{r['steps']} dictionary steps, {r['wall_seconds']:.0f} s in all; energy per sample "
                    f"{r['energy_first']:.4g} -> {r['energy_last']:.4g} (means of the first and last 10 steps), "
                    f"fraction active {r['frac_active']:.3f}; "
                    f"wrote {', '.join(r['pictures'])}", _where(r if "machine" in r else acc), "bench.accuracy --demo"))
    if acc and "lca_main_job" in acc:
        r = acc["lca_main_job"]
        out.append((f"`{r['command']}`",
                    f"{r['steps']} dictionary steps in {r['wall_seconds']:.0f} s, final energy {r['energy']:.4g}, "
                    f"fraction active {r['frac_active']:.3f}", _where(r if "machine" in r else acc), "bench.accuracy --lca"))
    lc = _load("lcacnn")
    if lc:
        runs = "; ".join(f"{r['model']} {100 * r['test_accuracy']:.1f}%"
                         + (f" ({100 * r['lca_active']:.0f}% active)" if r["lca_active"] != "-" else "")
                         + f", {r['cpu_seconds']:.0f} CPU s" for r in lc["runs"])
        out.append((f"DIGITS, plain CNN vs LCA front end, {lc['epochs']} epochs of `sparsecoding eqprop --thirdphase`",
                    runs, _where(lc), "bench.lcacnn"))
    fo = _load("foldiak")
    if fo:
        r = fo["rows"][0]
        out.append(("Földiák bars (16 units, 8x8)",
                    f"all 16 bars in {r['learned']} seeds after a median {r['median_presentations']} presentations, "
                    f"{r['median_cpu_seconds']} CPU s (batch {r['batch_size']})", _where(fo), "bench.foldiak"))
    lpl = _load("lpl")
    if lpl:
        acc_rows = {r["network"]: r["accuracy_per_layer"] for r in lpl.get("digits_readout", [])}
        if "LPL" in acc_rows:
            out.append(("LPL on DIGITS, linear readout per layer",
                        "LPL " + " / ".join(f"{a:.3f}" for a in acc_rows["LPL"]) + "; random init "
                        + " / ".join(f"{a:.3f}" for a in acc_rows.get("random init", [])), _where(lpl), "bench.lpl"))
    full, quick = _load("peers"), _load("peers_quick")
    done = {r.get("module") for r in full["rows"]} if full else set()
    for result, script in ((full, "bench.peers"), (quick, "bench.peers --quick")):
        if not result:
            continue
        for r in result["rows"]:
            if r.get("peer_s") is None or (result is quick and r.get("module") in done):
                continue  # a module measured at full size is not repeated from a quick run
            target = "" if r.get("target") is None else f" (target {r['target']}x)"
            out.append((f"{r['workload']}: {r['ours']} vs {r['peer']}" + (" (quick sizes)" if result is quick else ""),
                        f"{_ms(r['ours_s'])} vs {_ms(r['peer_s'])}: **{r['ratio']:.2f}x**{target}"
                        + (f"; {r['note']}" if r.get("note") else ""), _where(result), script))
    return out


def _ms(seconds):
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def render():
    lines = [BEGIN, "", "| what | figure | machine | script |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | `python -m {d}` |" for a, b, c, d in rows()]
    lines += ["", "Generated by `python -m bench.readme` from `bench/results/*.json`.", END]
    return "\n".join(lines)


def main(argv=None):
    import argparse

    argparse.ArgumentParser(prog="python -m bench.readme", description=__doc__.split("\n\n")[0]).parse_args(
        sys.argv[1:] if argv is None else argv)
    readme = ROOT / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"README.md has no {BEGIN} ... {END} section")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + render() + tail)
    print(render())


if __name__ == "__main__":
    main()
