"""numba pools on the CPU: 2-D max pool kernels in both layouts and the channels-last unpool.

Dtypes numba does not know (float16) and the cases without a kernel (1-D and 3-D
max pools, the channels-first unpool, which ``bincount`` does well) take the
generic path of :class:`~sparsecoding.ops.engines.pool_xp.PoolGeneric`.
"""
from __future__ import annotations

import math

from .. import _kernels as K
from .pool_xp import PoolGeneric, pool_output_shape

__all__ = ["PoolNumba"]


def _numba_dtype(a):
    """The compiled kernels take every real dtype numba knows, which excludes float16."""
    return a.dtype.kind in "iuf" and a.dtype.itemsize >= 4


class PoolNumba(PoolGeneric):
    family = "native"

    def max_pool(self, x, k, s, channels_last):
        if x.ndim != 4 or not _numba_dtype(x):
            return super().max_pool(x, k, s, channels_last)
        np_ = self.xp
        if channels_last:
            out = pool_output_shape(x.shape[1:3], k, s)
            y = np_.empty((x.shape[0], *out, x.shape[3]), dtype=x.dtype)
            idx = np_.empty(y.shape, dtype=np_.int64)
            K.max_pool_2d_cl(np_.ascontiguousarray(x), k[0], k[1], s[0], s[1], y, idx)
            return y, idx
        out = pool_output_shape(x.shape[2:], k, s)
        n, c, h, w = x.shape
        y = np_.empty((n * c, *out), dtype=x.dtype)
        idx = np_.empty((n * c, *out), dtype=np_.int64)
        K.max_pool_2d(np_.ascontiguousarray(x).reshape(n * c, h, w), k[0], k[1], s[0], s[1], y, idx)
        return y.reshape(n, c, *out), idx.reshape(n, c, *out)

    def max_unpool(self, y, indices, output_size, channels_last):
        if not channels_last or not _numba_dtype(y):
            return super().max_unpool(y, indices, output_size, channels_last)
        np_ = self.xp
        n, c = y.shape[0], y.shape[-1]
        out = np_.zeros((n, math.prod(output_size), c), dtype=y.dtype)
        K.max_unpool_cl(np_.ascontiguousarray(y).reshape(n, -1, c),
                        np_.ascontiguousarray(indices, dtype=np_.int64).reshape(n, -1, c), out)
        return out.reshape(n, *output_size, c)
