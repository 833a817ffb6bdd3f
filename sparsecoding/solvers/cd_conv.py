"""Convolutional sparse coding by locally greedy coordinate descent (LGCD), numba, CPU.

Problem, per sample (DESIGN.md §5)::

    minimise_a  E(a) = 1/2 ||s - Phi^T a||^2 + lambda ||a||_1          (optionally a >= 0)

with ``Phi^T a = conv_transpose(a, W, stride, padding)`` and ``Phi r = conv(r, W, stride, padding)``
(PyTorch semantics, :mod:`sparsecoding.ops.conv`; 1-, 2- and 3-D, any stride and zero padding,
"same" and "valid" included). The atom ``k`` placed at code position ``p`` covers the input
positions ``x = p * stride - pad + j`` (``j`` the kernel index) that lie inside the signal: at
"same" borders the atom is *cropped*, and every quantity below uses the cropped atom
``w_kp`` exactly.

Coordinate update. With ``r = s - Phi^T a`` and ``c = Phi r`` (``c_kp = <w_kp, r>``), the energy as a
function of the one coordinate ``a_kp`` (the others fixed) is minimised at

    z* = T_lambda(c_kp + n_kp a_kp) / n_kp,        n_kp = ||w_kp||^2 (the cropped atom's norm)

(``T`` the soft threshold; ``max(v - lambda, 0)`` for ``a >= 0``). Changing ``a_kp`` by ``delta``
changes the residual by ``-delta w_kp`` on one patch, hence ``||r||^2`` by
``delta (delta n_kp - 2 c_kp)`` and ``c`` on the neighbouring coordinates by

    c_k'q <- c_k'q - delta <w_k'q, w_kp>

where ``<w_k'q, w_kp>`` is the atoms' cross-correlation at the offset ``q - p`` summed over the part
of their overlap inside the signal. Per spatial dimension that crop depends only on the pair
``(p_d, q_d)``, and equals the uncropped overlap except for pairs of border positions whose
overlap pokes out of the signal; the table ``T[u_0, u_1, u_2, k, k']`` holds the inner products for
every combination of per-dimension classes ``u_d`` (the ``2 R_d + 1`` uncropped offsets,
``R_d = (k_d - 1) // stride_d``, plus one class per distinct cropped border pair), computed once
per solve by small GEMMs over the weights. The update of ``c`` is therefore exact at the borders
and costs ``K prod(2 R_d + 1)`` multiply-adds, the same as in the interior.

Locally greedy choice (Moreau, Oudre & Vayatis 2018; alphacsc's LGCD): the code positions are
split into segments of ``segment`` positions per dimension (default ``max(1, (R_d + 1) // 8)``);
a sweep visits the segments in turn and in each updates the coordinate with the largest change
``|z* - a_kp|``. Each segment keeps that largest change and its coordinate from its last scan and is
scanned again only after an update within reach (``R_d`` positions) changed its ``c``. With
``focus > 0`` a sweep updates only the segments whose largest change exceeds ``focus`` times the
largest of the previous sweep (a Gauss-Southwell flavour that spends the updates where the changes
are large; the largest one is always taken, so every sweep makes progress).

Segment size, measured to a 1e-3 gap (2-core AMD EPYC Zen 4, loaded; min of 3 interleaved runs):
2-D LCA workload (N=32 RGB 32x32, 64 atoms 9x9, stride 2, "same", R = 4), lambda 1 (5.5% nonzero),
segments of 1 / 2 / 3 / 5 (= R + 1, alphacsc's choice) / 8 positions: 0.26 / 0.33 / 0.46 / 0.50 /
0.85 s; lambda 1.5 (2.2%): 0.085 / 0.087 / 0.12 / 0.14 / 0.18 s; lambda 0.25 (15%, N=16): 3.2 / 3.6 /
-- / 6.6 s. Grey 64x64 "valid", 32 atoms 8x8, stride 1 (R = 7): 1 / 2 / 4 / 8: 0.84 / 0.91 / 1.08 /
1.68 s. 1-D (4 x 5,000 samples, 16 atoms of 64, R = 63): 1 / 4 / 8 / 16 / 32 / 64: 0.11 / 0.07 / 0.08
/ 0.07-0.08 / 0.07 / 0.08-0.09 s. In 2-D a segment of one position wins: every position whose best
change is large gets its update in the same sweep, where a larger segment serialises the updates of
the coupled positions inside it over many sweeps (34,277 sweeps at segments of 5 vs 2,421 at 1 for
lambda 0.25); in 1-D with long atoms the per-sweep walk over thousands of one-position segments
costs more than that saves.

Stopping: the relative duality gap of :func:`sparsecoding.solvers.lasso.duality_gap`, from the
maintained ``c`` and ``||r||^2``: the dual point ``theta = beta r`` with
``beta = min(1, lambda / max|c|)`` (``max c`` for ``a >= 0``) gives

    gap = 1/2 (1 - beta)^2 ||r||^2 + lambda ||a||_1 - beta <a, c>   >=  E(a) - E*.

Each sample stops once ``gap_n <= tol E_n(a)`` (which implies the batch criterion
``sum gap_n <= tol sum E_n`` of the other solvers), checked after every sweep that scanned at
least one full code's worth of coordinates and whenever a sweep changed nothing. The maintained
``c`` drifts by rounding, so a sample that stops is re-certified with ``c`` and ``r`` recomputed
through the operator (one ``conv_transpose`` + ``conv``); one that fails resumes from the fresh
values. A gap within its own rounding (``16 eps (1 + ||a||_1 max|Phi s| / E)``, as in
:class:`~sparsecoding.solvers.lasso._GapMonitor`) counts as zero.

Convergence against the certificate, measured (2-core AMD EPYC Zen 4, loaded) on the 2-D LCA workload
(N=16, 64 atoms 9x9, stride 2, "same", nonneg, float32; E* from float64 FISTA to a 1e-9 gap; then
segments of 5 positions): at lambda 0.25 (15% nonzero) the energy itself converges slowly, true
suboptimality (E - E*)/E* of the worst sample 2.6e-2 / 4.2e-3 / 2.3e-4 after 1,000 / 3,000 / 10,000
sweeps, certified gap 0.27 / 0.10 / 2.0e-2 (FISTA: 1.9e-4 after 100 iterations); at lambda 2 (0.9%)
the worst sample is 5.0e-3 / 2.3e-4 off after 100 / 300 sweeps, certified 0.11 / 1.6e-2, while the
other samples certify 1e-7: its remaining error is one cluster of coupled atoms at a border whose
correlations exceed lambda by up to 4% (a gap linear in that excess, the energy quadratic). Dual
extrapolation from the last 6 residuals (Celer's, Massias et al. 2018; residuals every 10 or 200
sweeps) lowered the gap by at most 10% here (the greedy order is no fixed linear iteration), so the
plain rescaled residual is kept; the gains came from more updates per sweep (one-position segments,
above) and from the per-call costs (history, table), which dominated at sparse codes.
Also tried at lambda 0.25 (N=32, to a 1e-3 gap; 2,022 sweeps, 5.3-7.5 s plain): up to 2 / 4 / 8 / 32
updates per segment visit cut the sweeps to 1,152 / 515 / 327 / 305 but not the time (6.9 / 6.8 /
6.1 / 5.9 s against 7.5 s in the same run: the number of coordinate updates to the gap stays about
the same); Anderson extrapolation of the primal iterates (Bertrand & Massias 2021; 5 iterates 20 sweeps
apart, clipped to a >= 0, kept where the energy drops) halved the sweeps (1,000), still slower than
FISTA's 400 iterations (about 2 s): at 15% nonzeros FISTA's momentum is what cd lacks.
And an active-set Newton finish (N=16, lambda 0.25, float64): the support of cd's codes after 50 / 100
/ 200 / 400 sweeps (gap 0.19 / 0.11 / 0.047 / 0.015) still had 4.6 / 3.4 / 2.2 / 1.0% of the coordinates
wrong (missing or extra, against FISTA at a 1e-7 gap), and conjugate gradients on the normal equations
restricted to it, clipped at 0, ended at gaps of 1.0 / 1.0 / 0.93 / 0.59 (the restricted minimiser
has 1.6-5.9% negative entries): on these coupled codes the support is known only near the optimum.
Now (bench/peers/csc.py, quick, N=32, same machine, loaded; to a 1e-3 gap): lambda 1.5 (2.2% nonzero)
cd 0.15 s, FISTA 0.35 s, the LCA 9.9 s; lambda 0.25 (14.8%) cd 6.0 s (2,022 sweeps), FISTA 2.7 s.

Samples are independent: one numba thread per sample (``prange``). float32 and float64; the scalar
accumulators (``||r||^2``, the gap terms) are float64. Masks / data weights are not supported
(``ValueError``: use :func:`~sparsecoding.solvers.lasso.fista`).
"""
from __future__ import annotations

