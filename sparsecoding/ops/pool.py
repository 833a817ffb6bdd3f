"""Pooling over the spatial dims of channels-first arrays, and the adjoints.

Every function takes ``channels_last=True`` for ``(N, *L, C)`` arrays (the
indices then have the same layout and the same meaning: flat spatial position
within the ``(n, c)`` plane).

``max_pool`` returns PyTorch-style flat spatial indices (``return_indices=True``);
``max_unpool`` scatters values back to them and is the adjoint of "pick the
values at those indices". ``avg_pool_adjoint`` is the adjoint of ``avg_pool``.
No padding; output size ``floor((L - k) / s) + 1`` (PyTorch's default
``ceil_mode=False``). ``stride`` defaults to ``kernel_size``.

Edge cases: an empty batch (N = 0) gives empty results of the usual shapes;
float16 works (through the generic array path: the numba kernels take
float32/float64 and integers); complex input to ``max_pool`` / ``max_unpool``
is a ``TypeError`` (a maximum of complex values is undefined); indices out of
``[0, prod(output_size))`` are a ``ValueError`` in ``max_unpool``.
"""
from __future__ import annotations

import math
from itertools import product

from ..backend import capabilities, get_xp

__all__ = ["max_pool", "max_unpool", "avg_pool", "avg_pool_adjoint", "pool_output_shape"]


def _check_real(a, name):
    kind = a.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {a.dtype} (a maximum of complex values is undefined)")
    if kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")


def _numba_dtype(a):
    """The compiled kernels take every real dtype numba knows, which excludes float16."""
    return a.dtype.kind in "iuf" and a.dtype.itemsize >= 4


def _params(x, kernel_size, stride, name="x", channels_last=False):
    d = x.ndim - 2
    if d < 1:
        layout = "(N, *spatial, C)" if channels_last else "(N, C, *spatial)"
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(x.shape)}")
    k = (kernel_size,) * d if isinstance(kernel_size, int) else tuple(kernel_size)
    s = k if stride is None else ((stride,) * d if isinstance(stride, int) else tuple(stride))
    if len(k) != d or len(s) != d:
        raise ValueError(f"kernel_size and stride need {d} entries for {name} of shape {tuple(x.shape)}")
    if any(v < 1 for v in k + s):
        raise ValueError(f"kernel_size {k} and stride {s} must be positive")
    return d, k, s


