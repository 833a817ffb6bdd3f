"""Dense LASSO against SPAMS and scikit-learn, to equal energy (issue 15).

Workload (bench/lca.py's dense section, with the issue's lambda): 1,024 grayscale 8x8
natural-image patches (``sparsecoding.data.extract_patches(natural_images(color=False), 8,
1024, seed=1)``), each centred, all divided by their common standard deviation, float64;
256 random unit-norm atoms (``default_rng(0)``, rows of a (256, 64) array). Problem per
patch ``s``: ``min_a 1/2 ||s - Phi^T a||^2 + lambda ||a||_1``, lambda 0.5 (the issue's
row; about 27 active atoms per patch) and 0.1 (bench/lca.py's; about 42), signed, and
lambda 0.5 with ``a >= 0``.

Conventions, checked by the energies (each side's codes are scored by our
``lasso_energy`` in float64):

* SPAMS ``spams.lasso(X, D, lambda1, mode=2, pos)`` minimises
  ``1/2 ||x - D alpha||^2 + lambda1 ||alpha||_1`` with signals and atoms as *columns*
  (``X = S^T``, ``D = Phi^T``, Fortran order): the same problem, ``lambda1 = lambda``;
  LARS with its own Gram matrix, ``numThreads=-1`` (both cores).
* scikit-learn ``sparse_encode(S, Phi, algorithm=..., alpha=lambda)`` divides ``alpha`` by
  the number of features (64) and its estimators minimise
  ``1/(2 n_features) ||s - Phi^T a||^2 + alpha' ||a||_1`` = ``(1/64) E(a)``: the same
  problem with ``alpha = lambda`` (measured: lasso_lars' energy equals the optimum,
  lasso_cd's is within 1e-8 relative). ``n_jobs`` left at its default (one core).

"To equal energy": our side's total energy must be at or below the peer's, allowing
1e-12 relative (the rounding of a float64 sum of 1,024 energies near an exact optimum:
SPAMS's LARS and our path both end within about 1e-15 of each other). Ours:
``coordinate_descent`` at its default ``tol=1e-8`` (the LASSO path per sample, exact up to
rounding, so one setting serves every peer), and FISTA at the loosest ``tol`` of a ladder
that reaches the peer's energy. Medians of ``repeats`` interleaved runs; the notes give
each side's energy excess over the best energy found by any side.

Measured (2-core Intel Xeon with AVX-512, shared with other jobs: float32 GEMM 17-62 GFLOP/s
instead of 205-310; two runs of ``python -m bench.peers --only lasso``, medians of 3; figures
as first run / second run, ratio = peer time / ours); every side but lasso_cd and FISTA ends at
the same energy to 1e-15:

* lambda 0.5: ours 319 / 172 ms; SPAMS LARS 528 / 386 ms (1.65x / 2.25x); scikit-learn
  lasso_cd 1.91 / 1.23 s (6.0x / 7.2x), lasso_lars 8.9 / 4.8 s (28x / 28x);
* lambda 0.1: ours 780 / 524 ms; SPAMS 847 / 695 ms (1.09x / 1.33x); lasso_cd 8.5 / 8.3 s
  (11x / 16x); lasso_lars not run (about 14 s a run);
* lambda 0.5, a >= 0: ours 268 / 212 ms; SPAMS 535 / 256 ms (2.00x / 1.21x); scikit-learn's
  sparse_encode has no non-negative lasso.

2-core AMD EPYC (Zen 4), 2026-12-02, each timed call after an untimed one of the same side (SPAMS's
first call after ours took 104-116 ms where its repeated calls take 60-68 ms; ours 78-84 vs 78-81 ms),
and ours with single-threaded BLAS around the path: lambda 0.5 57.8 ms vs SPAMS 61.6 ms (1.07x),
lambda 0.1 111.1 vs 130.7 ms (1.18x), lambda 0.5 a >= 0 54.3 vs 48.2 ms (0.89x); other runs 0.71-1.02x
(SPAMS 41-70 ms at lambda 0.5 between runs). Then, with the inverse-updating path (the kernel 1.17-1.24x
faster, same steps) and the energies from the kernel, and each timed call after at least 0.25 s of
untimed calls of the same side (``PRIME_MIN_S``: one untimed call had not outlasted the spinning of
OpenBLAS's threads after FISTA's products, which cost the 35 ms path 13-20 ms): lambda 0.5 41.2 vs
50.9 ms (1.23x), lambda 0.1 103.2 vs 136.7 ms (1.32x), lambda 0.5 a >= 0 32.9 vs 51.0 ms (1.55x); a
--only lasso run 1.17-1.18x at all three.

FISTA to the same energy (tol 1e-7-1e-8): 6.4-33 s, 0.02-0.08x SPAMS (it converges linearly at
best on this 4x overcomplete, coherent dictionary; the exact path is the dense route).
"""
from __future__ import annotations

