"""Scale out with Dask: chunked encoding and data-parallel dictionary learning (optional extra ``distributed``).

Dask schedules the work; nothing here is a scheduler of its own.

Encoding. ``encode(layer, x)`` codes a ``dask.array`` of inputs ``x (N, ...)`` chunked
along the samples only, chunk by chunk (``map_blocks``). The layer (its settings and
dictionary, a few hundred kB) enters the task graph once, as one key every chunk task
depends on, so each worker receives it once however many chunks it codes; a chunk task
receives its inputs and returns its codes. Codes are lazy: ``.compute()``,
``.persist()`` or further dask operations on them. With ``metrics=True`` the per-chunk
sums of the energy ``1/2||s - Phi^T a||^2 + lambda||a||_1`` and of the active units are
reduced across chunks into two lazy scalars, the energy per sample and the fraction
active. The chunk task standardises its inputs (``layer.preprocess``) unless
``preprocessed=True``.

Data-parallel dictionary learning. ``fit(layer, X, client=client, ...)`` runs the
library's learning loop (:func:`sparsecoding.training.fit_loop`: seeded batch order,
atomic checkpoints, exact resume, settings check) and, at every step, splits the batch
into one shard per worker. A worker codes its shard with the current dictionary and
returns the shard's sums: the dictionary-update sum ``sum a_k patch(s - Phi^T a)``, the
per-atom activity counts and the energy terms. The driver adds the shards' sums and
applies lca-pytorch's rule once (``layer.apply_update_sums``, what ``update_weights`` runs),
which equals the single-process step on the same batch up to the order of the float
summation (the code of each sample does not depend on the other samples when ``tol``
is None; with ``tol`` the stopping step is decided per shard). Per step the network
carries the dictionary to every worker (``K C k^2`` floats), the batch indices, and back
one update-sized array and a few scalars per worker; the data ``X`` is scattered to the
workers once.

Faults. Dask reruns the tasks a lost worker held, so a worker killed mid-encode costs
only those tasks; the learning loop checkpoints after every epoch (and every
``checkpoint_every`` steps) and resumes exactly.
"""
from __future__ import annotations

import numpy as np

from .backend import to_numpy

__all__ = ["encode", "fit", "chunk_statistics"]


def _dask():
    try:
        import dask.array as da  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - the extra is installed in the test environment
        raise ImportError("sparsecoding.distributed needs Dask: pip install 'sparsecoding[distributed]'") from exc
    return da


def _code_shape(layer, sample_shape):
    """Per-sample code shape of ``layer`` for inputs of per-sample shape ``sample_shape``."""
    empty = layer.solve(layer.xp.zeros((0, *sample_shape), dtype=layer.dtype))["acts"]
    return tuple(empty.shape[1:])


def _encode_chunk(x, layer, preprocessed, what):
    s = layer.xp.asarray(x, dtype=layer.dtype)
    if not preprocessed:
        s = layer.preprocess(s)
    out = layer.solve(s)
    if what == "codes":
        return to_numpy(out["acts"]) if isinstance(x, np.ndarray) else out["acts"]
    acts, err = out["acts"], out["recon_errors"]
    xp = layer.xp
    energy = 0.5 * xp.sum(err * err) + layer.lambda_ * xp.sum(xp.abs(acts))
    stats = np.array([float(energy), float(xp.sum(acts != 0)), float(acts.size), float(s.shape[0])])
    return stats.reshape((1,) * (x.ndim - 1) + (4,))


def encode(layer, x, *, preprocessed=False, metrics=False):
    """Lazy LCA codes of the dask array ``x`` (N, ...) with ``layer`` (any LCA layer: dense or convolutional).

    Parameters
    ----------
    layer : LCA, LCAConv1D/2D/3D (its dictionary and settings are sent to each worker once)
    x : dask.array (N, *sample_shape), chunked along axis 0 only (a numpy array is wrapped in one chunk)
    preprocessed : the chunks are already standardised (skip ``layer.preprocess``)
    metrics : also return ``{"energy_per_sample", "frac_active"}``, lazy scalars reduced over the chunks

    Returns
    -------
    codes : dask.array (N, *code_shape), one chunk per input chunk (and the metrics dict with ``metrics``)
    """
    da = _dask()
    if not isinstance(x, da.Array):
        x = da.from_array(np.asarray(x), chunks=(max(1, len(x)),) + tuple(np.shape(x)[1:]))
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, ...) with the samples first, got shape {x.shape}")
    if any(len(c) != 1 for c in x.chunks[1:]):
        raise ValueError(f"x must be chunked along the samples (axis 0) only, got chunks {x.chunks}")
    code_shape = _code_shape(layer, x.shape[1:])  # as many dims as a sample: (K,) dense, (K, *O) conv
    shared = _shared(layer)
    extra = x.ndim - 1
    codes = da.map_blocks(_encode_chunk, x, shared, preprocessed, "codes", dtype=layer.dtype,
                          chunks=(x.chunks[0], *[(c,) for c in code_shape]),
                          meta=np.empty((0,) * x.ndim, dtype=layer.dtype))
    if not metrics:
        return codes
    stats = da.map_blocks(_encode_chunk, x, shared, preprocessed, "stats", dtype=np.float64,
                          chunks=(tuple(1 for _ in x.chunks[0]),) + ((1,),) * (extra - 1) + ((4,),),
                          meta=np.empty((0,) * x.ndim, dtype=np.float64))
    total = stats.reshape(-1, 4).sum(axis=0)
    return codes, {"energy_per_sample": total[0] / total[3], "frac_active": total[1] / total[2]}


