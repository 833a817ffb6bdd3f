"""``sparsecoding lca encode``: the sparse codes of an array of data under a learned model.

For every sample ``x`` (a row ``(D,)`` for dense models, an image ``(C, *spatial)`` for
convolutional ones) the codes solve the LASSO of the model

    a = argmin_a  1/2 ||s - Phi^T a||^2 + lambda ||a||_1      (a >= 0 for non-negative models)

with ``s = x`` or, when the model standardises its inputs (the LCA layers do by default:
``input_zero_mean``, ``input_unit_var``), ``s = (x - mean(x)) / (std(x, ddof=1) + 1e-12)``
per sample, exactly as the model's own ``preprocess``. The estimators of
:mod:`sparsecoding.estimators` code their inputs as given. Nothing else is applied (the
whitening of ``sparsecoding lca``'s photographs, for example, is the caller's to apply).

``--model`` is one of

* a model file written by ``sparsecoding.save``: an LCA layer (``LCA``, ``LCAConv1D/2D/3D``) or
  an estimator (``LCASparseCoder``, ``LCADictionaryLearning``, ``ConvLCADictionaryLearning``);
* the ``dictionary.npy`` of ``sparsecoding lca learn`` (its ``dictionary.json`` beside it
  holds the layer's settings), or its ``--save-dir`` folder;
* the run folder of ``sparsecoding lca`` (``weights.npy`` and ``args.json``);
* a folder holding ``model.npz`` (a file written by ``sparsecoding.save``).

``--input`` is a ``.npy`` array (or an array of an ``.npz``, ``--key``): ``(N, D)`` for dense
models, channels-first ``(N, C, *spatial)`` for convolutional ones; integer data is converted
to the model's dtype. The solver settings (``--lambda``, ``--solver``, ``--lca-iters``,
``--tol``) default to the model's own. ``--out`` (an ``.npz``, written atomically) holds

* ``codes``: ``(N, K)`` dense, ``(N, K, *code_spatial)`` convolutional, the model's dtype;
* ``energy``: per sample, ``1/2 ||s - Phi^T a||^2 + lambda ||a||_1``;
* ``n_iter`` and ``converged``: per batch; ``lambda_``: the lambda used;
* with ``--save-recons``: ``recons``, the reconstructions in the units of the input
  (``offset + scale * Phi^T a``), and, when the model standardises, ``offset`` and ``scale``
  per sample (``(recons - offset) / scale`` is ``Phi^T a``, the reconstruction of ``s``).

One line sums the run up: samples, fraction of active units, mean energy, iterations, file.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from ..cliutil import (CLIError, HelpFormatter, device_backend, nonnegative_float, one_line_errors, positive_int,
                       writable_dir)

__all__ = ["register", "run", "load_model", "ENCODABLE"]

ENCODABLE = ("LCA", "LCAConv1D", "LCAConv2D", "LCAConv3D", "LCASparseCoder", "LCADictionaryLearning",
             "ConvLCADictionaryLearning")
_LAYERS = ENCODABLE[:4]
_CHECK_CHUNK = 4096  # samples per finiteness check: bounded memory on memory-mapped inputs


class _Model:
    """What ``run`` codes with: a way to get an LCA layer for a batch dtype, and a description."""

    def __init__(self, name, source, layer=None, estimator=None):
        self.name, self.source, self.layer, self.estimator = name, source, layer, estimator

    def configure(self, args):
        """Apply the command's solver options (None: keep the model's); the model's own checks apply."""
        est = self.estimator
        if est is not None:
            names = {"lambda_": "lambda_", "solver": "solver", "lca_iters": "transform_max_iter",
                     "tol": "transform_tol"}
            est.set_params(**{p: getattr(args, a) for a, p in names.items() if getattr(args, a) is not None})
            est._encode_settings()  # checked now, named as the estimator names them
            return
        for attr in ("lambda_", "solver", "lca_iters", "tol"):
            value = getattr(args, attr)
            if value is not None:
                setattr(self.layer, attr, value)

    def spatial_dims(self):
        """None for dense models, else the number of spatial axes of the inputs."""
        if self.layer is not None:
            return self.layer._spatial_dims
        if self.name == "ConvLCADictionaryLearning":
            return self.estimator.n_spatial_dims_
        return None

    def channels(self):
        """Input width (dense) or channels (conv)."""
        if self.layer is not None:
            return self.layer.in_neurons
        est = self.estimator
        if self.name == "ConvLCADictionaryLearning":
            return est.n_channels_
        if self.name == "LCASparseCoder":
            return np.shape(est.dictionary)[1]
        return est.n_features_in_

    def dtype(self, data_dtype):
        if self.layer is not None:
            return self.layer.dtype
        from ..estimators import _dtype_param  # noqa: PLC0415

        fixed = _dtype_param(self.estimator.dtype)
        if fixed is not None:
            return fixed
        return np.dtype(data_dtype) if np.dtype(data_dtype) in (np.float32, np.float64) else np.dtype(np.float64)

    def layer_for(self, dtype, in_shape):
        """The LCA layer that codes batches of ``dtype`` and spatial shape ``in_shape``."""
        if self.layer is not None:
            return self.layer
        est = self.estimator
        if self.name == "LCASparseCoder":
            from . import LCA  # noqa: PLC0415

            D = est._dictionary()
            layer = est._layer(LCA, D.shape, dtype, weights=D.astype(dtype), seed=0)
        else:
            layer = est._make_layer(est.components_.astype(dtype), dtype, 0.0)
        est._set_tau(layer, in_shape)  # tau=None: the stable step 1/max(L, 1), as transform sets it
        return layer

    def standardises(self):
        return self.layer is not None and (self.layer.input_zero_mean or self.layer.input_unit_var)

    def describe(self, layer):
        w = layer.weights
        geometry = ""
        if layer._spatial_dims is not None:
            geometry = f", stride {'x'.join(map(str, layer.stride))}, {layer.pad}"
        how = ("standardised per sample" if self.standardises() else "as given")
        return (f"{self.name} ({w.shape[0]} atoms of {'x'.join(map(str, w.shape[1:]))}{geometry}; "
                f"{layer.solver}, lambda {layer.lambda_:g}; inputs {how})")