import warnings

import numpy as np

from bench.peers.common import interleaved, optional, row

REL = 1e-12  # the rounding allowance of "equal energy" (module notes)
LADDER = [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-11, 1e-12, 1e-13]


def workload(n=1024):
    from sparsecoding.data import extract_patches, natural_images

    P = extract_patches(natural_images(color=False), 8, n, seed=1, flatten=True).astype(np.float64)
    P -= P.mean(axis=1, keepdims=True)
    P /= P.std() + 1e-8
    r = np.random.default_rng(0)
    D = r.standard_normal((256, 64))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    return P, D


def _total(op, P, codes, lam):
    from sparsecoding.solvers import lasso_energy

    return float(np.sum(lasso_energy(op, P, np.asarray(codes, dtype=np.float64), lam)))


def run(*, repeats=3, quick=False):
    from sparsecoding.ops import DenseOperator
    from sparsecoding.solvers import coordinate_descent, fista

    spams = optional("spams")
    skd = optional("sklearn.decomposition")
    P, D = workload(256 if quick else 1024)
    op = DenseOperator(D)
    X, Dm = np.asfortranarray(P.T), np.asfortranarray(D.T)
    cases = [(0.5, False)] if quick else [(0.5, False), (0.1, False), (0.5, True)]
    rows = []
    for lam, nonneg in cases:
        name = (f"dense LASSO, {P.shape[0]:,} 8x8 patches, 256 atoms, lambda {lam:g}"
                + (", a >= 0" if nonneg else "") + ", to equal energy")
        fns = {"cd": lambda: coordinate_descent(op, P, lam, nonneg=nonneg).codes}
        if spams is not None:
            fns["spams"] = lambda: spams.lasso(X, D=Dm, lambda1=lam, mode=2, pos=nonneg, numThreads=-1).toarray().T
        if skd is not None and not nonneg:  # sparse_encode's lasso solvers are signed only (positive= not exposed)
            def sk(alg):
                def f():
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # lasso_cd: "did not converge" at max_iter
                        return skd.sparse_encode(P, D, algorithm=alg, alpha=lam, max_iter=2000)
                return f
            fns["lasso_cd"] = sk("lasso_cd")
            if lam >= 0.5:  # lasso_lars at lambda 0.1 takes ~14 s a run: left out
                fns["lasso_lars"] = sk("lasso_lars")
        energy = {k: _total(op, P, fn(), lam) for k, fn in fns.items()}
        # FISTA: the loosest tolerance whose energy reaches the most accurate peer's (or our path's)
        goal = min(energy.values())
        fista_tol, e_f = None, None
        for tol in LADDER:
            e_f = _total(op, P, fista(op, P, lam, nonneg=nonneg, tol=tol, max_iter=100000).codes, lam)
            if e_f <= goal + REL * abs(goal):
                fista_tol = tol
                break
        if fista_tol is not None:
            fns["fista"] = lambda: fista(op, P, lam, nonneg=nonneg, tol=fista_tol, max_iter=100000).codes
            energy["fista"] = e_f
        t = interleaved(fns, repeats=repeats)
        best = min(energy.values())

        def excess(k):
            return f"{(energy[k] - best) / abs(best):.1e}"

        def reached(k, peer):
            return energy[k] <= energy[peer] + REL * abs(energy[peer])

        labels = {"spams": "SPAMS lasso (LARS)", "lasso_cd": "sklearn lasso_cd", "lasso_lars": "sklearn lasso_lars"}
        for peer in ("spams", "lasso_cd", "lasso_lars"):
            if peer == "spams" and spams is None:
                rows.append(row(name, "coordinate_descent", t["cd"], labels[peer], None, 1.0,
                                "spams not importable (pip install spams-bin)"))
                continue
            if peer not in fns:
                continue
            note = f"energy excess: ours {excess('cd')}, peer {excess(peer)}"
            if not reached("cd", peer):
                note += "; ours did NOT reach the peer's energy"
            rows.append(row(name, "coordinate_descent", t["cd"], labels[peer], t[peer], 1.0, note))
            if peer == "spams" and "fista" in fns:
                note = f"fista tol {fista_tol:g}; energy excess: fista {excess('fista')}, peer {excess(peer)}"
                if not reached("fista", peer):
                    note += "; fista did NOT reach the peer's energy"
                rows.append(row(name, "fista", t["fista"], labels[peer], t[peer], None, note))
    return rows
