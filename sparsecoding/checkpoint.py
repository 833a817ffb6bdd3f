"""Atomic checkpoints: write to a temporary file in the same folder, then rename."""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

__all__ = ["save_checkpoint", "load_checkpoint", "pack_optimizer", "unpack_optimizer", "pack_params", "unpack_params"]


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


def pack_optimizer(optimizer, arrays):
    """Add the optimiser's buffers to ``arrays`` (as ``opt_<name>_<i>``); return its JSON-able state."""
    state = optimizer.state_dict()
    for name, bufs in state["buffers"].items():
        for i, buf in enumerate(bufs):
            arrays[f"opt_{name}_{i}"] = buf
    state["buffers"] = {name: len(v) for name, v in state["buffers"].items()}
    return state


def unpack_optimizer(optimizer, arrays, state):
    """Restore an optimiser from :func:`pack_optimizer`'s ``state`` and the checkpoint ``arrays``."""
    state = dict(state)
    state["buffers"] = {name: [arrays[f"opt_{name}_{i}"] for i in range(cnt)] for name, cnt in state["buffers"].items()}
    optimizer.load_state_dict(state)


def pack_params(params, arrays):
    """Add ``[(W, b), ...]`` to ``arrays`` as ``W<k>`` / ``b<k>`` (host copies)."""
    from .backend import to_numpy  # noqa: PLC0415

    for k, (W, b) in enumerate(params):
        arrays[f"W{k}"], arrays[f"b{k}"] = to_numpy(W), to_numpy(b)
    return arrays


def unpack_params(params, arrays):
    """Copy ``W<k>`` / ``b<k>`` from ``arrays`` into the parameter arrays in place."""
    from .backend import get_xp  # noqa: PLC0415

    for k, (W, b) in enumerate(params):
        W[...] = get_xp(W).asarray(arrays[f"W{k}"])
        b[...] = get_xp(b).asarray(arrays[f"b{k}"])
