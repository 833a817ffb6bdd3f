"""Dictionary-learning health and homeostasis for the LCA layers.

Measures (functions on host or device arrays; results on the host, float64):

* **usage** of atom ``k`` (:func:`atom_usage`): the fraction of code entries of atom ``k``
  that are non-zero, over the samples (dense ``LCA``) or over the samples and code
  positions (convolutional layers): ``usage_k = #{(n, p): a[n, k, p] != 0} / (N * P)``.
* **mutual coherence** (:func:`mutual_coherence`): for a dense dictionary ``(K, D)`` with
  atoms normalised to unit L2 norm, ``mu = max_{i != j} |<d_i, d_j>|``. For a convolutional
  dictionary ``(K, C, *k)`` the synthesis operator holds every atom at every code position,
  so the coherence is the largest normalised cross-correlation between two atoms over all
  relative shifts at which their supports overlap::

      X_ij(t) = sum_c sum_x d_i[c, x] d_j[c, x - t]       (atoms zero outside their support)
      mu = max |X_ij(t)|  over  i != j  and  t in (-(k-1) .. k-1)^d  with  t = 0 (mod stride)

  (with ``stride`` s the copies of an atom sit s samples apart, so only shifts that are
  multiples of s occur). With ``self_shifts=True`` the pairs ``i == j, t != 0`` (an atom
  against its own shifted copies) count too: the coherence of all columns of the operator.
  ``shifts=False`` gives the plain ``t = 0`` value. Borders, where a copy is cropped, are
  ignored.
* **dead atoms** (:func:`dead_atoms`): usage ``<= threshold`` over an epoch (default 0: never
  active in the epoch).
* **recovery** of a ground-truth dictionary (:func:`match_atoms`, :func:`recovery`): a true
  atom is recovered when some learned atom has ``|cosine| >= 0.99`` with it. For
  convolutional atoms the cosine is taken at the best relative shift,
  ``max_t |X(t)|`` with both atoms unit-norm (learned atoms are often a shifted copy of the
  truth; the kernels may then differ in size, e.g. a learned kernel 2 samples larger holds
  a copy shifted by one sample whole). ``shifts=False`` compares at ``t = 0`` (same kernel
  size). The fraction counts true atoms; the matching learned atoms need not be distinct
  (two true atoms can share one only if they are themselves within 2 arccos(0.99) of each
  other).

Callbacks of the learning loop (:func:`sparsecoding.training.fit_loop`, hence of every
layer's ``fit``): ``layer.fit(X, callbacks=[DictionaryHealth(layer, ...), Homeostasis(layer)])``.
While a fit runs they observe each encode of the layer (the learning step's; ``layer.solve``,
which ``encode`` calls) through a pass-through wrapper set on the layer instance at the start
of each epoch and removed when the fit ends; outside a fit the layer is untouched.

* :class:`DictionaryHealth` adds the columns ``usage_min``, ``usage_max``, ``dead_atoms``,
  ``coherence``, ``reseeded`` (and ``recovery`` when a ground truth is given) to every epoch
  record of the :class:`~sparsecoding.training.History`. With ``reseed=True`` (off by default)
  each dead atom is replaced, at the end of the epoch, by a data patch of the atom's size
  (``(C, *k)``: a window lying fully inside the input; dense: a whole sample) where the
  residual energy ``sum ||s - Phi^T a||^2`` over the window was largest in the epoch, from
  distinct samples, normalised to unit norm (``reseed_from="input"``: the preprocessed
  input there; ``"residual"``: the residual there). The dead count is the one before the
  re-seeding; the coherence and recovery are those of the dictionary the next epoch starts
  from.
* :class:`Homeostasis` adapts one factor per atom toward a target usage, after every learning
  step, from that step's batch usage ``usage_k``; ``target`` is the given one or
  (``target=None``) the batch's mean usage over the atoms (equalise usage at the current
  overall activity). Two forms, both passed to encode as its additive ``drive_scaling``:

  - ``mode="threshold"`` (the default for non-negative codes): a per-atom threshold
    ``lambda theta_k``, through the additive drive ``lambda (1 - theta_k)``, so that encode
    solves the weighted LASSO ``1/2||s - Phi^T a||^2 + lambda sum_k theta_k ||a_k||_1``,
    ``a >= 0``; ``theta_k <- clip(theta_k exp(-rate (target - usage_k) / target), *gain_bounds)``.
    It wakes even an atom whose drive is zero.
  - ``mode="gain"`` (any codes): the drive of atom ``k`` multiplied by ``g_k``
    (``b_k -> g_k b_k``, the additive drive ``(g_k - 1) b_k``: the dynamics settle on the
    minimum of ``E(a) - sum_k (g_k - 1) <b_k, a_k>``);
    ``g_k <- clip(g_k exp(rate (target - usage_k) / target), *gain_bounds)``.

  A silent atom's factor changes by ``exp(rate)`` per step. Both need an
  encode that accepts ``drive_scaling`` (``solver="lca"``). They act during the fit only; use
  :meth:`Homeostasis.encode` to encode with them afterwards.

Both callbacks keep their state in the fit's checkpoints (``get_state`` / ``set_state``), so
a resumed run ends as an uninterrupted one.
"""
from __future__ import annotations

