"""Generic-array pools (any namespace): window views, argmax, ``bincount`` unpool, strided adds.

Every method takes ``channels_last`` arrays ``(N, *L, C)`` too: the average pools
work on either layout directly, the max pool and unpool transpose around the
channels-first core. Indices are flat spatial positions within each ``(n, c)``
plane (PyTorch's ``return_indices``), the same in both layouts.
"""
from __future__ import annotations

import math
from itertools import product

__all__ = ["PoolGeneric", "pool_output_shape"]


def pool_output_shape(in_shape, kernel_size, stride):
    out = tuple((L - k) // s + 1 for L, k, s in zip(in_shape, kernel_size, stride))
    if any(o < 1 for o in out):
        raise ValueError(f"input of spatial shape {tuple(in_shape)} is smaller than the pool {tuple(kernel_size)}")
    return out


def _offsets(k, s, out):
    """(offset, slice tuple) for each kernel offset: the inputs that offset sees."""
    for off in product(*(range(ki) for ki in k)):
        yield off, tuple(slice(j, j + (o - 1) * si + 1, si) for j, o, si in zip(off, out, s))


def _index(sl, channels_last):
    """Index tuple selecting the spatial slices ``sl`` in either layout."""
    return (slice(None), *sl, slice(None)) if channels_last else (slice(None), slice(None), *sl)


def _spatial(a, channels_last):
    return tuple(a.shape[1:-1]) if channels_last else tuple(a.shape[2:])


def _with_spatial(a, spatial, channels_last):
    return (a.shape[0], *spatial, a.shape[-1]) if channels_last else (*a.shape[:2], *spatial)


class PoolGeneric:
    family = "generic"

    def __init__(self, xp, caps):
        self.xp, self.caps = xp, caps

    # ------------------------------------------------------------- average
    def avg_pool(self, x, k, s, channels_last):
        out = pool_output_shape(_spatial(x, channels_last), k, s)
        y = self.xp.zeros(_with_spatial(x, out, channels_last), dtype=x.dtype)
        for _, sl in _offsets(k, s, out):
            y += x[_index(sl, channels_last)]
        return y * (1.0 / math.prod(k))

    def avg_pool_adjoint(self, y, output_size, k, s, channels_last):
        x = self.xp.zeros(_with_spatial(y, output_size, channels_last), dtype=y.dtype)
        yk = y * (1.0 / math.prod(k))
        for _, sl in _offsets(k, s, _spatial(y, channels_last)):
            x[_index(sl, channels_last)] += yk
        return x

    # ----------------------------------------------------------------- max
    def max_pool(self, x, k, s, channels_last):
        xp = self.xp
        if channels_last:
            y, idx = self.max_pool(xp.moveaxis(x, -1, 1), k, s, False)
            return xp.ascontiguousarray(xp.moveaxis(y, 1, -1)), xp.ascontiguousarray(xp.moveaxis(idx, 1, -1))
        d = x.ndim - 2
        out = pool_output_shape(x.shape[2:], k, s)
        win = self.caps.sliding_window_view(x, k, axis=tuple(range(2, 2 + d)))
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

    def max_unpool(self, y, indices, output_size, channels_last):
        """Place ``y`` at ``indices`` in zeros of spatial shape ``output_size`` (duplicates summed);
        the indices are trusted (range-checked by the functional API)."""
        xp = self.xp
        if channels_last:
            x = self.max_unpool(xp.moveaxis(y, -1, 1), xp.moveaxis(indices, -1, 1), output_size, False)
            return xp.ascontiguousarray(xp.moveaxis(x, 1, -1))
        n, c = y.shape[:2]
        plane = math.prod(output_size)
        base = (xp.arange(n * c, dtype=xp.int64) * plane).reshape(n, c, *([1] * (y.ndim - 2)))
        flat_idx = (indices + base).ravel()
        # bincount sums duplicates (overlapping windows) without add.at
        out = xp.bincount(flat_idx, weights=y.ravel(), minlength=n * c * plane)
        return out.astype(y.dtype, copy=False).reshape(n, c, *output_size)
