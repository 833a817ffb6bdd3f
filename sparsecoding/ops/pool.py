"""Pooling over the spatial dims of channels-first arrays, and the adjoints: functions and operators.

Every function takes ``channels_last=True`` for ``(N, *L, C)`` arrays (the
indices then have the same layout and the same meaning: flat spatial position
within the ``(n, c)`` plane).

``max_pool`` returns PyTorch-style flat spatial indices (``return_indices=True``);
``max_unpool`` scatters values back to them and is the adjoint of "pick the
values at those indices". ``avg_pool_adjoint`` is the adjoint of ``avg_pool``.
No padding; output size ``floor((L - k) / s) + 1`` (PyTorch's default
``ceil_mode=False``). ``stride`` defaults to ``kernel_size``.

The operators :class:`MaxPool` and :class:`AvgPool` implement the
:class:`~sparsecoding.ops.linop.LinearOperator` contract: ``MaxPool.forward``
remembers the argmax, and its ``adjoint`` unpools to it (the adjoint of the pool at
the current argmax, as the EqProp dynamics use it). The work is done by the pool
engine of the arrays' namespace (:func:`sparsecoding.ops.engines.select_pool_engine`:
numba kernels on the CPU, array expressions elsewhere).

Edge cases: an empty batch (N = 0) gives empty results of the usual shapes;
float16 works (through the generic array path: the numba kernels take
float32/float64 and integers); complex input to ``max_pool`` / ``max_unpool``
is a ``TypeError`` (a maximum of complex values is undefined); indices out of
``[0, prod(output_size))`` are a ``ValueError`` in ``max_unpool``.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import get_xp
from .engines import pool_output_shape, select_pool_engine
from .linop import LinearOperator

__all__ = ["max_pool", "max_unpool", "avg_pool", "avg_pool_adjoint", "pool_output_shape", "MaxPool", "AvgPool"]


def _check_real(a, name):
    kind = a.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {a.dtype} (a maximum of complex values is undefined)")
    if kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")


def _params(x, kernel_size, stride, name="x", channels_last=False):
    d = x.ndim - 2
    if d < 1:
        layout = "(N, *spatial, C)" if channels_last else "(N, C, *spatial)"
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(x.shape)}")
    return (d, *_kernel_stride(d, kernel_size, stride, f"{name} of shape {tuple(x.shape)}"))


def _kernel_stride(d, kernel_size, stride, what):
    k = (kernel_size,) * d if isinstance(kernel_size, int) else tuple(kernel_size)
    s = k if stride is None else ((stride,) * d if isinstance(stride, int) else tuple(stride))
    if len(k) != d or len(s) != d:
        raise ValueError(f"kernel_size and stride need {d} entries for {what}")
    if any(v < 1 for v in k + s):
        raise ValueError(f"kernel_size {k} and stride {s} must be positive")
    return k, s


def _spatial(a, channels_last):
    return tuple(a.shape[1:-1]) if channels_last else tuple(a.shape[2:])


def _with_spatial(a, spatial, channels_last):
    return (a.shape[0], *spatial, a.shape[-1]) if channels_last else (*a.shape[:2], *spatial)


def avg_pool(x, kernel_size=2, stride=None, channels_last=False):
    """Average pool: (N, C, *L) -> (N, C, *O) (or (N, *L, C) -> (N, *O, C))."""
    d, k, s = _params(x, kernel_size, stride, channels_last=channels_last)
    return select_pool_engine(get_xp(x)).avg_pool(x, k, s, channels_last)


def avg_pool_adjoint(y, output_size, kernel_size=2, stride=None, channels_last=False):
    """Adjoint of :func:`avg_pool`: spread each value over its window / prod(k).

    ``output_size`` is the spatial shape of the pooled input.
    """
    d, k, s = _params(y, kernel_size, stride, "y", channels_last)
    output_size = tuple(output_size)
    if pool_output_shape(output_size, k, s) != _spatial(y, channels_last):
        raise ValueError(
            f"output_size {output_size} does not pool to y's spatial shape {_spatial(y, channels_last)}"
        )
    return select_pool_engine(get_xp(y)).avg_pool_adjoint(y, output_size, k, s, channels_last)


def max_pool(x, kernel_size=2, stride=None, channels_last=False):
    """Max pool with indices.

    Returns
    -------
    y : array (N, C, *O)  ((N, *O, C) with ``channels_last``)
    indices : int64 array, same shape as ``y``
        Flat index of each maximum within its ``(n, c)`` spatial plane (first
        maximum on ties), as ``torch.nn.functional.max_pool{d}d(return_indices=True)``.
    """
    _check_real(x, "x")
    d, k, s = _params(x, kernel_size, stride, channels_last=channels_last)
    return select_pool_engine(get_xp(x)).max_pool(x, k, s, channels_last)


def _check_unpool(y, indices, output_size, channels_last):
    """Dtypes, shapes and the index range of :func:`max_unpool`; returns ``output_size`` as a tuple."""
    _check_real(y, "y")
    if not hasattr(indices, "dtype") or indices.dtype.kind not in "iu":
        raise TypeError(f"indices must be an integer array (as max_pool returns), got "
                        f"{getattr(indices, 'dtype', type(indices).__name__)}")
    if y.shape != indices.shape:
        raise ValueError(f"y shape {tuple(y.shape)} and indices shape {tuple(indices.shape)} differ")
    d = y.ndim - 2
    if d < 1:
        layout = "(N, *spatial, C)" if channels_last else "(N, C, *spatial)"
        raise ValueError(f"y must have shape {layout}, got shape {tuple(y.shape)}")
    try:
        size = tuple(int(v) for v in output_size)
    except TypeError as exc:
        raise TypeError(f"output_size must be a tuple of {d} ints, got {output_size!r}") from exc
    if len(size) != d or any(v < 1 for v in size):
        raise ValueError(f"output_size must be {d} positive ints for y of shape {tuple(y.shape)}, got {output_size!r}")
    plane = math.prod(size)
    if indices.size:
        # one pass: viewed as unsigned, negative indices are huge, so the maximum tests both ends
        xp = get_xp(indices)
        unsigned = indices if indices.dtype.kind == "u" else indices.view(f"u{indices.dtype.itemsize}")
        if int(xp.max(unsigned)) >= plane:
            lo, hi = int(xp.min(indices)), int(xp.max(indices))
            raise ValueError(
                f"indices must be flat positions in [0, {plane}) of an output plane of size {size}, got values "
                f"in [{lo}, {hi}]" + ("; output_size is too small for these indices" if hi >= plane else "")
            )
    return size


def max_unpool(y, indices, output_size, channels_last=False):
    """Place ``y`` at ``indices`` in zeros of spatial shape ``output_size`` (summing duplicates).

    The adjoint of ``x -> take(x, indices)`` for fixed indices. ``indices`` are flat
    positions within each ``(n, c)`` plane, as :func:`max_pool` returns them: a
    ``ValueError`` when any is outside ``[0, prod(output_size))`` (negative, or an
    ``output_size`` too small for them). An empty batch gives an empty result.
    """
    output_size = _check_unpool(y, indices, output_size, channels_last)
    xp = get_xp(y)
    if y.shape[0] == 0:
        return xp.zeros(_with_spatial(y, output_size, channels_last), dtype=y.dtype)
    return select_pool_engine(xp).max_unpool(y, indices, output_size, channels_last)


class _Pool(LinearOperator):
    """Shared set-up of the pool operators: shapes in the layout, the engine of the namespace."""

    def __init__(self, n_channels, spatial_shape, kernel_size=2, stride=None, layout="channels_first",
                 dtype="float32", xp=None):
        if layout not in ("channels_first", "channels_last"):
            raise ValueError(f"layout must be 'channels_first' or 'channels_last', got {layout!r}")
        spatial = tuple(int(v) for v in spatial_shape)
        self.kernel_size, self.stride = _kernel_stride(len(spatial), kernel_size, stride,
                                                       f"inputs of spatial shape {spatial}")
        self.spatial_in = spatial
        self.spatial_out = pool_output_shape(spatial, self.kernel_size, self.stride)
        self.channels_last = layout == "channels_last"
        self.layout, self.n_channels = layout, int(n_channels)
        c = self.n_channels
        self.in_shape = (*spatial, c) if self.channels_last else (c, *spatial)
        self.out_shape = (*self.spatial_out, c) if self.channels_last else (c, *self.spatial_out)
        self.xp = get_xp() if xp is None else xp
        self.dtype = np.dtype(dtype)
        self._engine = select_pool_engine(self.xp)

    def _check(self, a, shape, name):
        if tuple(a.shape[1:]) != tuple(shape) or a.ndim != len(shape) + 1:
            raise ValueError(f"{name} must have shape (N, {', '.join(map(str, shape))}), got shape {tuple(a.shape)}")


class AvgPool(_Pool):
    """Average pool as a linear operator: ``forward`` = :func:`avg_pool`, ``adjoint`` = :func:`avg_pool_adjoint`.

    ``in_shape`` / ``out_shape`` are ``(C, *L)`` / ``(C, *O)`` (channels-last: ``(*L, C)`` / ``(*O, C)``).
    """

    def forward(self, x):
        self._check(x, self.in_shape, "x")
        return self._engine.avg_pool(x, self.kernel_size, self.stride, self.channels_last)

    def adjoint(self, y):
        self._check(y, self.out_shape, "y")
        return self._engine.avg_pool_adjoint(y, self.spatial_in, self.kernel_size, self.stride, self.channels_last)


class MaxPool(_Pool):
    """Max pool at the current argmax, as a linear operator.

    ``forward(x)`` is :func:`max_pool` and remembers the indices (``self.indices``);
    ``adjoint(y)`` unpools ``y`` to them (:func:`max_unpool` without the range check: the
    indices are its own). For fixed indices the pair is linear and adjoint
    (``<take(x, idx), y> = <x, unpool(y, idx)>``), which is what the EqProp dynamics use
    (the feedback term through a max-pooled layer). ``lipschitz()`` is the largest number
    of windows whose maximum sits at one input position (1 without overlapping windows).
    """

    indices = None

    def forward(self, x):
        self._check(x, self.in_shape, "x")
        _check_real(x, "x")
        y, self.indices = self._engine.max_pool(x, self.kernel_size, self.stride, self.channels_last)
        return y

    def adjoint(self, y):
        self._check(y, self.out_shape, "y")
        if self.indices is None or self.indices.shape != y.shape:
            raise ValueError("MaxPool.adjoint needs the indices of a forward call on a batch of the same size")
        if y.shape[0] == 0:
            return self.xp.zeros((0, *self.in_shape), dtype=y.dtype)
        return self._engine.max_unpool(y, self.indices, self.spatial_in, self.channels_last)

    def lipschitz(self, n_iter=None, seed=0):
        if self.indices is None:
            return float(math.prod(-(-k // s) for k, s in zip(self.kernel_size, self.stride)))
        xp, idx = self.xp, self.indices
        n = idx.shape[0]
        plane = math.prod(self.spatial_in)
        per_plane = xp.moveaxis(idx, -1, 1) if self.channels_last else idx
        per_plane = per_plane.reshape(n * self.n_channels, -1)
        base = (xp.arange(per_plane.shape[0], dtype=xp.int64) * plane)[:, None]
        counts = xp.bincount((per_plane + base).ravel(), minlength=per_plane.shape[0] * plane)
        return float(counts.max()) if counts.size else 0.0