import inspect

import numpy as np

from ..backend import get_xp, to_numpy
from ..ops.conv import conv_output_shape

__all__ = ["atom_usage", "cross_correlation", "mutual_coherence", "dead_atoms", "match_atoms", "recovery",
           "init_from_patches", "DictionaryHealth", "Homeostasis"]


# ------------------------------------------------------------------ measures
def atom_usage(acts, tol=0.0):
    """Fraction of samples (dense) or samples x positions (conv) where each atom is active.

    ``acts`` (N, K) or (N, K, *spatial); active means ``|a| > tol``. Returns a (K,) float64
    host array (zeros for an empty batch).
    """
    xp = get_xp(acts)
    if acts.ndim < 2:
        raise ValueError(f"acts must have shape (N, K, ...), got {tuple(acts.shape)}")
    axes = (0,) + tuple(range(2, acts.ndim))
    count = xp.sum((xp.abs(acts) > tol).astype(xp.float64), axis=axes)
    total = acts.size // acts.shape[1] if acts.shape[1] else 0
    return to_numpy(count) / max(total, 1)


def _unit_atoms(weights):
    w = np.asarray(to_numpy(weights), dtype=np.float64)
    if w.ndim < 2:
        raise ValueError(f"a dictionary must have shape (K, D) or (K, C, *kernel), got {w.shape}")
    norms = np.sqrt((w.reshape(w.shape[0], -1) ** 2).sum(1))
    return w / np.maximum(norms, 1e-300).reshape((-1,) + (1,) * (w.ndim - 1))


def cross_correlation(a, b):
    """Cross-correlation of two convolutional dictionaries, summed over channels.

    ``a`` (Ka, C, *ka), ``b`` (Kb, C, *kb) (as given, not normalised). Returns
    ``X`` (Ka, Kb, *(ka + kb - 1)) with ``X[i, j, m] = sum_c sum_x a[i, c, x] b[j, c, x - t]``
    for the shift ``t = m - (kb - 1)`` (per dimension): index ``kb - 1`` is ``t = 0``.
    """
    a = np.asarray(to_numpy(a), dtype=np.float64)
    b = np.asarray(to_numpy(b), dtype=np.float64)
    if a.ndim < 3 or a.ndim != b.ndim or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two dictionaries (K, C, *kernel) with the same C and dimension, got {a.shape} "
                         f"and {b.shape}")
    ka, kb = a.shape[2:], b.shape[2:]
    n = tuple(x + y - 1 for x, y in zip(ka, kb))
    axes = tuple(range(2, a.ndim))
    # X[m'] (circular, length n) = sum_x a[x] b[x - m'] = irfft(A * conj(B)); t = m' for m' < ka, m' - n else
    A = np.fft.rfftn(a, s=n, axes=axes)
    B = np.fft.rfftn(b, s=n, axes=axes)
    F = np.einsum("icf,jcf->ijf", A.reshape(*A.shape[:2], -1), np.conj(B).reshape(*B.shape[:2], -1))
    X = np.fft.irfftn(F.reshape(a.shape[0], b.shape[0], *A.shape[2:]), s=n, axes=axes)
    # roll so that index kb - 1 is the zero shift
    return np.roll(X, shift=tuple(k - 1 for k in kb), axis=axes)