def _json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise CLIError(f"--model: cannot read {path} ({exc})") from None


def _from_learn_dictionary(path, backend):
    """The ``LCAConv2D`` of ``sparsecoding lca learn``: ``dictionary.npy`` with ``dictionary.json`` beside it."""
    from . import LCAConv2D  # noqa: PLC0415

    meta_path = os.path.join(os.path.dirname(os.path.abspath(path)), "dictionary.json")
    if not os.path.exists(meta_path):
        raise CLIError(f"--model {path}: a dictionary .npy needs the dictionary.json that sparsecoding lca learn "
                       f"writes beside it (the stride, lambda and preprocessing); none in {os.path.dirname(meta_path)}")
    meta = _json(meta_path)
    weights = np.load(path, allow_pickle=False)
    if weights.ndim != 4 or list(weights.shape) != list(meta.get("shape", weights.shape)):
        raise CLIError(f"--model {path}: shape {weights.shape} does not match {meta_path} "
                       f"(shape {meta.get('shape')}); the two files belong to different runs")
    layer = LCAConv2D(weights.shape[0], weights.shape[1], kernel_size=weights.shape[2], stride=meta["lca_stride"],
                      lambda_=meta["lca_lambda"], tau=meta.get("lca_tau", 100.0), eta=meta.get("lca_eta", 0.01),
                      lca_iters=meta.get("lca_iters", 600), solver=meta.get("lca_solver", "lca"),
                      tol=meta.get("lca_tol"), pad=meta.get("pad", "same"), nonneg=meta.get("nonneg", True),
                      input_zero_mean=meta.get("input_zero_mean", True),
                      input_unit_var=meta.get("input_unit_var", True),
                      dtype=weights.dtype, backend=backend)
    layer.weights = layer.xp.asarray(weights)
    return _Model("LCAConv2D", f"{path} (sparsecoding lca learn)", layer=layer)


