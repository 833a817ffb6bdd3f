"""Shared fixtures: the backend parametrisation and hypothesis profiles.

``xp`` runs a test on every available backend; the cupy case skips with the
reason where no GPU is visible. ``engines`` runs a test through both engine
families: the numba kernels and the generic-array engines cupy takes, on numpy
arrays (so the GPU code path runs without a GPU); ``SPARSECODING_ENGINES=generic``
runs the whole suite on the generic engines. Hypothesis profiles: ``ci``
(default, fast) and ``thorough`` (``HYPOTHESIS_PROFILE=thorough``).
"""
import os
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from sparsecoding.backend import BackendUnavailable, _load_cupy, use_engines
from sparsecoding.backend import to_numpy as _to_numpy
from sparsecoding.solvers import lasso_energy as _lasso_energy

# the `engines` fixture is function-scoped and the same for every example of a test: no reset needed
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=25, deadline=None, suppress_health_check=_SUPPRESS, derandomize=True)
settings.register_profile("thorough", max_examples=400, deadline=None, suppress_health_check=_SUPPRESS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _cupy_or_reason():
    try:
        return _load_cupy(), None
    except BackendUnavailable as exc:
        return None, str(exc)


@pytest.fixture(params=["numpy", "cupy"], scope="session")
def xp(request):
    """The array namespace under test (numpy, and cupy where a GPU is visible)."""
    if request.param == "numpy":
        return np
    cp, reason = _cupy_or_reason()
    if cp is None:
        pytest.skip(f"cupy backend not testable here: {reason}")
    return cp


@pytest.fixture(params=["native", "generic"])
def engines(request):
    """The engine family under test: "native" (numba kernels on numpy) and "generic" (the array
    expressions cupy runs, here on numpy arrays). Operators built inside the test use it."""
    with use_engines(request.param):
        yield request.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def central_difference(f, x, eps=1e-6):
    """Central-difference gradient of the scalar function ``f`` at the array ``x`` (float64 reference)."""
    g = np.zeros_like(x, dtype=np.float64)
    for idx in np.ndindex(x.shape):
        xp_, xm_ = x.copy(), x.copy()
        xp_[idx] += eps
        xm_[idx] -= eps
        g[idx] = (f(xp_) - f(xm_)) / (2 * eps)
    return g


def cifar_batch(n=4, seed=0):
    """A CIFAR-10 python batch (the pickled dict) of ``n`` random images and labels."""
    r = np.random.default_rng(seed)
    return {b"batch_label": b"testing batch 1 of 1", b"labels": [int(v) for v in r.integers(0, 10, n)],
            b"data": r.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}


def write_batch(tmp_path, d, name="test_batch", protocol=2):
    """Write the batch ``d`` (a dict, pickled with ``protocol``, or raw bytes) to
    ``tmp_path/cifar-10-batches-py/name``; returns the path."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(d if isinstance(d, bytes) else pickle.dumps(d, protocol=protocol))
    return path


def duality_gap(op, s, a, lam, nonneg):
    """Per-sample P(a) - D(theta) with the dual-feasible theta = scaled residual (a certificate:
    P(a) - P* <= gap). D(theta) = 1/2||s||^2 - 1/2||s - theta||^2 with Phi theta <= lam
    (|Phi theta| <= lam when signed)."""
    n = s.shape[0]
    r = _to_numpy(s - op.adjoint(a)).reshape(n, -1)
    c = _to_numpy(op.forward(s - op.adjoint(a))).reshape(n, -1)
    worst = c.max(1) if nonneg else np.abs(c).max(1)
    theta = r * np.minimum(1.0, lam / np.maximum(worst, 1e-300))[:, None]
    ss = _to_numpy(s).reshape(n, -1)
    dual = 0.5 * (ss**2).sum(1) - 0.5 * ((ss - theta) ** 2).sum(1)
    return _to_numpy(_lasso_energy(op, s, a, lam)) - dual


class HostReads(np.ndarray):
    """numpy array that counts every conversion to a host value (``float``, ``int``, ``bool``,
    ``.item()``, ``.tolist()``): on a GPU each is a synchronisation. Operations keep the subclass,
    reductions and array functions (``where``, ``stack``, ...) included (0-d results stay arrays
    instead of becoming numpy scalars), so a loop run on these arrays reports how often it read
    values on the host.

    ``HostReads.count`` is the running total; ``guard(x)`` wraps an array.
    """

    count = 0

    def __array_wrap__(self, arr, context=None, return_scalar=False):
        return np.asarray(arr).view(HostReads)

    def __array_function__(self, func, types, args, kwargs):
        out = super().__array_function__(func, types, args, kwargs)
        if isinstance(out, tuple):
            return tuple(o.view(HostReads) if isinstance(o, np.ndarray) else o for o in out)
        return out.view(HostReads) if isinstance(out, np.ndarray) else out

    def _read(self):
        HostReads.count += 1
        return self.view(np.ndarray)

    def __float__(self):
        return float(self._read())

    def __int__(self):
        return int(self._read())

    def __index__(self):
        return self._read().__index__()

    def __bool__(self):
        return bool(self._read())

    def item(self, *args):
        return self._read().item(*args)

    def tolist(self):
        return self._read().tolist()


@pytest.fixture
def host_reads():
    """Returns ``(guard, reads)``: ``guard(x)`` wraps an array, ``reads()`` the conversions so far."""
    start = HostReads.count

    def guard(x):
        return np.asarray(x).view(HostReads)

    return guard, lambda: HostReads.count - start


def extra_host_reads_of_20_steps(host_reads, what, mask=False, track_metrics=False):
    """Host reads of 40 minus 20 iterations (check_every 10) of a small conv problem on the counting
    arrays: ``what`` in "lca", "lca-fista" (the LCA layer's two solvers), "fista", "ista"; ``mask`` adds a
    random 0/1 data mask. A loop with no host read between its checks gives exactly 2.
    Generic engines: the numba kernels take plain arrays only, not the counting subclass."""
    from sparsecoding.lca import LCAConv2D  # noqa: PLC0415
    from sparsecoding.ops import ConvOperator  # noqa: PLC0415
    from sparsecoding.solvers import fista, ista  # noqa: PLC0415

    guard, reads = host_reads
    r = np.random.default_rng(0)
    s = guard(r.standard_normal((2, 2, 8, 8)))
    kw = {"mask": guard((r.random((2, 2, 8, 8)) < 0.5).astype(float))} if mask else {}
    with use_engines("generic"):
        if what.startswith("lca"):
            layer = LCAConv2D(4, 2, kernel_size=3, stride=2, tau=20, solver="fista" if what == "lca-fista" else "lca",
                              dtype="float64", seed=0, check_every=10, track_metrics=track_metrics)
            layer._weights = guard(layer._weights)  # every operator result derives from the weights
            layer._ops.clear()

            def run(n):
                layer.lca_iters = n
                out = layer.solve(s, **kw)
                assert layer.n_iter_ == n and isinstance(out["acts"], type(s))
        else:
            w = r.standard_normal((4, 2, 3, 3))
            op = ConvOperator(guard(w / np.sqrt((w**2).sum((1, 2, 3), keepdims=True))), (8, 8), 2, "same")
            solver = fista if what == "fista" else ista

            def run(n):
                assert solver(op, s, 0.1, max_iter=n, tol=None, check_every=10, **kw).n_iter == n
        run(10)  # warm: the Lipschitz estimate is cached after the first call
        counts = []
        for n in (20, 40):
            before = reads()
            run(n)
            counts.append(reads() - before)
    return counts[1] - counts[0]


def kkt_violation_at(a, c, lam, nonneg):
    """Largest violation of the LASSO optimality conditions at the codes ``a`` given ``c = Phi (s - Phi^T a)``
    (0 at the minimiser): ``c = lambda sign(a)`` on the support, ``|c| <= lambda`` off it (non-negative:
    ``c = lambda`` on the support, ``c <= lambda`` off it, ``a >= 0``)."""
    a, c = np.asarray(a, dtype=np.float64), np.asarray(c, dtype=np.float64)
    on = a != 0
    if nonneg:
        v_on = np.abs(c[on] - lam)
        v_off = np.maximum(c[~on] - lam, 0)
        v_neg = np.maximum(-a, 0).ravel()
    else:
        v_on = np.abs(c[on] - lam * np.sign(a[on]))
        v_off = np.maximum(np.abs(c[~on]) - lam, 0)
        v_neg = np.zeros(1)
    return max(v_on.max(initial=0.0), v_off.max(initial=0.0), v_neg.max(initial=0.0))