def pool_output_shape(in_shape, kernel_size, stride):
    out = tuple((L - k) // s + 1 for L, k, s in zip(in_shape, kernel_size, stride))
    if any(o < 1 for o in out):
        raise ValueError(f"input of spatial shape {tuple(in_shape)} is smaller than the pool {tuple(kernel_size)}")
    return out


def _offsets(k, s, out):
    """(offset, slice tuple) for each kernel offset: the inputs that offset sees."""
    for off in product(*(range(ki) for ki in k)):
        yield off, tuple(slice(j, j + (o - 1) * si + 1, si) for j, o, si in zip(off, out, s))


def _spatial(a, channels_last):
    return tuple(a.shape[1:-1]) if channels_last else tuple(a.shape[2:])


def _index(sl, channels_last):
    """Index tuple selecting the spatial slices ``sl`` in either layout."""
    return (slice(None), *sl, slice(None)) if channels_last else (slice(None), slice(None), *sl)


def _with_spatial(a, spatial, channels_last):
    return (a.shape[0], *spatial, a.shape[-1]) if channels_last else (*a.shape[:2], *spatial)


def avg_pool(x, kernel_size=2, stride=None, channels_last=False):
    """Average pool: (N, C, *L) -> (N, C, *O) (or (N, *L, C) -> (N, *O, C))."""
    d, k, s = _params(x, kernel_size, stride, channels_last=channels_last)
    out = pool_output_shape(_spatial(x, channels_last), k, s)
    xp = get_xp(x)
    y = xp.zeros(_with_spatial(x, out, channels_last), dtype=x.dtype)
    for _, sl in _offsets(k, s, out):
        y += x[_index(sl, channels_last)]
    return y * (1.0 / math.prod(k))


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
    xp = get_xp(y)
    x = xp.zeros(_with_spatial(y, output_size, channels_last), dtype=y.dtype)
    yk = y * (1.0 / math.prod(k))
    for _, sl in _offsets(k, s, _spatial(y, channels_last)):
        x[_index(sl, channels_last)] += yk
    return x


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
    xp = get_xp(x)
    if channels_last:
        if d == 2 and xp.__name__ == "numpy" and _numba_dtype(x):
            from ._kernels import max_pool_2d_cl  # noqa: PLC0415

            out = pool_output_shape(x.shape[1:3], k, s)
            y = xp.empty((x.shape[0], *out, x.shape[3]), dtype=x.dtype)
            idx = xp.empty(y.shape, dtype=xp.int64)
            max_pool_2d_cl(xp.ascontiguousarray(x), k[0], k[1], s[0], s[1], y, idx)
            return y, idx
        y, idx = max_pool(xp.moveaxis(x, -1, 1), k, s)
        return xp.ascontiguousarray(xp.moveaxis(y, 1, -1)), xp.ascontiguousarray(xp.moveaxis(idx, 1, -1))
    out = pool_output_shape(x.shape[2:], k, s)
    if d == 2 and xp.__name__ == "numpy" and _numba_dtype(x):
        from ._kernels import max_pool_2d  # noqa: PLC0415

        n, c, h, w = x.shape
        y = xp.empty((n * c, *out), dtype=x.dtype)
        idx = xp.empty((n * c, *out), dtype=xp.int64)
        max_pool_2d(xp.ascontiguousarray(x).reshape(n * c, h, w), k[0], k[1], s[0], s[1], y, idx)
        return y.reshape(n, c, *out), idx.reshape(n, c, *out)
    swv = capabilities(xp).sliding_window_view
    win = swv(x, k, axis=tuple(range(2, 2 + d)))
    win = win[(slice(None), slice(None), *(slice(None, (o - 1) * si + 1, si) for o, si in zip(out, s)))]
    win = win.reshape(*x.shape[:2], *out, math.prod(k))
    local = xp.argmax(win, axis=-1)
    y = xp.take_along_axis(win, local[..., None], axis=-1)[..., 0]
    # local offset -> global flat index: coordinate_i = o_i * s_i + j_i
    flat = xp.zeros(local.shape, dtype=xp.int64)
    rem = local
    grids = xp.meshgrid(*(xp.arange(o) for o in out), indexing="ij")
    strides_k = [math.prod(k[i + 1:]) for i in range(d)]
    for i in range(d):
        j = rem // strides_k[i]
        rem = rem - j * strides_k[i]
        flat = flat * x.shape[2 + i] + (grids[i] * s[i] + j)
    return y, flat


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
    if channels_last:
        n, c = y.shape[0], y.shape[-1]
        if xp.__name__ == "numpy" and _numba_dtype(y):
            from ._kernels import max_unpool_cl  # noqa: PLC0415

            out = xp.zeros((n, math.prod(output_size), c), dtype=y.dtype)
            max_unpool_cl(xp.ascontiguousarray(y).reshape(n, -1, c),
                          xp.ascontiguousarray(indices).reshape(n, -1, c), out)
            return out.reshape(n, *output_size, c)
        x = max_unpool(xp.moveaxis(y, -1, 1), xp.moveaxis(indices, -1, 1), output_size)
        return xp.ascontiguousarray(xp.moveaxis(x, 1, -1))
    n, c = y.shape[:2]
    plane = math.prod(output_size)
    base = (xp.arange(n * c, dtype=xp.int64) * plane).reshape(n, c, *([1] * (y.ndim - 2)))
    flat_idx = (indices + base).ravel()
    # bincount sums duplicates (overlapping windows) without np.add.at
    out = xp.bincount(flat_idx, weights=y.ravel(), minlength=n * c * plane)
    return out.astype(y.dtype, copy=False).reshape(n, c, *output_size)
