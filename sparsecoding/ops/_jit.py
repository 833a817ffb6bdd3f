"""numba compilation with an on-disk cache outside the installed package.

numba's ``cache=True`` writes its cache files into the ``__pycache__`` folder
beside the source when that folder is writable, i.e. inside
``site-packages/sparsecoding``. A later ``pip install`` that replaces the
package leaves such a folder behind, and it then shadows the new install
(seen: ``ModuleNotFoundError: No module named 'sparsecoding.ops.conv'``).
Nothing may be written inside the installed package, so the kernels are
compiled with the cache folder pointed elsewhere:

1. ``SPARSECODING_CACHE_DIR`` (the numba cache goes to its ``numba/`` subfolder);
2. ``NUMBA_CACHE_DIR`` if the user set it (numba's own setting, left as it is);
3. ``$XDG_CACHE_HOME/sparsecoding/numba``, by default ``~/.cache/sparsecoding/numba``.

Where that folder cannot be created or written, the kernels are compiled in
memory at every start (slower start-up, nothing written). The folder is set
only while our own functions are decorated (numba picks a function's cache
locator then), so other libraries' numba caches are not moved.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager

import numba

__all__ = ["cache_dir", "njit_cached"]


def cache_dir():
    """The folder of the numba cache, or None where no writable folder is available."""
    own = os.environ.get("SPARSECODING_CACHE_DIR")
    if own:
        path = os.path.join(own, "numba")
    elif os.environ.get("NUMBA_CACHE_DIR"):
        path = os.environ["NUMBA_CACHE_DIR"]
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "sparsecoding", "numba")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError:
        return None
    return os.path.abspath(path)


_CACHE_DIR = cache_dir()


@contextmanager
def _cache_dir_set(path):
    old = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = path
    try:
        yield
    finally:
        numba.config.CACHE_DIR = old


def njit_cached(**options):
    """``numba.njit(cache=True, **options)`` with the cache in :func:`cache_dir` (no cache if None)."""

    def decorate(fn):
        if _CACHE_DIR is None:
            return numba.njit(cache=False, **options)(fn)
        with _cache_dir_set(_CACHE_DIR):
            return numba.njit(cache=True, **options)(fn)

    return decorate
