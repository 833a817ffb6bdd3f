"""Array-backend selection: the one module that knows about cupy.

Model code never imports numpy or cupy directly; it asks the arrays it was
given for their namespace with :func:`get_xp` and looks up backend-specific
tools (FFT module, window views, scatter-add) in :func:`capabilities`.

Backend names are ``"numpy"`` and ``"cupy"``, case-insensitive (``"NumPy"``
works); any other name is a ``ValueError`` listing the choices, wherever a
name is accepted: :func:`set_backend`, :func:`use_backend`,
``asarray(backend=)``, the models' ``backend=`` arguments and the
``SPARSECODING_BACKEND`` environment variable (read at import; unset or empty
means numpy).

Engine families. The numpy backend has two sets of compute engines: the
``"native"`` one (numba kernels: im2col gather/scatter, the fused per-core
LCA/FISTA residual, the pool kernels, the fused elementwise updates) and the
``"generic"`` one (plain array expressions that work on any namespace: the
code path cupy takes). ``capabilities(xp).engines`` names the family in use;
it is ``"native"`` on numpy unless the environment variable
``SPARSECODING_ENGINES=generic`` (read at every operator construction) or the
:func:`use_engines` context manager asks for the generic one, which is how the
GPU code path runs in CI on a machine without a GPU. On cupy it is always
``"generic"``. Operators fix their engine when they are built
(:mod:`sparsecoding.ops.engines` picks it from this table and the cost model).
"""
from __future__ import annotations

import contextlib
import os
from types import SimpleNamespace

import numpy as np

__all__ = [
    "BackendUnavailable",
    "get_xp",
    "namespace",
    "set_backend",
    "get_backend",
    "use_backend",
    "to_numpy",
    "asarray",
    "capabilities",
    "cupy_available",
    "use_engines",
    "engine_family",
]

_KNOWN = ("numpy", "cupy")
ENV_VAR = "SPARSECODING_BACKEND"
ENGINES_VAR = "SPARSECODING_ENGINES"
ENGINE_FAMILIES = ("native", "generic")
_engines_override = None


class BackendUnavailable(RuntimeError):
    """Raised when a backend is asked for but cannot run here."""


def _load_cupy():
    """Import cupy and check that a GPU is visible; raise BackendUnavailable otherwise."""
    try:
        import cupy  # noqa: PLC0415
    except Exception as exc:  # ImportError, or a broken CUDA install
        raise BackendUnavailable(
            "backend 'cupy' was requested but cupy cannot be imported "
            f"({type(exc).__name__}: {exc}); install the GPU extra: pip install 'sparsecoding[gpu]'"
        ) from exc
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise BackendUnavailable(
            f"backend 'cupy' was requested but no CUDA device is usable ({exc})"
        ) from exc
    if n < 1:
        raise BackendUnavailable("backend 'cupy' was requested but no GPU is visible")
    return cupy


def cupy_available() -> bool:
    """True when cupy imports and sees at least one GPU."""
    try:
        _load_cupy()
    except BackendUnavailable:
        return False
    return True


def _check_name(name: str, where: str = "") -> str:
    """The canonical backend name for ``name`` (case-insensitive); ValueError listing the choices."""
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in _KNOWN:
        raise ValueError(f"backend must be one of {_KNOWN} (case-insensitive), got {name!r}{where}")
    return key


def _module(name: str):
    """The array module of backend ``name`` (checked: an unknown name is a ValueError, never cupy)."""
    if name == "numpy":  # the common case, without the checks
        return np
    return np if _check_name(name) == "numpy" else _load_cupy()


def namespace(backend: str | None = None):
    """The array module (``numpy`` or ``cupy``) of backend ``backend``; None: the default backend.

    What a model's ``backend=`` argument resolves to: an unknown name is a ValueError listing
    the choices, and ``"cupy"`` without a visible GPU is :class:`BackendUnavailable`.
    """
    return _module(_current if backend is None else _check_name(backend))


def _from_environment() -> str:
    value = os.environ.get(ENV_VAR, "")
    if not value.strip():
        return "numpy"  # unset or empty: the default
    return _check_name(value, f" (from the environment variable {ENV_VAR})")


_current = _from_environment()


def get_backend() -> str:
    """Name of the default backend ("numpy" or "cupy")."""
    return _current


