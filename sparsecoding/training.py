"""One learning loop for every model family (DESIGN.md §2, "learning loop").

Per epoch ``e`` the samples are visited in the order
``rng_e.permutation(n)`` with ``rng_e = numpy.random.default_rng([seed, e])``,
in batches of ``batch_size``; the same generator is handed to the step
function for everything random inside the epoch (augmentation, random signs),
so a run is a pure function of ``seed`` and the settings. The loop provides:

* a progress bar (tqdm) over batches, with the running epoch metrics;
* per-epoch records (weighted means of what the step returns, plus what
  ``on_epoch_end`` adds) in a :class:`History`, per-batch records in
  ``History.steps``;
* atomic checkpoints (``checkpoint=`` path; every ``checkpoint_every``
  batches, at the end of every epoch, and when interrupted) holding the
  model's state, the history, the position in the epoch and the state of the
  epoch's random generator, so that a resumed run ends bit-identical to an
  uninterrupted one;
* a check of the settings stored in the checkpoint against the current ones:
  resuming with a changed setting raises :class:`SettingsChanged` naming it,
  unless ``allow_changes=True``;
* Ctrl-C (SIGINT): the current batch finishes, a checkpoint is written and
  :class:`TrainingInterrupted` (a ``KeyboardInterrupt``) carries the history
  to the caller; a second Ctrl-C stops at once;
* a divergence guard: a non-finite metric raises ``FloatingPointError``.

Callbacks are plain callables ``f(record)``, called after each epoch once the
record is stored and checkpointed, or objects with any of these hooks (a plain
callable may have them too; it is then also called as before):

* ``on_epoch_start(epoch)``: before the epoch's first batch (also when resuming inside it);
* ``on_epoch_end(epoch, record) -> dict | None``: after the epoch's last batch, *before* the
  record is stored and the checkpoint written; the returned entries become columns of the
  record, and what the hook changes in the model (e.g. re-seeded dictionary atoms) is in
  the checkpoint, so a resumed run stays exact;
* ``on_fit_end()``: when the loop returns or raises;
* ``get_state() -> (arrays, meta)`` / ``set_state(arrays, meta)``: the callback's own state,
  saved with every checkpoint (arrays named ``callback<i>_<name>``, ``i`` its position in
  ``callbacks``) and restored on resume when the checkpoint holds an entry for position ``i``.

A model takes part through two methods: ``get_state() -> (arrays, meta)``
(host arrays by name, JSON-able values) and ``set_state(arrays, meta)``.
"""
from __future__ import annotations

import csv
import math
import os
import signal
import threading

import numpy as np

from .checkpoint import load_checkpoint, save_checkpoint

__all__ = ["History", "SettingsChanged", "TrainingInterrupted", "check_settings", "fit_loop", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = 1


class History(list):
    """Per-epoch records (dicts, in order); ``steps`` holds the per-batch records."""

    def __init__(self, epochs=(), steps=()):
        super().__init__(epochs)
        self.steps = list(steps)

    def column(self, name):
        """The values of one metric over the epochs."""
        return [r[name] for r in self if name in r]

    def to_csv(self, path, steps=False):
        """Write the epoch records (or the per-batch ones) as CSV; nothing when there are none."""
        rows = self.steps if steps else list(self)
        if not rows:
            return
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)


