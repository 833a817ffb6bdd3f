"""Readers for the standard files of CIFAR-10, MNIST and STL-10 (nothing is downloaded).

Formats
-------
CIFAR-10, python version (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``):
    each batch is a pickled dict with ``b'data'``, a uint8 array (N, 3072) whose
    rows hold the red, green and blue 32x32 planes in row-major order, and
    ``b'labels'``, a list of N ints in 0..9 (also ``b'batch_label'`` and
    ``b'filenames'``, which are not used).  Batches are unpickled with a
    restricted unpickler that admits only dicts, lists, strings/bytes, ints and
    numpy arrays, so a malicious batch cannot run code.
MNIST, IDX (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-...``):
    a big-endian header -- magic number ``0x0000TTDD`` (two zero bytes, data
    type ``TT`` (0x08 = unsigned byte, the only one MNIST uses), number of
    dimensions ``DD``), then one 4-byte size per dimension -- followed by the
    values in row-major order.  Images are 3-d (N, 28, 28), labels 1-d (N,) in 0..9.
STL-10, binary (``stl10_binary/{train,test,unlabeled}_X.bin`` and ``{train,test}_y.bin``):
    ``_X.bin`` holds N images of 3x96x96 uint8, each channel stored column-major;
    ``_y.bin`` holds N uint8 labels in 1..10.

Any of these files may also be gzipped (recognised by its content, whatever
its name; ``name.gz`` is looked for next to ``name``).  A file that does not
match its format raises :class:`DataFileError` naming the file and what was
expected.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import zlib

import numpy as np

_GZIP_MAGIC = b"\x1f\x8b"
_CIFAR_ROW = 3 * 32 * 32
_STL_IMAGE = 3 * 96 * 96


class DataFileError(ValueError):
    """A data file exists but is not a valid file of its format (corrupt, truncated, inconsistent)."""


class UnsafePickleError(DataFileError, pickle.UnpicklingError):
    """A pickled batch references a global outside the few the CIFAR-10 format needs."""


def _find(data_dir, names, roots=None):
    if roots is None:
        roots = (data_dir, os.path.join(data_dir, "cifar-10-batches-py"), os.path.join(data_dir, "MNIST", "raw"),
                 os.path.join(data_dir, "mnist"))
    for root in roots:
        for name in names:
            for candidate in (name, name + ".gz"):
                path = os.path.join(root, candidate)
                if os.path.exists(path):
                    return path
    raise FileNotFoundError(f"none of {names} found under {os.fspath(data_dir)!r} (nothing is downloaded: put the "
                            f"standard files there)")


def _read_bytes(path):
    """The file's bytes, decompressed when it is gzipped (judged by content, not by the name)."""
    with open(path, "rb") as f:
        head = f.read(2)
        f.seek(0)
        if head != _GZIP_MAGIC:
            if path.endswith(".gz"):
                raise DataFileError(f"{path}: named .gz but is not a gzip file (no gzip magic number 1f 8b)")
            return f.read()
        try:
            with gzip.GzipFile(fileobj=f, mode="rb") as g:
                return g.read()
        except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a cut stream is an EOFError
            raise DataFileError(f"{path}: corrupt or truncated gzip data ({e})") from None


def _check_labels(path, y, low, high):
    if y.size and (y.min() < low or y.max() > high):
        bad = y[(y < low) | (y > high)]
        raise DataFileError(f"{path}: labels must lie in {low}..{high}, found {bad.size} outside (e.g. {int(bad[0])})")


def _check_counts(x_path, n_x, y_path, n_y):
    if n_x != n_y:
        raise DataFileError(f"{x_path} holds {n_x} images but {y_path} holds {n_y} labels; the counts must match")


# --- CIFAR-10 -------------------------------------------------------------------------------------------------------

def _latin1_encode(text, encoding):
    # Python 3 writes bytes into protocol <= 2 pickles as _codecs.encode(text, 'latin1'); admit only that codec
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode is admitted only for latin1 text, got encoding {encoding!r}")
    return text.encode("latin1")


def _array_globals():
    # the functions numpy's own array pickles call (numpy 1 spells the module numpy.core, numpy 2 numpy._core):
    # _reconstruct for protocols <= 4, _frombuffer for protocol 5; taken from a reduce so no private import is needed
    a = np.zeros(1, np.uint8)
    reconstruct, frombuffer = a.__reduce__()[0], a.__reduce_ex__(5)[0]
    table = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1_encode}
    for core in ("numpy.core", "numpy._core"):
        table[(core + ".multiarray", "_reconstruct")] = reconstruct
        table[(core + ".numeric", "_frombuffer")] = frombuffer
    return table