def _shift_mask(kernel_a, kernel_b, stride):
    """Boolean mask over the shifts of :func:`cross_correlation` that are multiples of ``stride``."""
    d = len(kernel_a)
    stride = (int(stride),) * d if isinstance(stride, (int, np.integer)) else tuple(int(s) for s in stride)
    grids = np.meshgrid(*[np.arange(x + y - 1) - (y - 1) for x, y in zip(kernel_a, kernel_b)], indexing="ij")
    mask = np.ones(grids[0].shape, dtype=bool)
    for g, s in zip(grids, stride):
        mask &= g % s == 0
    return mask


def mutual_coherence(weights, *, stride=1, shifts=True, self_shifts=False):
    """Mutual coherence of a dictionary with unit-normalised atoms (definition in the module notes).

    Parameters
    ----------
    weights : (K, D) dense or (K, C, *k) convolutional
    stride : convolutional stride (only shifts that are multiples of it count)
    shifts : convolutional: all relative shifts (True) or the zero shift only
    self_shifts : convolutional: also an atom against its own non-zero shifts

    Returns a float (0.0 for a single dense atom).
    """
    w = _unit_atoms(weights)
    K = w.shape[0]
    if w.ndim == 2 or not shifts:
        flat = w.reshape(K, -1)
        G = np.abs(flat @ flat.T)
        G[np.diag_indices(K)] = 0.0
        return float(G.max()) if K > 1 else 0.0
    X = np.abs(cross_correlation(w, w))
    kernel = w.shape[2:]
    mask = _shift_mask(kernel, kernel, stride)
    zero = tuple(k - 1 for k in kernel)
    X = np.where(mask, X, 0.0)
    idx = np.arange(K)
    if self_shifts:
        X[(idx, idx) + zero] = 0.0
    else:
        X[idx, idx] = 0.0
    return float(X.max())


def dead_atoms(usage, threshold=0.0):
    """Indices of the atoms whose usage is ``<= threshold`` (int array)."""
    usage = np.asarray(to_numpy(usage), dtype=np.float64)
    return np.flatnonzero(usage <= threshold)


def match_atoms(true_dictionary, learned, *, shifts=True):
    """For every true atom, the best ``|cosine|`` with a learned atom and that atom's index.

    Dense ``(K, D)`` dictionaries: ``|<t_i, l_j>|`` of unit atoms. Convolutional
    ``(K, C, *k)``: the best over relative shifts, ``max_t |X_ij(t)|`` (:func:`cross_correlation`
    of unit atoms; the kernel sizes may differ), or at ``t = 0`` with ``shifts=False``.
    Returns ``(best, index)``: float64 and int arrays of length ``K_true``.
    """
    t, l_ = _unit_atoms(true_dictionary), _unit_atoms(learned)
    if t.ndim != l_.ndim or t.shape[1] != l_.shape[1] and t.ndim > 2:
        raise ValueError(f"true {t.shape} and learned {l_.shape} dictionaries do not match in layout")
    if t.ndim == 2 or not shifts:
        if t.shape[1:] != l_.shape[1:]:
            raise ValueError(f"atoms of shape {t.shape[1:]} and {l_.shape[1:]} cannot be compared without shifts")
        S = np.abs(t.reshape(t.shape[0], -1) @ l_.reshape(l_.shape[0], -1).T)
    else:
        X = np.abs(cross_correlation(t, l_))
        S = X.reshape(X.shape[0], X.shape[1], -1).max(axis=2)
    return S.max(axis=1), S.argmax(axis=1)


def recovery(true_dictionary, learned, threshold=0.99, *, shifts=True):
    """Fraction of the true atoms matched by a learned atom with ``|cosine| >= threshold``."""
    best, _ = match_atoms(true_dictionary, learned, shifts=shifts)
    return float(np.mean(best >= threshold))