class SettingsChanged(ValueError):
    """Resuming a checkpoint whose stored settings differ from the current ones."""


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by :func:`fit_loop` after Ctrl-C once the checkpoint (if any) is written."""

    def __init__(self, history, checkpoint=None):
        super().__init__("training interrupted" + (f"; checkpoint written to {checkpoint}" if checkpoint else ""))
        self.history, self.checkpoint = history, checkpoint


def _canonical(value):
    # JSON round trip: tuples become lists, numpy scalars plain numbers
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class _Unset:
    def __repr__(self):
        return "<unset>"


_UNSET = _Unset()


def check_settings(saved, current, allow_changes=False, where="the checkpoint"):
    """Raise :class:`SettingsChanged` naming every setting whose value differs (unless allowed)."""
    saved, current = _canonical(saved or {}), _canonical(current or {})
    changed = [k for k in sorted(set(saved) | set(current)) if saved.get(k, _UNSET) != current.get(k, _UNSET)]
    if changed and not allow_changes:
        what = "; ".join(f"{k}: {saved.get(k, _UNSET)!r} -> {current.get(k, _UNSET)!r}" for k in changed)
        raise SettingsChanged(f"{where} was written with other settings ({what}); use a new folder, "
                              f"or allow the change explicitly")
    return changed


class _SigintFlag:
    """First SIGINT sets a flag (the loop stops after the batch); a second one interrupts at once."""

    def __init__(self):
        self.raised = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def _check_positive_int(value, name, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def fit_loop(model, n_samples, step, *, epochs, batch_size, seed=0, checkpoint=None, checkpoint_every=None,
             settings=None, allow_changes=False, kind=None, on_epoch_start=None, on_epoch_end=None, callbacks=(),
             progress=True, desc="training", drop_last=False, max_steps=None, record_steps=False):
    """Run ``step`` over shuffled batches for ``epochs`` epochs; returns the :class:`History`.

    Parameters
    ----------
    model : object with ``get_state()`` and ``set_state(arrays, meta)`` (for checkpoints)
    n_samples : int, number of training samples
    step : callable ``step(idx, rng, info) -> dict``; ``idx`` the sample indices of the batch
        (int array), ``rng`` the epoch's generator, ``info`` a dict with ``epoch`` (0-based),
        ``batch`` (within the epoch) and ``step`` (global, 0-based). The returned numbers are
        averaged over the epoch, weighted by the batch size.
    epochs, batch_size, seed : the schedule; epoch ``e`` uses ``default_rng([seed, e])``
    checkpoint : optional .npz path; an existing file is resumed (settings checked)
    checkpoint_every : also checkpoint every this many batches (default: once per epoch)
    settings : JSON-able dict stored in the checkpoint and compared on resume
    allow_changes : resume even if ``settings`` differ
    kind : model type name stored in the checkpoint and checked on resume
    on_epoch_start : optional ``f(epoch)`` (e.g. learning-rate schedules)
    on_epoch_end : optional ``f(epoch, record) -> dict`` of extra metrics (e.g. test error)
    callbacks : callables ``f(record)`` called after each epoch, or objects with the hooks
        described in the module notes (``on_epoch_start``, ``on_epoch_end``, ``on_fit_end``,
        ``get_state`` / ``set_state``)
    drop_last : skip a last batch smaller than ``batch_size``
    max_steps : stop after this many batches in total
    record_steps : keep per-batch records in ``History.steps``
    """
    from tqdm.auto import tqdm  # noqa: PLC0415

    n_samples = _check_positive_int(n_samples, "n_samples (the number of training samples)")
    epochs = _check_positive_int(epochs, "epochs")
    batch_size = _check_positive_int(batch_size, "batch_size")
    checkpoint_every = _check_positive_int(checkpoint_every, "checkpoint_every", allow_none=True)
    max_steps = _check_positive_int(max_steps, "max_steps", allow_none=True)
    if drop_last and batch_size > n_samples:
        raise ValueError(f"batch_size ({batch_size}) exceeds the number of samples ({n_samples}) with drop_last")
    per_epoch = n_samples // batch_size if drop_last else -(-n_samples // batch_size)
    total = epochs * per_epoch if max_steps is None else min(max_steps, epochs * per_epoch)
    settings = _canonical(settings or {})
    callbacks = list(callbacks)

    history = History()
    epoch, batch, rng_state, sums = 0, 0, None, {}
    if checkpoint is not None and os.path.exists(checkpoint):
        arrays, meta = load_checkpoint(checkpoint)
        loop = meta.get("loop")
        if loop is None or loop.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{checkpoint} is not a training checkpoint of format {CHECKPOINT_FORMAT} "
                             f"(found {None if loop is None else loop.get('format')!r})")
        if kind is not None and loop.get("kind") != kind:
            raise ValueError(f"{checkpoint} holds a {loop.get('kind')!r} model, not a {kind!r}")
        check_settings(loop.get("settings"), settings, allow_changes, where=str(checkpoint))
        model.set_state(arrays, meta.get("model", {}))
        _restore_callbacks(callbacks, arrays, loop.get("callbacks") or {})
        history = History(loop["history"], loop.get("steps", []))
        epoch, batch, rng_state, sums = loop["epoch"], loop["batch"], loop["rng_state"], loop["sums"]
    done = epoch * per_epoch + batch

    def save(epoch_, batch_, rng_):
        if checkpoint is None:
            return
        arrays, meta = model.get_state()
        loop = {"format": CHECKPOINT_FORMAT, "kind": kind, "settings": settings, "epoch": epoch_, "batch": batch_,
                "rng_state": None if rng_ is None else _canonical(rng_.bit_generator.state), "sums": sums,
                "history": list(history), "steps": history.steps}
        states = _callback_states(callbacks, arrays)
        if states:
            loop["callbacks"] = states
        save_checkpoint(checkpoint, arrays, {"model": meta, "loop": loop})

    bar = tqdm(total=total, initial=min(done, total), disable=not progress, desc=desc)
    try:
        with _SigintFlag() as sigint:
            while done < total:
                rng = np.random.default_rng([seed, epoch])
                perm = rng.permutation(n_samples)
                if rng_state is not None:  # resumed inside an epoch: continue its random stream
                    rng.bit_generator.state = rng_state
                    rng_state = None
                elif batch == 0:
                    sums = {}
                if on_epoch_start is not None:  # also on resuming inside an epoch
                    on_epoch_start(epoch)
                for cb in callbacks:
                    if hasattr(cb, "on_epoch_start"):
                        cb.on_epoch_start(epoch)
                while batch < per_epoch and done < total:
                    idx = perm[batch * batch_size:(batch + 1) * batch_size]
                    metrics = step(idx, rng, {"epoch": epoch, "batch": batch, "step": done}) or {}
                    for k, v in metrics.items():
                        v = float(v)
                        if not math.isfinite(v):
                            raise FloatingPointError(f"{k} is {v} at epoch {epoch + 1}, batch {batch + 1}: "
                                                     f"the run diverged (lower the learning rate)")
                        s = sums.setdefault(k, [0.0, 0])
                        s[0] += v * len(idx)
                        s[1] += len(idx)
                    if record_steps:
                        history.steps.append({"step": done + 1, "epoch": epoch + 1, **{k: float(v) for k, v in
                                                                                      metrics.items()}})
                    batch += 1
                    done += 1
                    bar.update(1)
                    if metrics:
                        bar.set_postfix({k: f"{s[0] / s[1]:.4g}" for k, s in sums.items()}, refresh=False)
                    if sigint.raised:
                        if batch < per_epoch:
                            save(epoch, batch, rng)
                            raise TrainingInterrupted(history, checkpoint)
                        break  # the epoch is complete: record it, then stop
                    if checkpoint_every and done % checkpoint_every == 0 and batch < per_epoch and done < total:
                        save(epoch, batch, rng)
                if batch < per_epoch:  # max_steps reached inside an epoch
                    save(epoch, batch, rng)
                    break
                record = {"epoch": epoch + 1, **{k: s[0] / s[1] for k, s in sums.items()}}
                if on_epoch_end is not None:
                    record.update(on_epoch_end(epoch, record) or {})
                for cb in callbacks:
                    if hasattr(cb, "on_epoch_end"):
                        record.update(cb.on_epoch_end(epoch, record) or {})
                history.append(record)
                epoch, batch, sums = epoch + 1, 0, {}
                save(epoch, 0, None)
                for cb in callbacks:
                    if callable(cb):
                        cb(record)
                if sigint.raised:
                    raise TrainingInterrupted(history, checkpoint)
    finally:
        bar.close()
        for cb in callbacks:
            if hasattr(cb, "on_fit_end"):
                cb.on_fit_end()
    return history


def _callback_states(callbacks, arrays):
    """Add the callbacks' arrays to ``arrays`` (``callback<i>_<name>``); return their metas by position."""
    states = {}
    for i, cb in enumerate(callbacks):
        if hasattr(cb, "get_state"):
            cb_arrays, cb_meta = cb.get_state()
            for name, value in cb_arrays.items():
                arrays[f"callback{i}_{name}"] = np.asarray(value)
            states[str(i)] = {"names": list(cb_arrays), "meta": _canonical(cb_meta)}
    return states


def _restore_callbacks(callbacks, arrays, states):
    for i, cb in enumerate(callbacks):
        entry = states.get(str(i))
        if entry is not None and hasattr(cb, "set_state"):
            cb.set_state({name: arrays[f"callback{i}_{name}"] for name in entry["names"]}, entry["meta"])