import hashlib
import itertools

import numba
import numpy as np

from ..backend import get_xp, to_numpy
from ..ops._jit import njit_cached
from ..ops.conv import ConvOperator
from ..ops.parallel import blas_single_thread
from .lasso import (GAP_ROUNDING, SolveResult, _check_inputs, _empty_result, check_integer, check_lambda,
                    check_number, duality_gap, lasso_energy)

__all__ = ["conv_coordinate_descent", "overlap_table"]

#: the largest overlap table built (bytes); beyond it a ValueError suggests FISTA
MAX_TABLE_BYTES = 512 * 2**20
#: the tables of the last geometries and weights solved (an encoder codes batch after batch with one
#: dictionary; building the table took 0.04-0.7 s, loaded, for 64 atoms 3x9x9 at stride 2, more than
#: the whole solve at sparse codes), keyed on the weights' bytes; at most this many bytes in all
_TABLE_CACHE_BYTES = 64 * 2**20
_TABLES = {}
#: the most checks kept in the history per sample: the sweeps are spread over this many columns, so the
#: bookkeeping does not grow with ``max_iter`` (it cost 0.3 s a call at max_iter=100,000, 5x the sweeps
#: themselves at lambda 2 on the 2-D LCA workload)
HISTORY_CHECKS = 1024