def init_from_patches(layer, X, *, seed=None, atoms=None, min_quantile=0.5, max_samples=256):
    """Set atoms of ``layer`` to random data patches of the atom's size, normalised (alphacsc's "chunk" init).

    The patches are windows of ``layer.preprocess(X)`` lying fully inside a sample
    (convolutional layers) or whole preprocessed samples (dense ``LCA``), drawn without
    replacement among the candidates whose energy is at least the ``min_quantile`` quantile of
    the candidates' energies (skipping near-empty stretches of sparse signals), from at most
    ``max_samples`` samples drawn at random. Convolutional candidates are the windows whose
    energy is the largest among the windows they overlap (an isolated event is taken whole
    rather than cut at an arbitrary offset). ``atoms``: the indices to set (default all). Returns the indices set.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    X = to_numpy(X)
    if len(X) > max_samples:
        X = X[np.sort(rng.choice(len(X), size=max_samples, replace=False))]
    s = to_numpy(layer.preprocess(layer.xp.asarray(X))).astype(np.float64)
    K = layer.weights.shape[0]
    atoms = np.arange(K) if atoms is None else np.atleast_1d(np.asarray(atoms, dtype=int))
    if s.ndim == 2:
        P = s
    else:
        kernel = _kernel(layer)
        if any(k > L for k, L in zip(kernel, s.shape[2:])):
            raise ValueError(f"the samples {s.shape[2:]} are smaller than the kernel {kernel}")
        from scipy.ndimage import maximum_filter  # noqa: PLC0415

        P = s
        for ax, k in enumerate(kernel):
            P = np.lib.stride_tricks.sliding_window_view(P, k, axis=2 + ax)
        # (N, C, *positions, *kernel) -> (N * positions, C, *kernel)
        d = len(kernel)
        P = np.moveaxis(P, 1, 1 + d)
        energy = (P.reshape(*P.shape[:1 + d], -1) ** 2).sum(-1)  # (N, *positions)
        # windows holding the most energy among the windows they overlap: an isolated event
        # is then taken whole and centred rather than cut at an arbitrary offset
        peak = energy >= maximum_filter(energy, size=(1, *kernel), mode="constant")
        P = P.reshape(-1, s.shape[1], *kernel)
        energy = np.where(peak, energy, 0.0).reshape(-1)
    if s.ndim == 2:
        energy = (P.reshape(len(P), -1) ** 2).sum(1)
    positive = energy[energy > 0]
    if len(positive) == 0:
        raise ValueError("X holds no patch with non-zero energy")
    pool = np.flatnonzero(energy >= max(np.quantile(positive, min_quantile), np.finfo(float).tiny))
    if len(pool) < len(atoms):
        raise ValueError(f"X holds {len(pool)} usable patches, fewer than the {len(atoms)} atoms to set")
    pick = rng.choice(pool, size=len(atoms), replace=False)
    w = layer.get_weights()
    for k, i in zip(atoms, pick):
        w[k] = P[i] / np.sqrt(energy[i])
    layer.assign_weight_values(layer.xp.asarray(w.astype(layer.dtype)), normalize=True)
    return atoms


# -------------------------------------------------------------- encode tap
class _EncodeTap:
    """Pass-through wrapper of the layer's encode set on the instance while observers are attached.

    It wraps ``solve`` where the layer has it (the method returning the full
    :class:`~sparsecoding.lca.dynamics.LCAResult`, which ``encode`` calls), else ``encode``.
    Observers may define ``_before_encode(layer, args)`` (``args``: the bound arguments by name,
    to change in place) and ``_after_encode(layer, result)``.
    """

    def __init__(self, layer, name):
        self.layer, self.name = layer, name
        self.method = getattr(type(layer), name)
        self.signature = inspect.signature(self.method)
        self.observers = []

    @staticmethod
    def method_name(layer):
        return "solve" if callable(getattr(type(layer), "solve", None)) else "encode"

    @classmethod
    def attach(cls, layer, observer):
        name = cls.method_name(layer)
        tap = layer.__dict__.get(name)
        if not isinstance(tap, cls):
            tap = cls(layer, name)
            layer.__dict__[name] = tap
        if observer not in tap.observers:
            tap.observers.append(observer)
        return tap

    @classmethod
    def detach(cls, layer, observer):
        name = cls.method_name(layer)
        tap = layer.__dict__.get(name)
        if isinstance(tap, cls):
            if observer in tap.observers:
                tap.observers.remove(observer)
            if not tap.observers:
                del layer.__dict__[name]

    def __call__(self, *args, **kwargs):
        bound = self.signature.bind(self.layer, *args, **kwargs)
        bound.apply_defaults()
        for ob in self.observers:
            if hasattr(ob, "_before_encode"):
                ob._before_encode(self.layer, bound.arguments)
        out = self.method(*bound.args, **bound.kwargs)
        for ob in self.observers:
            if hasattr(ob, "_after_encode"):
                ob._after_encode(self.layer, out)
        return out


def _acts(out):
    try:
        return out["acts"]
    except (TypeError, KeyError, IndexError):
        raise TypeError(f"the layer's encode returned {type(out).__name__}, not a result with 'acts': the "
                        f"health callbacks need an LCAResult") from None


def _first_argument(arguments):
    names = [k for k in arguments if k != "self"]
    return arguments[names[0]]


def _is_conv(layer):
    return layer.weights.ndim > 2


def _kernel(layer):
    return tuple(layer.weights.shape[2:])


def _stride(layer):
    return getattr(layer, "stride", 1) if _is_conv(layer) else 1


def _window_sums(e, kernel):
    """Sums of ``e`` (N, *spatial) over every window of size ``kernel`` lying inside: (N, *(L - k + 1))."""
    xp = get_xp(e)
    for ax, k in enumerate(kernel, start=1):
        c = xp.cumsum(e, axis=ax)
        pad = [(0, 0)] * e.ndim
        pad[ax] = (1, 0)
        c = xp.pad(c, pad)
        n = e.shape[ax]
        hi = [slice(None)] * e.ndim
        lo = [slice(None)] * e.ndim
        hi[ax], lo[ax] = slice(k, n + 1), slice(0, n - k + 1)
        e = c[tuple(hi)] - c[tuple(lo)]
    return e


# ------------------------------------------------------------- callbacks
class DictionaryHealth:
    """Per-epoch dictionary health as columns of the fit's history (see the module notes).

    Parameters
    ----------
    layer : the LCA layer being fitted (``LCA``, ``LCAConv1D/2D/3D``)
    dead_threshold : an atom is dead when its usage over the epoch is ``<= dead_threshold``
    reseed : replace dead atoms by high-residual data patches at the end of each epoch (off by default)
    reseed_from : "input" (the preprocessed input patch) or "residual" (the residual patch)
    true_dictionary : optional ground truth ``(K0, C, *k0)`` / ``(K0, D)``: adds the ``recovery`` column
    recovery_threshold : ``|cosine|`` a true atom needs to count as recovered (0.99)
    shifts : compare convolutional atoms over relative shifts (recovery and coherence)
    self_shifts : coherence also over an atom's own non-zero shifts
    prefix : put before the column names (two health callbacks in one fit need different ones)

    After every epoch: ``usage_`` (K,) of the epoch, ``dead_`` (indices, before re-seeding),
    ``reseeded_`` (indices re-seeded), ``coherence_``, ``recovery_`` (or None), and
    ``usage_history_`` (list of the per-epoch usage arrays of this object's lifetime).
    """

    def __init__(self, layer, *, dead_threshold=0.0, reseed=False, reseed_from="input", true_dictionary=None,
                 recovery_threshold=0.99, shifts=True, self_shifts=False, prefix=""):
        if reseed_from not in ("input", "residual"):
            raise ValueError(f"reseed_from must be 'input' or 'residual', got {reseed_from!r}")
        dead_threshold = float(dead_threshold)
        if not 0.0 <= dead_threshold < 1.0:
            raise ValueError(f"dead_threshold must be in [0, 1), got {dead_threshold!r}")
        if not 0.0 < float(recovery_threshold) <= 1.0:
            raise ValueError(f"recovery_threshold must be in (0, 1], got {recovery_threshold!r}")
        self.layer = layer
        self.dead_threshold, self.reseed, self.reseed_from = dead_threshold, bool(reseed), reseed_from
        self.true_dictionary = None if true_dictionary is None else np.asarray(to_numpy(true_dictionary))
        if self.true_dictionary is not None:
            w = layer.weights
            if self.true_dictionary.ndim != w.ndim or self.true_dictionary.shape[1] != w.shape[1]:
                raise ValueError(f"true_dictionary of shape {self.true_dictionary.shape} does not match the layer's "
                                 f"dictionary layout {tuple(w.shape)}")
        self.recovery_threshold, self.shifts, self.self_shifts = float(recovery_threshold), bool(shifts), \
            bool(self_shifts)
        self.prefix = str(prefix)
        self.usage_ = self.dead_ = self.reseeded_ = self.coherence_ = self.recovery_ = None
        self.usage_history_ = []
        self._reset()

    # state of the running epoch
    def _reset(self):
        self._counts = None  # device (K,) float64
        self._total = 0
        self._cand_energy = np.zeros(0)
        self._cand_patches = np.zeros((0, *self.layer.weights.shape[1:]))

    # ---- loop hooks
    def on_epoch_start(self, epoch):
        _EncodeTap.attach(self.layer, self)

    def on_fit_end(self):
        _EncodeTap.detach(self.layer, self)

    def _after_encode(self, layer, out):
        acts = _acts(out)
        xp = get_xp(acts)
        if acts.shape[0] == 0:
            return
        axes = (0,) + tuple(range(2, acts.ndim))
        count = xp.sum((acts != 0).astype(xp.float64), axis=axes)
        self._counts = count if self._counts is None else self._counts + count
        self._total += acts.size // acts.shape[1]
        if self.reseed:
            self._collect_patches(out)

    def _collect_patches(self, out):
        r, s = out["recon_errors"], out["inputs"]
        xp = get_xp(r)
        n = r.shape[0]
        K = self.layer.weights.shape[0]
        e = (r.astype(xp.float64) ** 2).sum(axis=1)  # (N, *spatial) or (N,) dense
        if e.ndim == 1:  # dense: the patch is the whole sample
            best, pos = e, None
        else:
            kernel = _kernel(self.layer)
            if any(k > L for k, L in zip(kernel, e.shape[1:])):
                return
            w = _window_sums(e, kernel).reshape(n, -1)
            best, pos = w.max(axis=1), w.argmax(axis=1)
        best = to_numpy(best)
        order = np.argsort(-best, kind="stable")[:K]
        src = s if self.reseed_from == "input" else r
        patches = []
        if pos is not None:
            pos = to_numpy(pos)
            grid = tuple(L - k + 1 for L, k in zip(e.shape[1:], _kernel(self.layer)))
        for i in order:
            if pos is None:
                patches.append(to_numpy(src[i]))
            else:
                start = np.unravel_index(int(pos[i]), grid)
                window = tuple(slice(p, p + k) for p, k in zip(start, _kernel(self.layer)))
                patches.append(to_numpy(src[(int(i), slice(None)) + window]))
        energy = np.concatenate([self._cand_energy, best[order]])
        patches = np.concatenate([self._cand_patches, np.asarray(patches, dtype=np.float64).reshape(
            len(order), *self._cand_patches.shape[1:])])
        keep = np.argsort(-energy, kind="stable")[:K]
        self._cand_energy, self._cand_patches = energy[keep], patches[keep]

    def on_epoch_end(self, epoch, record):
        layer = self.layer
        K = layer.weights.shape[0]
        usage = np.full(K, np.nan) if self._counts is None else to_numpy(self._counts) / max(self._total, 1)
        dead = dead_atoms(usage, self.dead_threshold) if self._counts is not None else np.zeros(0, dtype=int)
        reseeded = np.zeros(0, dtype=int)
        if self.reseed and len(dead):
            reseeded = self._reseed(dead)
        w = layer.get_weights()
        self.coherence_ = mutual_coherence(w, stride=_stride(layer), shifts=self.shifts,
                                           self_shifts=self.self_shifts)
        self.usage_, self.dead_, self.reseeded_ = usage, dead, reseeded
        self.usage_history_.append(usage)
        row = {"usage_min": float(np.min(usage)), "usage_max": float(np.max(usage)), "dead_atoms": int(len(dead)),
               "coherence": self.coherence_, "reseeded": int(len(reseeded))}
        if self.true_dictionary is not None:
            self.recovery_ = recovery(self.true_dictionary, w, self.recovery_threshold, shifts=self.shifts)
            row["recovery"] = self.recovery_
        self._reset()
        return {self.prefix + k: v for k, v in row.items()}

    def _reseed(self, dead):
        """Replace the atoms ``dead`` by the best candidate patches (unit norm); returns those replaced."""
        layer = self.layer
        norms = np.sqrt((self._cand_patches.reshape(len(self._cand_patches), -1) ** 2).sum(1))
        usable = np.flatnonzero(norms > 1e-12)
        done = []
        w = layer.get_weights()
        for k, c in zip(dead, usable):
            w[k] = self._cand_patches[c] / norms[c]
            done.append(int(k))
        if done:
            layer.assign_weight_values(layer.xp.asarray(w.astype(layer.dtype)), normalize=True)
        return np.asarray(done, dtype=int)

    # ---- checkpoint state (the running epoch's counts and candidates)
    def get_state(self):
        counts = np.zeros(0) if self._counts is None else to_numpy(self._counts)
        return ({"counts": counts, "cand_energy": self._cand_energy, "cand_patches": self._cand_patches},
                {"total": int(self._total)})

    def set_state(self, arrays, meta):
        counts = np.asarray(arrays["counts"], dtype=np.float64)
        self._counts = None if counts.size == 0 else self.layer.xp.asarray(counts)
        self._total = int(meta["total"])
        self._cand_energy = np.asarray(arrays["cand_energy"], dtype=np.float64)
        self._cand_patches = np.asarray(arrays["cand_patches"], dtype=np.float64).reshape(
            -1, *self.layer.weights.shape[1:])


class Homeostasis:
    """Per-atom gain (or threshold) adaptation toward a target usage during ``fit`` (module notes).

    Parameters
    ----------
    layer : the LCA layer being fitted (its encode must accept ``drive_scaling``: ``solver="lca"``)
    target : target usage per atom (a float in (0, 1]), or None: the batch's mean usage over the atoms
    rate : adaptation rate ``eta_h`` (relative to the target): a silent atom's gain grows by
        ``exp(rate)`` per learning step
    gain_bounds : (low, high) clip of the gains (thresholds)
    mode : "threshold" (per-atom threshold factor; non-negative codes only), "gain" (multiplicative
        gain on the drive; any codes), or None: "threshold" for a non-negative layer, else "gain".
        The threshold form keeps every encode a convex (weighted) LASSO and, with a fixed
        ``target``, pins the overall activity; the gain form lets it drift (equalised usage at a
        higher overall activity is typical)

    ``gains_`` (K,) float64 host copy of the current factors: gains ``g`` ("gain" mode) or
    threshold factors ``theta`` ("threshold" mode). Adds the columns ``gain_min`` and
    ``gain_max`` (``theta_min`` and ``theta_max``) to the epoch records.
    """

    def __init__(self, layer, *, target=None, rate=0.1, gain_bounds=(0.01, 100.0), mode=None):
        if mode is None:
            mode = "threshold" if layer.nonneg else "gain"
        if mode not in ("gain", "threshold"):
            raise ValueError(f"mode must be 'gain' or 'threshold', got {mode!r}")
        if mode == "threshold" and not layer.nonneg:
            raise ValueError("mode='threshold' needs non-negative codes (nonneg=True): the additive drive "
                             "lambda (1 - theta_k) is a per-atom threshold only for a >= 0")
        if target is not None and not 0.0 < float(target) <= 1.0:
            raise ValueError(f"target must be None or a usage in (0, 1], got {target!r}")
        if not float(rate) >= 0.0 or not np.isfinite(float(rate)):
            raise ValueError(f"rate must be a finite number >= 0, got {rate!r}")
        lo, hi = (float(v) for v in gain_bounds)
        if not 0.0 < lo <= 1.0 <= hi < np.inf:
            raise ValueError(f"gain_bounds must be (low, high) with 0 < low <= 1 <= high < inf, got {gain_bounds!r}")
        name = _EncodeTap.method_name(layer)
        if "drive_scaling" not in inspect.signature(getattr(type(layer), name)).parameters:
            raise TypeError(f"{type(layer).__name__}.{name} takes no drive_scaling: homeostasis cannot act on it")
        self.layer, self.mode = layer, mode
        self.target = None if target is None else float(target)
        self.rate, self.gain_bounds = float(rate), (lo, hi)
        self._log_gain = layer.xp.zeros(layer.weights.shape[0], dtype=np.float64)
        self._bypass = False

    @property
    def gains_(self):
        return np.exp(to_numpy(self._log_gain))

    # ---- the additive drive that encode receives
    def drive_scaling(self, inputs, mask=None):
        """The additive drive term for ``layer.encode(inputs, drive_scaling=...)`` at the current gains.

        ``inputs`` preprocessed, as encode takes them (with the encode's data weights ``mask``, the
        drive is ``Phi (W^2 s)``); code shape (N, K, *out).
        """
        layer = self.layer
        xp = layer.xp
        g = xp.exp(self._log_gain)
        K = g.shape[0]
        if self.mode == "gain":
            inputs = xp.asarray(inputs)
            if mask is not None:
                w = xp.asarray(mask)
                inputs = (w * w * inputs).astype(inputs.dtype)
            b = layer.compute_input_drive(inputs)
            return ((g - 1.0).reshape((1, K) + (1,) * (b.ndim - 2)) * b).astype(b.dtype)
        inputs = xp.asarray(inputs)
        shape = (inputs.shape[0], K)
        if _is_conv(layer):
            shape += tuple(conv_output_shape(inputs.shape[2:], _kernel(layer), layer.stride, layer.pad))
        d = (layer.lambda_ * (1.0 - g)).reshape((1, K) + (1,) * (len(shape) - 2))
        return xp.broadcast_to(d, shape).astype(layer.dtype)

    def encode(self, inputs, **kwargs):
        """``layer.encode(inputs, **kwargs)`` with the current gains (e.g. for inference after the fit;
        the gains do not adapt). A ``drive_scaling`` given is added to the gains' term."""
        d = self.drive_scaling(inputs, kwargs.get("mask"))
        extra = kwargs.pop("drive_scaling", None)
        self._bypass = True
        try:
            return type(self.layer).encode(self.layer, inputs, drive_scaling=d if extra is None else d + extra,
                                           **kwargs)
        finally:
            self._bypass = False

    # ---- loop hooks
    def on_epoch_start(self, epoch):
        _EncodeTap.attach(self.layer, self)

    def on_fit_end(self):
        _EncodeTap.detach(self.layer, self)

    def _before_encode(self, layer, arguments):
        if self._bypass:
            return
        inputs = _first_argument(arguments)
        d = self.drive_scaling(inputs, arguments.get("mask"))
        extra = arguments.get("drive_scaling")
        arguments["drive_scaling"] = d if extra is None else d + extra

    def _after_encode(self, layer, out):
        if self._bypass:
            return
        acts = _acts(out)
        if acts.shape[0] == 0:
            return
        xp = get_xp(acts)
        axes = (0,) + tuple(range(2, acts.ndim))
        usage = xp.mean((acts != 0).astype(xp.float64), axis=axes)
        target = xp.mean(usage) if self.target is None else self.target
        safe = xp.maximum(target, 1e-12)
        step = xp.where(target > 0, self.rate * (target - usage) / safe, 0.0)
        if self.mode == "threshold":
            step = -step
        lo, hi = self.gain_bounds
        self._log_gain = xp.clip(self._log_gain + step, np.log(lo), np.log(hi))

    def on_epoch_end(self, epoch, record):
        g = self.gains_
        name = "gain" if self.mode == "gain" else "theta"
        return {f"{name}_min": float(g.min()), f"{name}_max": float(g.max())}

    # ---- checkpoint state
    def get_state(self):
        return {"log_gain": to_numpy(self._log_gain)}, {"mode": self.mode}

    def set_state(self, arrays, meta):
        if meta.get("mode") != self.mode:
            raise ValueError(f"the checkpoint's homeostasis ran in mode {meta.get('mode')!r}, not {self.mode!r}")
        self._log_gain = self.layer.xp.asarray(np.asarray(arrays["log_gain"], dtype=np.float64))