def _from_lca_run(folder, backend):
    """The layer of a ``sparsecoding lca`` run folder: ``weights.npy`` and the options in ``args.json``."""
    from . import LCA, LCAConv2D  # noqa: PLC0415

    args = _json(os.path.join(folder, "args.json"))
    weights = np.load(os.path.join(folder, "weights.npy"), allow_pickle=False)
    common = dict(lambda_=args["lambda_"], eta=args.get("eta", 0.1), lca_iters=args.get("lca_iters", 60),
                  tol=args.get("tol"), solver=args.get("solver", "fista"), tau=args.get("tau", 100),
                  nonneg=not args.get("signed", False), dtype=weights.dtype, backend=backend)
    if weights.ndim == 4:
        layer = LCAConv2D(weights.shape[0], weights.shape[1], kernel_size=weights.shape[2],
                          stride=args.get("stride", 1), **common)
        name = "LCAConv2D"
    elif weights.ndim == 2:
        layer, name = LCA(weights.shape[0], weights.shape[1], **common), "LCA"
    else:
        raise CLIError(f"--model {folder}: weights.npy has shape {weights.shape}, not a dictionary")
    layer.weights = layer.xp.asarray(weights)
    return _Model(name, f"{folder} (sparsecoding lca run)", layer=layer)


def _from_model_file(path, backend):
    from ..io import ModelFileError, load, read_header  # noqa: PLC0415

    try:
        model = read_header(path)["model"]
    except ModelFileError as exc:
        hint = (" (give its run folder as --model)" if "training checkpoint" in exc.problem else "")
        raise CLIError(f"--model {exc}{hint}") from None
    if model not in ENCODABLE:
        raise CLIError(f"--model {path} holds a {model}; lca encode codes with {', '.join(ENCODABLE)}")
    obj = load(path, backend=backend, expected=ENCODABLE)
    if model in _LAYERS:
        return _Model(model, path, layer=obj)
    if model != "LCASparseCoder" and not hasattr(obj, "components_"):
        raise CLIError(f"--model {path}: the {model} was saved before fit (it has no dictionary yet)")
    return _Model(model, path, estimator=obj)