def _shared(layer):
    """The layer as one graph key every chunk task depends on (sent to each worker once)."""
    from dask import delayed  # noqa: PLC0415

    return delayed(layer, pure=True, traverse=False)


def chunk_statistics(layer, s):
    """What a worker returns for its shard ``s`` (standardised inputs) at the current dictionary: a dict
    of the update sum ``sum a_k patch(s - Phi^T a)``, the per-atom activity counts, the energy terms
    (sums over the shard) and the shard size. Summed over shards, these give the batch's step."""
    xp = layer.xp
    out = layer.solve(s)
    acts, err = out["acts"], out["recon_errors"]
    axes = (0,) + tuple(range(2, acts.ndim))
    return {"update": to_numpy(layer.compute_weight_update(acts, err)),
            "times_active": to_numpy(xp.sum((acts != 0).astype(layer.dtype), axis=axes)),
            "l2": float(0.5 * xp.sum(err * err)), "l1": float(layer.lambda_ * xp.sum(xp.abs(acts))),
            "active": float(xp.sum(acts != 0)), "size": float(acts.size), "n": int(s.shape[0]),
            "n_iter": int(out["n_iter"])}


def _shard_task(layer, X, idx):
    s = layer.preprocess(layer.xp.asarray(X[idx]))
    return chunk_statistics(layer, s)


def fit(layer, X, *, client, epochs=1, batch_size=128, seed=0, callbacks=(), checkpoint=None,
        checkpoint_every=None, allow_changes=False, settings=None, n_shards=None, progress=False, max_steps=None,
        record_steps=False):
    """Data-parallel dictionary learning of ``layer`` on ``X`` (N, ...) with the Dask ``client``.

    The learning loop of :meth:`LCA.fit <sparsecoding.lca.LCA.fit>` (same keywords, same per-epoch
    :class:`~sparsecoding.training.History` with ``energy``, ``L1``, ``L2``, ``frac_active``, and the same
    checkpoint format), with each batch split into ``n_shards`` shards (default: one per worker)
    coded on the workers; the built-in rule only (no optimiser, no lambda schedule).
    """
    from .lca.learning import _Learner  # noqa: PLC0415
    from .training import fit_loop  # noqa: PLC0415

    X = np.asarray(to_numpy(X))
    if X.ndim < 2 or X.shape[0] < 1:
        raise ValueError(f"X must hold at least one sample, got shape {X.shape}")
    n = X.shape[0]
    workers = len(client.scheduler_info()["workers"])
    n_shards = max(1, workers) if n_shards is None else int(n_shards)
    if n_shards < 1:
        raise ValueError(f"n_shards must be an integer >= 1, got {n_shards}")
    X_remote = client.scatter(X, broadcast=True, hash=False)  # a key of its own: no clash with other runs
    own = {"batch_size": batch_size, "n_samples": n, "sample_shape": list(X.shape[1:]), "seed": seed,
           "optimizer": None, "layer": type(layer).__name__, "weights_shape": list(layer.weights.shape),
           "lambda_": layer.lambda_, "eta": layer.eta, "solver": layer.solver, "lca_iters": layer.lca_iters,
           "tol": layer.tol, "nonneg": layer.nonneg}

    def step(idx, rng, info):
        shards = [s for s in np.array_split(np.asarray(idx), n_shards) if len(s)]
        # the current dictionary, once per worker; a fresh key per step (a content hash of the layer object
        # would not see its new weights)
        layer_remote = client.scatter(layer, broadcast=True, hash=False)
        parts = client.gather(client.map(_shard_task, [layer_remote] * len(shards), [X_remote] * len(shards),
                                         shards, pure=False))
        m = sum(p["n"] for p in parts)
        l1, l2 = sum(p["l1"] for p in parts) / m, sum(p["l2"] for p in parts) / m
        record = {"energy": l1 + l2, "L1": l1, "L2": l2,
                  "frac_active": sum(p["active"] for p in parts) / sum(p["size"] for p in parts),
                  "lambda_": layer.lambda_, "lca_iters_run": max(p["n_iter"] for p in parts)}
        if not np.isfinite(record["energy"]):
            raise FloatingPointError(f"dictionary learning diverged at step {info['step'] + 1}: "
                                     f"energy {record['energy']}")
        layer.forward_pass += 1  # as the single-process step: counted before the update
        layer.apply_update_sums(sum(p["update"] for p in parts), sum(p["times_active"] for p in parts))
        return record

    history = fit_loop(_Learner(layer, None, keep_hyper=allow_changes), n, step, epochs=epochs,
                       batch_size=min(batch_size, n), seed=seed, checkpoint=checkpoint,
                       checkpoint_every=checkpoint_every, settings=own | dict(settings or {}),
                       allow_changes=allow_changes, kind=f"lca.{type(layer).__name__}", callbacks=callbacks,
                       progress=progress, desc="distributed dictionary learning", drop_last=True,
                       max_steps=max_steps, record_steps=record_steps)
    layer.history_ = history
    return history
