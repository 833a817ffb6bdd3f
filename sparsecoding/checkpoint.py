"""Atomic checkpoints: write to a temporary file in the same folder, then rename.

The helpers that fill a checkpoint's arrays share the optimisers' named parameters
(:mod:`sparsecoding.optim`): a model's parameters as a dict ``{name: array}`` are stored
under their names (:func:`pack_params`), an optimiser's buffers as ``opt_<buffer>_<name>``
(:func:`pack_optimizer`); a stack of layers ``[(W, b), ...]`` is named ``W<k>`` / ``b<k>``
(:func:`named_pairs`).
"""
from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping

import numpy as np

__all__ = ["atomic_savez", "save_checkpoint", "load_checkpoint", "pack_optimizer", "unpack_optimizer", "pack_params", "unpack_params",
           "named_pairs"]


def _create_temporary(folder):
    """A new, empty temporary file in ``folder``: ``(fd, path)``. Created with mode 0666, so the kernel
    applies the umask as for any file a user writes (mkstemp's files are private, 0600, and a shared
    model would be unreadable to colleagues); O_EXCL makes the name ours alone."""
    while True:
        tmp = os.path.join(folder, f".sparsecoding-{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


def atomic_savez(path, arrays, compress=False):
    """Write the named numpy ``arrays`` to the .npz ``path`` atomically: a temporary file in the same folder,
    flushed to disk, then renamed over ``path`` (a crash leaves the old file or the new one, never half)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = _create_temporary(folder)
    try:
        with os.fdopen(fd, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def save_checkpoint(path, arrays, meta):
    """Write ``arrays`` (name -> numpy array) and JSON-able ``meta`` to ``path`` (.npz) atomically."""
    return atomic_savez(path, {"__meta__": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays})


def load_checkpoint(path):
    """Return ``(arrays, meta)`` from a checkpoint written by :func:`save_checkpoint`."""
    with np.load(os.fspath(path), allow_pickle=False) as z:
        meta = json.loads(bytes(z["__meta__"]).decode())
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
    return arrays, meta


def pack_optimizer(optimizer, arrays):
    """Add the optimiser's buffers to ``arrays`` as ``opt_<buffer>_<key>``; return its JSON-able state.

    ``<key>`` is the parameter's name (see :mod:`sparsecoding.optim`: parameters given as a dict
    ``{name: array}``), or its position when the parameters are unnamed.
    """
    state = optimizer.state_dict()
    keys = list(optimizer.param_dict())
    for buf, values in state["buffers"].items():
        for key, value in zip(keys, values):
            arrays[f"opt_{buf}_{key}"] = value
    state["buffers"] = {buf: len(values) for buf, values in state["buffers"].items()}
    return state


def unpack_optimizer(optimizer, arrays, state):
    """Restore an optimiser from :func:`pack_optimizer`'s ``state`` and the checkpoint ``arrays``.

    The buffers are read under the names they were written with (positions for a state without
    names, as older checkpoints have); a named optimiser then matches them to its parameters by name.
    """
    state = dict(state)
    saved = state.get("names")
    buffers = {}
    for buf, count in state["buffers"].items():
        keys = [f"opt_{buf}_{key}" for key in (saved if saved is not None else range(count))]
        missing = [key for key in keys if key not in arrays]
        if missing:
            raise ValueError(f"the checkpoint lacks the optimiser's arrays {missing}")
        buffers[buf] = [arrays[key] for key in keys]
    state["buffers"] = buffers
    optimizer.load_state_dict(state)


def named_pairs(params):
    """``{"W0": W0, "b0": b0, "W1": ...}``: a stack ``[(W, b), ...]`` as named parameters (the names
    :func:`pack_params` gives it)."""
    return {f"{a}{k}": v for k, pair in enumerate(params) for a, v in zip("Wb", pair)}


def pack_params(params, arrays):
    """Add host copies of the parameters to ``arrays``: a dict ``{name: array}`` under its names,
    ``[(W, b), ...]`` as ``W<k>`` / ``b<k>`` (:func:`named_pairs`). Returns ``arrays``."""
    from .backend import to_numpy  # noqa: PLC0415

    if not isinstance(params, Mapping):
        params = named_pairs(params)
    for name, value in params.items():
        arrays[name] = np.array(to_numpy(value))
    return arrays


def unpack_params(params, arrays):
    """Copy :func:`pack_params`'s arrays back into the parameters (a dict ``{name: array}`` or
    ``[(W, b), ...]``) in place. Every name and shape is checked first: a ValueError naming the
    array changes nothing."""
    from .backend import get_xp  # noqa: PLC0415

    if not isinstance(params, Mapping):
        params = named_pairs(params)
    for name, own in params.items():
        if name not in arrays:
            raise ValueError(f"the state has no {name!r} array")
        if tuple(np.shape(arrays[name])) != tuple(own.shape):
            raise ValueError(f"{name} has shape {tuple(np.shape(arrays[name]))} in the state, "
                             f"the parameter's is {tuple(own.shape)}")
    for name, own in params.items():
        own[...] = get_xp(own).asarray(arrays[name])