_ALLOWED_GLOBALS = _array_globals()


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals of numpy arrays; anything else (os.system, eval, ...) is refused."""

    def __init__(self, file, path):
        super().__init__(file, encoding="bytes")  # the batches were written by Python 2: keep its str as bytes
        self._path = path

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"{self._path}: refused to load global {module}.{name}; a CIFAR-10 batch holds "
                                    f"only dicts, lists, strings and numpy arrays (is this file what it claims to "
                                    f"be?)") from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._path}: refused a persistent id; CIFAR-10 batches have none")


def _get(d, key):
    # written by Python 2 the keys are bytes (b'data'); a batch re-saved by Python 3 may use str keys
    return d[key] if key in d else d.get(key.decode())


def _read_cifar_batch(path):
    raw = _read_bytes(path)
    try:
        d = _BatchUnpickler(io.BytesIO(raw), path).load()
    except UnsafePickleError:
        raise
    except Exception as e:  # a corrupt pickle can fail in many ways (UnpicklingError, EOFError, ValueError, ...)
        raise DataFileError(f"{path}: not a readable CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise DataFileError(f"{path}: a CIFAR-10 batch must be a pickled dict, got {type(d).__name__}")
    data, labels = _get(d, b"data"), _get(d, b"labels")
    if data is None or labels is None:
        raise DataFileError(f"{path}: a CIFAR-10 batch needs the keys b'data' and b'labels', "
                            f"found {sorted(map(repr, d))}")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_ROW:
        found = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__)
        raise DataFileError(f"{path}: b'data' must be a uint8 array of shape (N, {_CIFAR_ROW}), got {found}")
    y = np.asarray(labels)
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise DataFileError(f"{path}: b'labels' must be a list of ints, got {y.dtype} values of shape {y.shape}")
    y = y.astype(np.int64)
    if len(y) != len(data):
        raise DataFileError(f"{path}: b'data' holds {len(data)} images but b'labels' holds {len(y)} labels")
    _check_labels(path, y, 0, 9)
    return data, y


def load_cifar10(data_dir, train=True, dtype="float32"):
    """CIFAR-10 from the python batches (``data_batch_1..5``, ``test_batch``; optionally gzipped).

    Returns X (N, 3, 32, 32) in [0, 1] and y (N,) int64 in 0..9.  Raises
    FileNotFoundError for a missing batch and :class:`DataFileError` for a corrupt
    one (:class:`UnsafePickleError` when it references anything but numpy arrays).
    """
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    xs, ys = [], []
    for name in names:
        data, y = _read_cifar_batch(_find(data_dir, [name]))
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(y)
    return (np.concatenate(xs).astype(dtype) / 255.0).astype(dtype), np.concatenate(ys)


# --- MNIST ----------------------------------------------------------------------------------------------------------

def _read_idx(path, ndim):
    """An unsigned-byte IDX array of ``ndim`` dimensions."""
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataFileError(f"{path}: {len(data)} bytes is too short for an IDX header (a 4-byte magic number)")
    magic = int.from_bytes(data[:4], "big")
    expected = 0x0800 | ndim
    if magic >> 16 != 0 or (magic & 0xFF) != ndim:
        raise DataFileError(f"{path}: magic number 0x{magic:08X} is not that of a {ndim}-d unsigned-byte IDX file "
                            f"(expected 0x{expected:08X})")
    if (magic >> 8) & 0xFF != 0x08:
        raise DataFileError(f"{path}: IDX data type 0x{(magic >> 8) & 0xFF:02X} is not supported; MNIST files hold "
                            f"unsigned bytes (type 0x08, magic 0x{expected:08X})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFileError(f"{path}: truncated IDX header: expected {header} bytes, found {len(data)}")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    n_expected, n_found = int(np.prod(shape, dtype=np.int64)), len(data) - header
    if n_found != n_expected:
        what = "truncated" if n_found < n_expected else "trailing bytes after the"
        raise DataFileError(f"{path}: {what} payload: the header declares shape {shape}, i.e. {n_expected} bytes, "
                            f"found {n_found}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist(data_dir, train=True, dtype="float32"):
    """MNIST from the IDX files (``train-images-idx3-ubyte`` etc., optionally gzipped).

    Returns X (N, 1, H, W) in [0, 1] (28x28 for MNIST) and y (N,) int64 in 0..9.
    Raises FileNotFoundError for a missing file and :class:`DataFileError` for a
    corrupt one or when the image and label counts differ.
    """
    prefix = "train" if train else "t10k"
    x_path = _find(data_dir, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"])
    y_path = _find(data_dir, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"])
    X, y = _read_idx(x_path, 3), _read_idx(y_path, 1)
    _check_counts(x_path, len(X), y_path, len(y))
    _check_labels(y_path, y, 0, 9)
    return (X[:, None].astype(dtype) / 255.0).astype(dtype), y.astype(np.int64)


# --- STL-10 ---------------------------------------------------------------------------------------------------------

def load_stl10(data_dir, split="train", dtype="float32"):
    """STL-10 from the binary files (``stl10_binary/{train,test,unlabeled}_X.bin`` and ``_y.bin``).

    Returns X (N, 3, 96, 96) in [0, 1] and y (N,) int64 in 0..9 (the files' 1..10
    minus one); the unlabeled split has no label file and gets y = -1 throughout.
    Raises FileNotFoundError for a missing image file or (train/test) label file
    and :class:`DataFileError` for a corrupt one.
    """
    if split not in ("train", "test", "unlabeled"):
        raise ValueError(f"split must be 'train', 'test' or 'unlabeled', got {split!r}")
    roots = (data_dir, os.path.join(data_dir, "stl10_binary"))
    x_path = _find(data_dir, [f"{split}_X.bin"], roots)
    raw = _read_bytes(x_path)
    if len(raw) == 0 or len(raw) % _STL_IMAGE:
        raise DataFileError(f"{x_path}: expected a whole number of 3x96x96 images ({_STL_IMAGE} bytes each), found "
                            f"{len(raw)} bytes")
    X = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3, 96, 96)
    X = X.transpose(0, 1, 3, 2).astype(dtype) / 255.0  # files are column-major per channel
    if split == "unlabeled":
        return X.astype(dtype), np.full(len(X), -1, np.int64)
    y_name = f"{split}_y.bin"
    try:
        y_path = _find(data_dir, [y_name], roots)
    except FileNotFoundError:
        raise FileNotFoundError(f"{x_path} has no label file: {y_name} not found next to it (the {split!r} split is "
                                f"labelled; nothing is downloaded)") from None
    y = np.frombuffer(_read_bytes(y_path), dtype=np.uint8).astype(np.int64)
    _check_counts(x_path, len(X), y_path, len(y))
    _check_labels(y_path, y, 1, 10)
    return X.astype(dtype), y - 1
