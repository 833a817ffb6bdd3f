"""Convolution geometry shared by :mod:`sparsecoding.ops.conv` and the engines: shapes, padding, checks."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Geometry", "resolve_padding", "conv_output_shape", "make_geometry", "check_real", "check_weights",
           "embed_slices", "as_tuple"]


def as_tuple(value, d, name, minimum):
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * d
    try:
        value = tuple(int(v) for v in value)
    except TypeError as exc:
        raise TypeError(f"{name} must be an int or a tuple of {d} ints, got {value!r}") from exc
    if len(value) != d:
        raise ValueError(f"{name} must have {d} entries for a {d}-d convolution, got {value!r}")
    if any(v < minimum for v in value):
        raise ValueError(f"{name} entries must be >= {minimum}, got {value!r}")
    return value


def resolve_padding(padding, kernel_size):
    """Turn ``padding`` (int, tuple, "same", "valid") into a tuple of ints."""
    d = len(kernel_size)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0,) * d
        if mode == "same":
            even = [k for k in kernel_size if k % 2 == 0]
            if even:
                raise ValueError(
                    f'padding="same" needs odd kernel sizes, got kernel size {tuple(kernel_size)}'
                )
            return tuple((k - 1) // 2 for k in kernel_size)
        raise ValueError(f'padding must be an int, a tuple, "same" or "valid", got {padding!r}')
    return as_tuple(padding, d, "padding", 0)


def conv_output_shape(in_shape, kernel_size, stride=1, padding=0):
    """Spatial output shape of ``conv`` for spatial input shape ``in_shape``."""
    d = len(kernel_size)
    stride = as_tuple(stride, d, "stride", 1)
    pad = resolve_padding(padding, kernel_size)
    out = tuple((L + 2 * p - k) // s + 1 for L, k, s, p in zip(in_shape, kernel_size, stride, pad))
    if any(o < 1 for o in out):
        raise ValueError(
            f"input of spatial shape {tuple(in_shape)} is smaller than the kernel "
            f"{tuple(kernel_size)} with padding {pad}: empty output"
        )
    return out


@dataclass(frozen=True)
class Geometry:
    n_in: int  # C
    n_out: int  # K
    in_shape: tuple  # L
    kernel: tuple  # k
    stride: tuple  # s
    pad: tuple  # p
    out_shape: tuple  # O

    @property
    def d(self):
        return len(self.kernel)


def check_real(a, name):
    """TypeError for complex or non-numeric arrays (a cast would drop the imaginary part)."""
    kind = a.dtype.kind
    if kind == "c":
        raise TypeError(
            f"{name} must be real, got complex dtype {a.dtype} (the imaginary part would be dropped; "
            f"pass {name}.real or abs({name}) explicitly)"
        )
    if kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")


def check_weights(w):
    check_real(w, "w")
    if w.dtype.kind != "f" or w.dtype.itemsize not in (4, 8):
        raise TypeError(
            f"w must be float32 or float64, got {w.dtype} (the convolution engines compute in those "
            f"dtypes; cast it first, e.g. w.astype(np.float32))"
        )
    if w.ndim < 3 or w.ndim > 5:
        raise ValueError(
            f"w must have shape (K, C, *kernel) with 1 to 3 spatial dims, got shape {tuple(w.shape)}"
        )


def make_geometry(w, in_shape, stride, padding, out_shape=None):
    """The geometry of ``conv(x, w)`` on inputs of spatial shape ``in_shape``; ``out_shape`` (optional)
    keeps only the leading block of that many output positions per dimension (each at least 1 and at
    most the full output): the engines then compute those positions only, and the adjoint is that of
    the cropped map (zero rows beyond the block)."""
    check_weights(w)
    d = w.ndim - 2
    kernel = tuple(int(k) for k in w.shape[2:])
    in_shape = tuple(int(v) for v in in_shape)
    if len(in_shape) != d:
        raise ValueError(f"input needs {d} spatial dims for weights of shape {tuple(w.shape)}, got {in_shape}")
    stride = as_tuple(stride, d, "stride", 1)
    pad = resolve_padding(padding, kernel)
    out = conv_output_shape(in_shape, kernel, stride, pad)
    if out_shape is not None:
        crop = as_tuple(out_shape, d, "out_shape", 1)
        if any(c > o for c, o in zip(crop, out)):
            raise ValueError(f"out_shape must be at most the full output shape {out} in every dimension, "
                             f"got {crop}")
        out = crop
    return Geometry(int(w.shape[1]), int(w.shape[0]), in_shape, kernel, stride, pad, out)


def embed_slices(g, buffer_len, channels_last=False):
    """Slices pairing the input region ``[0, L)`` with buffer ``[p, p + L)``, clipped."""
    buf, src = [], []
    for L, p, B in zip(g.in_shape, g.pad, buffer_len):
        hi = min(p + L, B)
        lo = min(p, hi)
        buf.append(slice(lo, hi))
        src.append(slice(0, hi - lo))
    if channels_last:
        return (slice(None), *buf, slice(None)), (slice(None), *src, slice(None))
    return (slice(None), slice(None), *buf), (slice(None), slice(None), *src)