def _dim_classes(L, k, s, pad, O):
    """Per spatial dimension: the overlap classes ``[(dp, jlo, jhi)]`` (``j`` in the kernel frame of the
    updated atom at ``p``; the neighbour at ``q = p + dp`` sees ``j - dp s``) and the map
    ``idx[p, dp + R]`` -> class (-1 where ``q`` is outside the code or the overlap is empty)."""
    R = (k - 1) // s
    dps = np.arange(-R, R + 1)
    classes = [(int(dp), max(0, dp * s), min(k, dp * s + k)) for dp in dps]
    p = np.arange(O)[:, None]
    dp = dps[None, :]
    base = p * s - pad
    jlo, jhi = np.maximum(0, dp * s), np.minimum(k, dp * s + k)
    clo, chi = np.maximum(jlo, -base), np.minimum(jhi, L - base)  # inside the signal: 0 <= base + j < L
    ok = (p + dp >= 0) & (p + dp < O) & (clo < chi)
    idx = np.where(ok, dp + R, -1).astype(np.int64)
    cropped = ok & ((clo != jlo) | (chi != jhi))
    if cropped.any():
        keys = np.stack([np.broadcast_to(dp, cropped.shape)[cropped], clo[cropped], chi[cropped]], axis=1)
        uniq, inv = np.unique(keys, axis=0, return_inverse=True)
        idx[cropped] = len(classes) + inv.reshape(-1)
        classes += [tuple(int(v) for v in row) for row in uniq]
    return classes, idx


def _geometry3(op):
    """The operator's geometry padded to 3 spatial dimensions (unit sizes) and its weights (K, C, k0, k1, k2)."""
    g = op.geometry
    d = g.d
    pad1 = (1,) * (3 - d)
    L, k, s = g.in_shape + pad1, g.kernel + pad1, g.stride + pad1
    pad, O = g.pad + (0,) * (3 - d), g.out_shape + pad1
    w = to_numpy(op.w)
    return L, k, s, pad, O, w.reshape(w.shape[0], w.shape[1], *k)


