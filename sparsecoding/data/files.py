"""Readers for the standard files of CIFAR-10 (python batches) and MNIST (IDX)."""
from __future__ import annotations

import gzip
import os
import pickle

import numpy as np


def _find(data_dir, names):
    for root in (data_dir, os.path.join(data_dir, "cifar-10-batches-py"), os.path.join(data_dir, "MNIST", "raw"),
                 os.path.join(data_dir, "mnist")):
        for name in names:
            for candidate in (name, name + ".gz"):
                path = os.path.join(root, candidate)
                if os.path.exists(path):
                    return path
    raise FileNotFoundError(f"none of {names} found under {data_dir!r} (nothing is downloaded: put the standard "
                            f"files there)")


def load_cifar10(data_dir, train=True, dtype="float32"):
    """CIFAR-10 from the python batches (``data_batch_1..5``, ``test_batch``).

    Returns X (N, 3, 32, 32) in [0, 1] and y (N,) int64.
    """
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    xs, ys = [], []
    for name in names:
        with open(_find(data_dir, [name]), "rb") as f:
            d = pickle.load(f, encoding="bytes")
        xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[b"labels"], dtype=np.int64))
    return (np.concatenate(xs).astype(dtype) / 255.0).astype(dtype), np.concatenate(ys)


def _read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if (magic >> 8) != 0x08:
        raise ValueError(f"{path}: only unsigned-byte IDX files are supported")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist(data_dir, train=True, dtype="float32"):
    """MNIST from the IDX files (``train-images-idx3-ubyte`` etc., optionally gzipped).

    Returns X (N, 1, 28, 28) in [0, 1] and y (N,) int64.
    """
    prefix = "train" if train else "t10k"
    X = _read_idx(_find(data_dir, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"]))
    y = _read_idx(_find(data_dir, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"]))
    return (X[:, None].astype(dtype) / 255.0).astype(dtype), y.astype(np.int64)


def load_stl10(data_dir, split="train", dtype="float32"):
    """STL-10 from the binary files (``stl10_binary/{train,test,unlabeled}_X.bin`` and ``_y.bin``).

    Returns X (N, 3, 96, 96) in [0, 1] and y (N,) int64 in 0..9 (-1 for the unlabeled split).
    """
    if split not in ("train", "test", "unlabeled"):
        raise ValueError(f"split must be 'train', 'test' or 'unlabeled', got {split!r}")
    roots = [data_dir, os.path.join(data_dir, "stl10_binary")]
    path = next((os.path.join(r, f"{split}_X.bin") for r in roots if os.path.exists(os.path.join(r, f"{split}_X.bin"))),
                None)
    if path is None:
        raise FileNotFoundError(f"{split}_X.bin not found under {data_dir!r} (nothing is downloaded)")
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 3, 96, 96)
    X = raw.transpose(0, 1, 3, 2).astype(dtype) / 255.0  # files are column-major per channel
    ypath = path.replace("_X.bin", "_y.bin")
    y = np.fromfile(ypath, dtype=np.uint8).astype(np.int64) - 1 if os.path.exists(ypath) else -np.ones(len(X), np.int64)
    return X.astype(dtype), y