def load_model(path, backend="numpy"):
    """The model of ``--model`` (see the module notes) as an object ``run`` codes with."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CLIError(f"--model {path}: no such file or folder")
    if os.path.isdir(path):
        has = lambda name: os.path.isfile(os.path.join(path, name))  # noqa: E731
        if has("model.npz"):
            return _from_model_file(os.path.join(path, "model.npz"), backend)
        if has("dictionary.npy"):
            return _from_learn_dictionary(os.path.join(path, "dictionary.npy"), backend)
        if has("weights.npy") and has("args.json"):
            return _from_lca_run(path, backend)
        raise CLIError(f"--model {path}: the folder holds no model (model.npz from sparsecoding.save, "
                       f"dictionary.npy + dictionary.json from sparsecoding lca learn, or weights.npy + args.json "
                       f"from sparsecoding lca)")
    if path.endswith(".npy"):
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.basename(path) == "weights.npy" and os.path.isfile(os.path.join(folder, "args.json")):
            return _from_lca_run(folder, backend)
        return _from_learn_dictionary(path, backend)
    return _from_model_file(path, backend)


def _load_input(path, key):
    if not os.path.isfile(path):
        raise CLIError(f"--input {path}: no such file")
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                names = list(z.files)
                if key is None:
                    if len(names) != 1:
                        raise CLIError(f"--input {path} holds arrays {names}: choose one with --key")
                    key = names[0]
                if key not in names:
                    raise CLIError(f"--key {key!r}: {path} holds arrays {names}")
                return z[key], f"{path}[{key}]"
        if key is not None:
            raise CLIError(f"--key is for .npz inputs; {path} is not one")
        return np.load(path, mmap_mode="r", allow_pickle=False), path
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, CLIError):
            raise
        raise CLIError(f"--input {path}: not a readable .npy / .npz array ({exc})") from None


def _check_input(X, where, model):
    kind = X.dtype.kind
    if kind not in "biuf":
        raise CLIError(f"--input {where}: dtype {X.dtype} is not real numbers")
    d, C = model.spatial_dims(), model.channels()
    if d is None:
        if X.ndim != 2 or X.shape[1] != C:
            raise CLIError(f"--input {where}: shape {X.shape}; the {model.name} codes rows (N, {C})")
    elif X.ndim != d + 2 or X.shape[1] != C:
        spatial = ", ".join("LHW"[-d:] if d < 3 else "DHW")
        raise CLIError(f"--input {where}: shape {X.shape}; the {model.name} codes channels-first arrays "
                       f"(N, {C}, {spatial}) with {C} channel(s)")
    if X.shape[0] == 0:
        raise CLIError(f"--input {where}: no samples")
    if kind == "f":
        for start in range(0, X.shape[0], _CHECK_CHUNK):
            bad = ~np.isfinite(np.asarray(X[start:start + _CHECK_CHUNK])).reshape(
                min(_CHECK_CHUNK, X.shape[0] - start), -1).all(axis=1)
            if bad.any():
                raise CLIError(f"--input {where}: sample {start + int(np.argmax(bad))} has NaN or Inf values")


def _offset_scale(x, layer):
    """Per-sample ``(offset, scale)`` with ``preprocess(x) = (x - offset) / scale`` (the layer's formula)."""
    xp = layer.xp
    axes = tuple(range(1, x.ndim))
    n = x.shape[0]
    offset = x.mean(axis=axes) if layer.input_zero_mean else xp.zeros(n, dtype=x.dtype)
    scale = xp.ones(n, dtype=x.dtype)
    if layer.input_unit_var:
        centred = x - offset.reshape((n,) + (1,) * (x.ndim - 1))
        scale = centred.std(axis=axes, ddof=1) + 1e-12
    return offset, scale


def run(args):
    from ..backend import to_numpy  # noqa: PLC0415
    from ..checkpoint import atomic_savez  # noqa: PLC0415

    backend = device_backend(args.device)
    model = load_model(args.model, backend)
    model.configure(args)
    X, where = _load_input(args.input, args.key)
    _check_input(X, where, model)
    out_path = args.out if args.out is not None else \
        os.path.splitext(os.path.basename(args.input))[0] + "_codes.npz"
    if os.path.isdir(out_path):
        raise CLIError(f"--out {out_path}: a folder; give the .npz file to write")
    writable_dir(os.path.dirname(os.path.abspath(out_path)), "--out")  # before the work, not after it
    dtype = model.dtype(X.dtype)
    layer = model.layer_for(dtype, tuple(X.shape[2:]) if X.ndim > 2 else None)
    xp, n = layer.xp, X.shape[0]
    codes = energy = recons = offsets = scales = None
    n_iter, converged = [], []
    t0 = time.perf_counter()
    for start in range(0, n, args.batch_size):
        x = xp.asarray(np.asarray(X[start:start + args.batch_size], dtype=dtype))
        s = layer.preprocess(x)
        res = layer.solve(s)
        a = res["acts"]
        e = layer.energy(s, a)
        if codes is None:
            codes = np.empty((n, *a.shape[1:]), dtype=dtype)
            energy = np.empty(n, dtype=dtype)
            if args.save_recons:
                recons = np.empty(X.shape, dtype=dtype)
                offsets, scales = np.empty(n, dtype=dtype), np.empty(n, dtype=dtype)
        stop = start + x.shape[0]
        codes[start:stop], energy[start:stop] = to_numpy(a), to_numpy(e)
        if args.save_recons:
            r = layer.compute_recon(a, in_shape=tuple(x.shape[2:]) if x.ndim > 2 else None)
            off, sc = _offset_scale(x, layer)
            shape = (-1,) + (1,) * (x.ndim - 1)
            recons[start:stop] = to_numpy(off.reshape(shape) + sc.reshape(shape) * r)
            offsets[start:stop], scales[start:stop] = to_numpy(off), to_numpy(sc)
        n_iter.append(int(res["n_iter"]))
        converged.append(bool(res["converged"]))
    elapsed = time.perf_counter() - t0
    arrays = {"codes": codes, "energy": energy, "n_iter": np.asarray(n_iter), "converged": np.asarray(converged),
              "lambda_": np.asarray(layer.lambda_)}
    if args.save_recons:
        arrays["recons"] = recons
        if model.standardises():
            arrays.update(offset=offsets, scale=scales)
    atomic_savez(out_path, arrays)
    batches = len(n_iter)
    stopped = (f", {sum(converged)} of {batches} batch(es) reached --tol {layer.tol:g}" if layer.tol is not None
               else "")
    print(f"{n} samples coded with {model.describe(layer)} in {elapsed:.1f} s: fraction active "
          f"{float(np.mean(codes != 0)):.4g}, mean energy {float(np.mean(energy, dtype=np.float64)):.6g} per sample, "
          f"iterations {max(n_iter)} (most in a batch of {min(args.batch_size, n)}){stopped}; codes "
          f"{'x'.join(map(str, codes.shape))} {codes.dtype}{' and recons' if args.save_recons else ''} in {out_path}")
    return 0


def register(sub):
    """Add ``encode`` to the subparsers of ``sparsecoding lca``."""
    p = sub.add_parser("encode", formatter_class=HelpFormatter, description=__doc__,
                       help="code data with a learned model (sparsecoding lca encode --help)")
    one_line_errors(p)
    a = p.add_argument
    a("--model", required=True, metavar="PATH",
      help="model file (sparsecoding.save: LCA layer or estimator), a dictionary.npy of sparsecoding lca learn, or "
      "the run folder of sparsecoding lca / lca learn (default: none, required)")
    a("--input", required=True, metavar="PATH",
      help="data: .npy (or .npz with --key), (N, D) for dense models, (N, C, *spatial) for convolutional ones "
      "(default: none, required)")
    a("--key", default=None, help="the array of an .npz --input (default: its only array)")
    a("--out", default=None, metavar="PATH",
      help="the .npz to write (atomically) (default: the input's name with _codes.npz, in the current folder)")
    a("--save-recons", action="store_true", help="also write the reconstructions, in the input's units")
    a("--lambda", "--lambda_", dest="lambda_", type=nonnegative_float, default=None, metavar="LAMBDA",
      help="sparsity penalty lambda (default: the model's)")
    a("--solver", choices=["lca", "fista", "cd"], default=None,
      help="lca: the LCA dynamics (the model's tau); fista: the same codes in fewer iterations; cd: coordinate "
           "descent (dense: the exact LASSO path; conv: locally greedy) (default: the model's)")
    a("--lca-iters", "--lca_iters", "--max-iter", dest="lca_iters", type=positive_int, default=None, metavar="N",
      help="most solver iterations per batch (default: the model's)")
    a("--tol", type=nonnegative_float, default=None,
      help="stop a batch's solve at this relative duality gap; 0 runs every iteration (default: the model's)")
    a("--batch-size", type=positive_int, default=256, help="samples coded together")
    a("--device", default="cpu", help="cpu, gpu or a GPU index")
    p.set_defaults(func=run, command="lca encode")
    return p