def overlap_table(op, dtype=None):
    """The exact (cropped) atom inner products of the operator's geometry.

    Returns ``(T, (idx0, idx1, idx2), nrm)``: ``T[u0, u1, u2, k, k']`` the inner product of atom ``k``
    at ``p`` with atom ``k'`` at ``q`` over their overlap inside the signal, for the per-dimension
    classes ``u_d = idx_d[p_d, q_d - p_d + R_d]`` (-1: no overlap); ``nrm[p0, p1, p2, k]`` the squared
    norm of the cropped atom ``k`` at ``p``. The geometry is padded to 3 spatial dimensions. The arrays
    are read-only: the tables of the last geometries and weights are kept and shared by later calls.
    """
    L, k, s, pad, O, w = _geometry3(op)
    dtype = np.dtype(op.dtype if dtype is None else dtype)
    per_dim = [_dim_classes(*args) for args in zip(L, k, s, pad, O)]
    shape = tuple(len(c) for c, _ in per_dim)
    K = w.shape[0]
    nbytes = int(np.prod(shape)) * K * K * dtype.itemsize
    if nbytes > MAX_TABLE_BYTES:
        raise ValueError(f"solver 'cd': the overlap table of this geometry (classes {shape}, {K} atoms) would take "
                         f"{nbytes / 2**20:.0f} MiB (limit {MAX_TABLE_BYTES / 2**20:.0f} MiB); use solver='fista'")
    key = (tuple(L), tuple(k), tuple(s), tuple(pad), tuple(O), w.shape, w.dtype.str, dtype.str,
           hashlib.blake2b(np.ascontiguousarray(w).tobytes(), digest_size=16).digest())
    hit = _TABLES.get(key)
    if hit is not None:
        return hit
    w64 = w.astype(np.float64)
    T = np.zeros((*shape, K, K), dtype=np.float64)
    # a few hundred small GEMMs: with BLAS threads they cost 0.1-0.7 s on the loaded 2-core machine
    # (threads spinning against the other load), single-threaded 0.04-0.06 s (64 atoms 3x9x9, stride 2)
    with blas_single_thread():
        for u in itertools.product(*(range(n) for n in shape)):
            here, there = [slice(None), slice(None)], [slice(None), slice(None)]
            for d, ud in enumerate(u):
                dp, jlo, jhi = per_dim[d][0][ud]
                here.append(slice(jlo, jhi))
                there.append(slice(jlo - dp * s[d], jhi - dp * s[d]))
            a = w64[tuple(here)].reshape(K, -1)
            b = w64[tuple(there)].reshape(K, -1)
            T[u] = a @ b.T  # [k (at p), k' (at q)]
    idx = tuple(i for _, i in per_dim)
    R = [(kk - 1) // ss for kk, ss in zip(k, s)]
    u0, u1, u2 = (idx[d][:, R[d]] for d in range(3))  # the class of the atom with itself, per position
    diag = np.einsum("...kk->...k", T)
    ok = (u0[:, None, None] >= 0) & (u1[None, :, None] >= 0) & (u2[None, None, :] >= 0)
    nrm = np.where(ok[..., None], diag[np.ix_(np.maximum(u0, 0), np.maximum(u1, 0), np.maximum(u2, 0))], 0.0)
    out = (T.astype(dtype), idx, nrm.astype(dtype))
    for arr in (out[0], out[2], *idx):
        arr.flags.writeable = False  # shared by later solves through the cache
    if nbytes <= _TABLE_CACHE_BYTES:
        while _TABLES and sum(v[0].nbytes for v in _TABLES.values()) + nbytes > _TABLE_CACHE_BYTES:
            _TABLES.pop(next(iter(_TABLES)))
        _TABLES[key] = out
    return out


@njit_cached()
def _gap(c, a, r2, lam, nonneg, eps, scale):  # pragma: no cover - compiled
    """(relative gap, energy, absolute gap) of one sample from ``c``, ``a`` and ``||r||^2``."""
    cf = c.ravel()
    af = a.ravel()
    l1 = 0.0
    ac = 0.0
    worst = 0.0
    for i in range(cf.size):
        ai = float(af[i])
        ci = float(cf[i])
        l1 += abs(ai)
        ac += ai * ci
        wv = ci if nonneg else abs(ci)
        if wv > worst:
            worst = wv
    r2 = max(r2, 0.0)
    beta = 1.0 if worst <= lam else lam / worst
    e = 0.5 * r2 + lam * l1
    gap = 0.5 * (1.0 - beta) ** 2 * r2 + lam * l1 - beta * ac
    size = max(abs(e), 1e-300)
    rel = gap / size
    if rel <= GAP_ROUNDING * eps * (1.0 + l1 * scale / size):
        rel = 0.0
        gap = 0.0
    return rel, e, gap


@numba.njit(inline="always")
def _change(cq, aq, nq, iq, k, lam, nonneg):  # pragma: no cover - compiled
    """The change ``z* - a_k`` of coordinate ``k`` at one position, ``z* = T_lambda(c_k + n_k a_k) / n_k``
    (``iq`` = 1 / ``nq``, 0 for an empty cropped atom), branch-free so that the atom loop vectorises."""
    av = float(aq[k])
    v = float(cq[k]) + float(nq[k]) * av
    z = max(v - lam, 0.0) if nonneg else max(v - lam, 0.0) + min(v + lam, 0.0)
    return z * float(iq[k]) - av


@njit_cached()
def _scan(c, a, nrm, inv, lam, nonneg, lo0, hi0, lo1, hi1, lo2, hi2):  # pragma: no cover - compiled
    """The coordinate of the largest change in a box of positions: (|change|, change, p0, p1, p2, k).

    ``inv`` = 1 / ``nrm`` (0 where the cropped atom is zero: such a coordinate moves to 0, which changes
    nothing else). Per position a branch-free count of the atoms whose change beats the best so far, which
    vectorises (a running max or a compare-and-branch per atom does not); the atoms are visited again only
    where that count is nonzero. Measured (2-core Zen 4, loaded), 2,000 sweeps of the 2-D LCA workload,
    N=32, lambda 1: 1.52 -> 1.07 s (min of 3); N=16, lambda 0.25, 3,000 sweeps: 1.45 -> 1.18 s."""
    K = c.shape[3]
    best = 0.0
    bd = 0.0
    b0 = b1 = b2 = bk = -1
    for q0 in range(lo0, hi0):
        for q1 in range(lo1, hi1):
            for q2 in range(lo2, hi2):
                cq = c[q0, q1, q2]
                aq = a[q0, q1, q2]
                nq = nrm[q0, q1, q2]
                iq = inv[q0, q1, q2]
                more = 0
                for k in range(K):
                    more += 1 if abs(_change(cq, aq, nq, iq, k, lam, nonneg)) > best else 0
                if more > 0:
                    for k in range(K):
                        d = _change(cq, aq, nq, iq, k, lam, nonneg)
                        if abs(d) > best:
                            best = abs(d)
                            bd = d
                            b0, b1, b2, bk = q0, q1, q2, k
    return best, bd, b0, b1, b2, bk


@njit_cached()
def _column(t, max_iter, H):  # pragma: no cover - compiled
    """The history column of the check after sweep ``t``: 0 for the start, the sweeps ``1..max_iter`` spread
    evenly over the ``H - 1`` others (the history keeps at most ``H`` checks per sample whatever the budget)."""
    if t <= 0:
        return 0
    return 1 + (t - 1) * (H - 1) // max(max_iter, 1)


@njit_cached()
def _lgcd_sample(c, a, r2, T, I0, I1, I2, nrm, inv, S0, S1, S2, lam, nonneg, it0, max_iter, tol, eps, scale, focus,
                 gap_hist, e_hist, it_hist):  # pragma: no cover - compiled
    """LGCD on one sample (``c``, ``a`` channels-last, updated in place) from sweep ``it0`` to ``max_iter`` at
    most; returns (sweeps done, ||r||^2, converged).

    History: the check after sweep ``t`` (0: the start) writes its absolute gap, energy and ``t`` into the
    column :func:`_column` of ``gap_hist``, ``e_hist``, ``it_hist`` (a later check in the same column
    overwrites it).
    ``tol < 0``: no gap test (run ``max_iter`` sweeps). ``focus``: a sweep updates only the segments whose
    largest change exceeds ``focus`` times the largest of the previous sweep."""
    P0, P1, P2, K = c.shape
    R0 = (I0.shape[1] - 1) // 2
    R1 = (I1.shape[1] - 1) // 2
    R2 = (I2.shape[1] - 1) // 2
    n0 = (P0 + S0 - 1) // S0
    n1 = (P1 + S1 - 1) // S1
    n2 = (P2 + S2 - 1) // S2
    nseg = n0 * n1 * n2
    dirty = np.ones(nseg, dtype=np.bool_)  # c changed since the segment's last scan
    best = np.zeros(nseg)  # the largest change found at the last scan (exact while not dirty)
    where = np.zeros((nseg, 4), dtype=np.int64)
    change = np.zeros(nseg)
    total = P0 * P1 * P2 * K
    H = gap_hist.size
    rel, e, g = _gap(c, a, r2, lam, nonneg, eps, scale)
    col = _column(it0, max_iter, H)
    gap_hist[col], e_hist[col], it_hist[col] = g, e, it0
    if tol >= 0 and rel <= tol:
        return 0, r2, True
    thr = 0.0
    work = 0
    it = 0
    while it0 + it < max_iter:
        it += 1
        top = 0.0
        for si in range(nseg):
            if dirty[si]:
                s0 = si // (n1 * n2)
                s1 = (si // n2) % n1
                s2 = si % n2
                lo0, lo1, lo2 = s0 * S0, s1 * S1, s2 * S2
                hi0, hi1, hi2 = min(P0, lo0 + S0), min(P1, lo1 + S1), min(P2, lo2 + S2)
                work += (hi0 - lo0) * (hi1 - lo1) * (hi2 - lo2) * K
                bv, d, b0, b1, b2, bk = _scan(c, a, nrm, inv, lam, nonneg, lo0, hi0, lo1, hi1, lo2, hi2)
                best[si] = bv
                change[si] = d
                where[si, 0], where[si, 1], where[si, 2], where[si, 3] = b0, b1, b2, bk
                dirty[si] = False
            bv = best[si]
            if bv > top:
                top = bv
            if bv <= thr or bv == 0.0:
                continue
            d = change[si]
            b0, b1, b2, bk = where[si, 0], where[si, 1], where[si, 2], where[si, 3]
            # ||r - d w||^2 = ||r||^2 - 2 d <w, r> + d^2 ||w||^2
            r2 += d * (d * float(nrm[b0, b1, b2, bk]) - 2.0 * float(c[b0, b1, b2, bk]))
            a[b0, b1, b2, bk] += d
            for dp0 in range(-R0, R0 + 1):
                q0 = b0 + dp0
                if q0 < 0 or q0 >= P0:
                    continue
                u0 = I0[b0, dp0 + R0]
                if u0 < 0:
                    continue
                for dp1 in range(-R1, R1 + 1):
                    q1 = b1 + dp1
                    if q1 < 0 or q1 >= P1:
                        continue
                    u1 = I1[b1, dp1 + R1]
                    if u1 < 0:
                        continue
                    for dp2 in range(-R2, R2 + 1):
                        q2 = b2 + dp2
                        if q2 < 0 or q2 >= P2:
                            continue
                        u2 = I2[b2, dp2 + R2]
                        if u2 < 0:
                            continue
                        row = T[u0, u1, u2, bk]
                        cq = c[q0, q1, q2]
                        for k in range(K):
                            cq[k] -= d * row[k]
            # the segments whose c changed are scanned again when next visited
            for t0 in range(max(0, (b0 - R0) // S0), min(n0, (b0 + R0) // S0 + 1)):
                for t1 in range(max(0, (b1 - R1) // S1), min(n1, (b1 + R1) // S1 + 1)):
                    for t2 in range(max(0, (b2 - R2) // S2), min(n2, (b2 + R2) // S2 + 1)):
                        dirty[(t0 * n1 + t1) * n2 + t2] = True
        thr = focus * top
        if work >= total or top == 0.0:
            work = 0
            rel, e, g = _gap(c, a, r2, lam, nonneg, eps, scale)
            col = _column(it0 + it, max_iter, H)
            gap_hist[col], e_hist[col], it_hist[col] = g, e, it0 + it
            if tol >= 0 and rel <= tol:
                return it, r2, True
            if top == 0.0:
                return it, r2, False  # no coordinate changes: a stationary point in this precision
    return it, r2, False


@njit_cached(parallel=True)
def _lgcd_batch(C, A, R2, T, I0, I1, I2, nrm, inv, S0, S1, S2, lam, nonneg, max_iter, tol, eps, scale, focus,
                n_iter, conv, gap_hist, e_hist, it_hist):  # pragma: no cover - compiled
    """Every sample in its own thread; ``n_iter[n]`` sweeps done so far (updated)."""
    for n in numba.prange(C.shape[0]):
        done = n_iter[n]
        if done >= max_iter:
            continue
        it, r2, ok = _lgcd_sample(C[n], A[n], R2[n], T, I0, I1, I2, nrm, inv, S0, S1, S2, lam, nonneg, done,
                                  max_iter, tol, eps, scale[n], focus, gap_hist[n], e_hist[n], it_hist[n])
        n_iter[n] = done + it
        R2[n] = r2
        conv[n] = ok


def _to_last(x, shape3):
    """(N, K, *O) -> (N, O0, O1, O2, K) contiguous."""
    n, k = x.shape[:2]
    return np.ascontiguousarray(np.moveaxis(x.reshape(n, k, *shape3), 1, -1))


def conv_coordinate_descent(op, s, lambda_, nonneg=False, max_iter=10000, tol=1e-4, a0=None, segment=None,
                            focus=0.3, mask=None):
    """Locally greedy coordinate descent for convolutional sparse coding (see the module notes).

    Parameters
    ----------
    op : ConvOperator with channels-first inputs and codes (1 to 3 spatial dims, any stride / padding)
    s : array (N, C, *L), inputs
    lambda_ : float >= 0
    nonneg : bool, constrain ``a >= 0``
    max_iter : int >= 1, the most sweeps (one sweep visits every segment once, one update each at most;
        a sweep costs a fraction of one convolution: 292 sweeps reached a 1e-3 gap on 64x64 images with 32
        8x8 filters, lambda 0.1 max, 4,263 with the earlier segments of 8 positions)
    tol : float >= 0 or None; each sample stops once its relative duality gap is <= ``tol``
        (None: run ``max_iter`` sweeps)
    a0 : optional warm start (N, K, *O)
    segment : int or tuple, the segment size in code positions per spatial dim (default
        ``max(1, (R_d + 1) // 8)``, ``R_d = (k_d - 1) // stride_d``; measurements in the module notes)
    focus : float in [0, 1), a sweep updates only the segments whose largest change exceeds ``focus`` times the
        largest change of the previous sweep (0: every segment, plain LGCD). Measured (2-core Zen 4, loaded),
        2-D LCA workload (N=32, 64 atoms 9x9, stride 2, lambda 1, one-position segments) to a 1e-3 gap:
        0.57 / 0.27 / 0.26 s at focus 0 / 0.3 / 0.5 (177 / 200 / 224 sweeps); earlier (2-core Xeon, loaded),
        1-D (5,000 samples, 16 atoms of 64, segments of 64) per signal: 0.35 s at 0, 0.20 s at 0.3
    mask : not supported (``ValueError``); use :func:`~sparsecoding.solvers.lasso.fista`

    Returns
    -------
    SolveResult: ``codes`` (N, K, *O) on ``s``'s namespace, ``energy`` per sample, ``n_iter`` (most sweeps of
    any sample), ``converged`` (every sample's gap <= ``tol``, certified on a fresh residual),
    ``history`` ``(sweep, total gap / total energy)`` and ``energy_history`` (at most ``HISTORY_CHECKS``
    checks per sample: spread over the budget, the last check in each stretch of sweeps).

    Raises
    ------
    TypeError for a non-ConvOperator ``op`` or complex inputs; ValueError for channels-last layouts, a mask,
    bad shapes, non-finite inputs and out-of-range ``lambda_``, ``max_iter``, ``tol``, ``segment``.
    """
    if not isinstance(op, ConvOperator):
        raise TypeError(f"op must be a ConvOperator for the convolutional coordinate descent, got "
                        f"{type(op).__name__} (dense dictionaries: sparsecoding.solvers.coordinate_descent)")
    if op.layout != "channels_first" or op.code_layout != "channels_first":
        raise ValueError("op must have channels-first inputs and codes (layout='channels_first')")
    if mask is not None:
        raise ValueError("mask: the coordinate-descent solver has no data weights; use solver='fista'")
    lam = check_lambda(lambda_)
    max_iter = check_integer("max_iter", max_iter, 1)
    tol = check_number("tol", tol, 0.0, allow_none=True)
    s, a0 = _check_inputs(op, s, a0)
    if s.shape[0] == 0:
        return _empty_result(op, s)
    xp = get_xp(s)
    g = op.geometry
    d = g.d
    R = [(k - 1) // st for k, st in zip(g.kernel, g.stride)]
    if segment is None:
        seg = tuple(max(1, (r + 1) // 8) for r in R)
    else:
        seg = tuple(int(v) for v in ((segment,) * d if np.isscalar(segment) else segment))
        if len(seg) != d or any(v < 1 for v in seg):
            raise ValueError(f"segment must be an int >= 1 or a tuple of {d} ints >= 1, got {segment!r}")
    seg = seg + (1,) * (3 - d)
    focus = check_number("focus", focus, 0.0)
    if focus >= 1.0:
        raise ValueError(f"focus must be in [0, 1), got {focus!r}")
    dtype = np.dtype(s.dtype)
    if op.dtype != dtype:  # compute in the inputs' precision, as the other solvers do
        op = ConvOperator(op.w.astype(dtype), g.in_shape, g.stride, g.pad, op.method)
    T, (I0, I1, I2), nrm = overlap_table(op)
    inv = np.divide(1, nrm, out=np.zeros_like(nrm), where=nrm > 0)
    O3 = g.out_shape + (1,) * (3 - d)
    n = s.shape[0]
    with op.frozen_weights():
        b = op.forward(s)  # Phi s: the scale of the gap's rounding
        scale = to_numpy(xp.max(xp.abs(b.reshape(n, -1)), axis=1)).astype(np.float64)
        if a0 is None:
            A = np.zeros((n, *O3, g.n_out), dtype=dtype)
            C = _to_last(to_numpy(b), O3)
            R2 = to_numpy(xp.sum((s * s).reshape(n, -1), axis=1)).astype(np.float64)
        else:
            A = _to_last(to_numpy(a0), O3)
            r = s - op.adjoint(a0)
            C = _to_last(to_numpy(op.forward(r)), O3)
            R2 = to_numpy(xp.sum((r * r).reshape(n, -1), axis=1)).astype(np.float64)
        eps = float(np.finfo(dtype).eps)
        tol_k = -1.0 if tol is None else float(tol)
        n_iter = np.zeros(n, dtype=np.int64)
        conv = np.zeros(n, dtype=np.bool_)
        H = min(max_iter, HISTORY_CHECKS - 1) + 1
        gh = np.full((n, H), np.nan)
        eh = np.full((n, H), np.nan)
        th = np.full((n, H), -1, dtype=np.int64)
        for attempt in range(4):  # re-certify on a fresh residual; resume where the drift misled
            # samples to threads one at a time as threads free up: their sweep counts differ by 100x or more
            # (measured: 2 to 1,564 updates over 16 crops at lambda 2), so equal static shares wait on the slowest
            with numba.parallel_chunksize(1):
                _lgcd_batch(C, A, R2, T, I0, I1, I2, nrm, inv, seg[0], seg[1], seg[2], lam, bool(nonneg),
                            max_iter, tol_k, eps, scale, float(focus), n_iter, conv, gh, eh, th)
            a_pub = xp.asarray(np.ascontiguousarray(np.moveaxis(A, -1, 1)).reshape(n, g.n_out, *g.out_shape))
            if tol is None:
                break
            r = s - op.adjoint(a_pub)
            c_true = op.forward(r)
            primal, gap = duality_gap(a_pub, c_true, r, lam, bool(nonneg))
            e_np = np.maximum(np.abs(to_numpy(primal).astype(np.float64)), 1e-300)
            l1 = to_numpy(xp.sum(xp.abs(a_pub).reshape(n, -1), axis=1)).astype(np.float64)
            rel = to_numpy(gap).astype(np.float64) / e_np
            conv = rel <= np.maximum(tol, GAP_ROUNDING * eps * (1.0 + l1 * scale / e_np))
            if conv.all() or (n_iter[~conv] >= max_iter).all() or attempt == 3:
                break
            # samples already certified stop at their first check on the fresh values
            C = _to_last(to_numpy(c_true), O3)
            R2 = to_numpy(xp.sum((r * r).reshape(n, -1), axis=1)).astype(np.float64)
        energy = lasso_energy(op, s, a_pub, lam)
    # batch history: per sample the last checked values carried forward
    seen = ~np.isnan(gh)
    cols = np.flatnonzero(seen.any(axis=0))
    last = np.maximum.accumulate(np.where(seen, np.arange(H), 0), axis=1)  # every sample checks at sweep 0
    g_tot = np.take_along_axis(gh, last, axis=1)[:, cols].sum(axis=0)
    e_tot = np.take_along_axis(eh, last, axis=1)[:, cols].sum(axis=0)
    sweeps = th[:, cols].max(axis=0)
    history = [(int(t), float(gt) / max(abs(float(et)), 1e-300)) for t, gt, et in zip(sweeps, g_tot, e_tot)]
    energy_history = [float(et) for et in e_tot]
    codes = a_pub
    return SolveResult(codes, int(n_iter.max()), bool(np.all(conv)), history, codes=codes, energy=energy,
                       energy_history=energy_history)