def set_backend(name: str) -> None:
    """Set the default backend used when no array decides it."""
    global _current
    name = _check_name(name)
    _module(name)  # fail now, not at first use
    _current = name


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager: ``with use_backend("cupy"): ...`` then restore."""
    global _current
    previous = _current
    set_backend(name)
    try:
        yield _module(_current)
    finally:
        _current = previous


def _is_cupy_array(a) -> bool:
    module = type(a).__module__
    return module == "cupy" or module.startswith("cupy.")


def get_xp(*arrays):
    """Array namespace of the given arrays (cupy if any is a cupy array).

    With no array arguments (or only scalars / None) the default backend's
    module is returned.
    """
    if len(arrays) == 1 and type(arrays[0]) is np.ndarray:
        # the common case, without the scan: elementwise maps call this once per use, thousands of
        # times a second on small arrays (Földiák settling: 3 us of 10 us per step before this line)
        return np
    for a in arrays:
        if _is_cupy_array(a):
            return _module("cupy")
    if any(isinstance(a, np.ndarray) for a in arrays):
        return np
    return _module(_current)


def to_numpy(x):
    """Host copy of ``x`` as a numpy array (no copy for numpy input)."""
    if _is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def asarray(x, backend: str | None = None, dtype=None):
    """Convert ``x`` to an array of ``backend`` (default: the current one)."""
    name = _current if backend is None else _check_name(backend)
    xp = _module(name)
    if name == "numpy":
        return np.asarray(to_numpy(x), dtype=dtype)
    return xp.asarray(x, dtype=dtype)


def _scatter_add_numpy(target, index, values):
    np.add.at(target, index, values)


def _scatter_add_cupy(target, index, values):
    import cupyx  # noqa: PLC0415

    cupyx.scatter_add(target, index, values)


_CAPS: dict[tuple, SimpleNamespace] = {}


def _check_family(value, where=""):
    key = value.strip().lower() if isinstance(value, str) else None
    if key in ("", "auto"):
        return "native"
    if key not in ENGINE_FAMILIES:
        raise ValueError(f"engine family must be one of {ENGINE_FAMILIES} (or 'auto'), got {value!r}{where}")
    return key


def engine_family(xp=np) -> str:
    """``"native"`` (numba kernels) or ``"generic"`` (array expressions) for namespace ``xp``.

    cupy is always ``"generic"``; numpy follows :func:`use_engines`, else the environment
    variable ``SPARSECODING_ENGINES`` (``auto``/``native`` or ``generic``; unset means native).
    """
    if xp is not np:
        return "generic"
    if _engines_override is not None:
        return _engines_override
    return _check_family(os.environ.get(ENGINES_VAR, ""), f" (from the environment variable {ENGINES_VAR})")


@contextlib.contextmanager
def use_engines(family: str):
    """Context manager: build operators with the ``"native"`` or ``"generic"`` engines inside the block.

    ``with use_engines("generic"): ...`` runs numpy arrays through the engines cupy uses.
    """
    global _engines_override
    previous = _engines_override
    _engines_override = _check_family(family)
    try:
        yield _engines_override
    finally:
        _engines_override = previous


def capabilities(xp) -> SimpleNamespace:
    """The capability table for namespace ``xp`` (and the current engine family).

    Fields
    ------
    name : "numpy" or "cupy"
    engines : "native" (numba kernels, numpy only) or "generic" (array expressions, any namespace)
    numba : bool, whether the numba kernels are to be used (``engines == "native"``)
    conv_layout : the layout convolutions are fastest in ("channels_last" for the numba im2col
        engine, "channels_first" for the generic ones): what a model picks when free to choose
    fft : module with ``rfftn``, ``irfftn``, ``next_fast_len``
    fft_kwargs : extra keyword arguments for the FFT calls (``workers`` on CPU)
    sliding_window_view : function as in ``numpy.lib.stride_tricks``
    scatter_add : ``f(target, index, values)`` unbuffered in-place add
    fuse : decorator fusing an elementwise function (identity on CPU, where
        numba kernels are used explicitly instead)
    on_gpu : bool
    """
    name = "cupy" if xp is not np else "numpy"
    family = engine_family(xp)
    key = (name, family)
    if key in _CAPS:
        return _CAPS[key]
    if name == "numpy":
        import scipy.fft  # noqa: PLC0415

        caps = SimpleNamespace(
            name="numpy",
            engines=family,
            numba=family == "native",
            conv_layout="channels_last" if family == "native" else "channels_first",
            fft=scipy.fft,
            # half the cores: pocketfft's pool competes with the BLAS threads
            # of the surrounding GEMMs (measured on 2 cores: 1 worker is faster)
            fft_kwargs={"workers": max(1, (os.cpu_count() or 1) // 2)},
            sliding_window_view=np.lib.stride_tricks.sliding_window_view,
            scatter_add=_scatter_add_numpy,
            fuse=lambda f: f,
            on_gpu=False,
        )
    else:
        import cupy  # noqa: PLC0415
        import cupyx.scipy.fft  # noqa: PLC0415

        caps = SimpleNamespace(
            name="cupy",
            engines="generic",
            numba=False,
            conv_layout="channels_first",
            fft=cupyx.scipy.fft,
            fft_kwargs={},
            sliding_window_view=cupy.lib.stride_tricks.sliding_window_view,
            scatter_add=_scatter_add_cupy,
            fuse=cupy.fuse,
            on_gpu=True,
        )
    _CAPS[key] = caps
    return caps
