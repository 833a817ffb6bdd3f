"""Atomic checkpoints: write to a temporary file in the same folder, then rename."""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(path, arrays, meta):
    """Write ``arrays`` (name -> numpy array) and JSON-able ``meta`` to ``path`` (.npz) atomically."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path):
    """Return ``(arrays, meta)`` from a checkpoint written by :func:`save_checkpoint`."""
    with np.load(os.fspath(path), allow_pickle=False) as z:
        meta = json.loads(bytes(z["__meta__"]).decode())
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
    return arrays, meta
