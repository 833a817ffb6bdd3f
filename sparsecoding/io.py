"""Save and load every model as one versioned ``.npz`` file (DESIGN.md §2: ``io.py``).

``save(model, path)`` writes, atomically (a temporary file in the same folder, then
``os.replace``), one ``.npz`` archive holding

* ``__sparsecoding_model__``: a JSON header (UTF-8 bytes as a uint8 array) with the format name
  and version, the model type, its constructor settings, its scalar state (counters, random
  generator states, optimiser step counts) and the name, shape and dtype of every array;
* the arrays (dictionaries, weights, biases, optimiser buffers, fitted attributes), in their own
  dtype (float32 stays float32, float64 stays float64).

``load(path, backend=None, expected=None)`` reads the header, checks it, reads and checks every
array, builds a *new* model from the settings on ``backend`` (None: the default backend) and
fills it; the model is returned only when complete, so a bad file never leaves a half-loaded
model behind. What is wrong with a file is a :class:`ModelFileError` (a ``ValueError``) naming
the file: not a readable archive (truncated, corrupt, random bytes), no header (another
program's ``.npz``, or a training checkpoint), an unknown format version, an unknown model type,
a model of another type than ``expected``, missing or malformed arrays, settings the model
refuses.

Models: the LCA layers (``LCA``, ``LCAConv1D/2D/3D``), the estimators
(``LCASparseCoder``, ``LCADictionaryLearning``, ``ConvLCADictionaryLearning``), ``ConvEBM``,
``MLPEBM``, ``LCACNN``, ``LPLConvNet`` and ``FoldiakNetwork``. Where a model has
``get_state()`` / ``set_state()`` (its checkpoint state) those are used; the LCA layers are read
through their public attributes. Not saved: the backend (``load`` chooses it) and callables
(an LCA layer's ``lr_schedule`` is dropped with a warning; a callable ``transfer_func`` cannot be
saved).
"""
from __future__ import annotations

import importlib
import io as _io
import json
import numbers
import os
import warnings
import zipfile

import numpy as np

__all__ = ["save", "load", "ModelFileError", "FORMAT", "FORMAT_VERSION", "HEADER", "MODEL_TYPES"]

FORMAT = "sparsecoding-model"
FORMAT_VERSION = 1
HEADER = "__sparsecoding_model__"

# model type -> "module:class" (imported when needed: this module stays light)
MODEL_TYPES = {
    "LCA": "sparsecoding.lca.layers:LCA",
    "LCAConv1D": "sparsecoding.lca.layers:LCAConv1D",
    "LCAConv2D": "sparsecoding.lca.layers:LCAConv2D",
    "LCAConv3D": "sparsecoding.lca.layers:LCAConv3D",
    "LCASparseCoder": "sparsecoding.estimators:LCASparseCoder",
    "LCADictionaryLearning": "sparsecoding.estimators:LCADictionaryLearning",
    "ConvLCADictionaryLearning": "sparsecoding.estimators:ConvLCADictionaryLearning",
    "ConvEBM": "sparsecoding.eqprop.network:ConvEBM",
    "MLPEBM": "sparsecoding.eqprop.network:MLPEBM",
    "LCACNN": "sparsecoding.eqprop.lcacnn:LCACNN",
    "LPLConvNet": "sparsecoding.plasticity.lpl_net:LPLConvNet",
    "FoldiakNetwork": "sparsecoding.plasticity.foldiak:FoldiakNetwork",
}


class ModelFileError(ValueError):
    """A model file that cannot be loaded; ``path`` is the file, the message says what is wrong with it."""

    def __init__(self, path, problem):
        self.path, self.problem = os.fspath(path), problem
        super().__init__(f"{self.path}: {problem}")


def _class(name):
    module, _, attr = MODEL_TYPES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def _type_name(model):
    for name in MODEL_TYPES:
        module, _, attr = MODEL_TYPES[name].partition(":")
        if type(model).__name__ == attr and type(model).__module__ == module:
            return name
    raise TypeError(f"save() does not know how to save a {type(model).__module__}.{type(model).__qualname__}; "
                    f"it saves {', '.join(MODEL_TYPES)}")


# --------------------------------------------------------------------------- JSON
def _to_json(value, where):
    """``value`` as JSON-able data (tuples tagged so that they come back as tuples)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)  # inf / nan are written as JSON's Infinity / NaN
    if isinstance(value, np.dtype):
        return {"__dtype__": value.name}
    if isinstance(value, tuple):
        return {"__tuple__": [_to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise TypeError(f"cannot save {where}: its keys must be strings, got {bad[0]!r}")
        return {k: _to_json(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TypeError(f"cannot save {where} = {value!r}: only None, numbers, strings, tuples, lists, dicts and "
                    f"arrays are saved")


def _from_json(value):
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_from_json(v) for v in value["__tuple__"])
        if set(value) == {"__dtype__"}:
            return np.dtype(value["__dtype__"])
        return {k: _from_json(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- what each model saves
def _host(x):
    from .backend import to_numpy  # noqa: PLC0415

    return np.array(to_numpy(x))


def _lca_describe(layer):
    import inspect  # noqa: PLC0415

    settings = {}
    for name, p in inspect.signature(type(layer).__init__).parameters.items():
        if name in ("self", "backend") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if name == "weight_init":  # it only drew the initial weights, which the file holds
            continue
        if not hasattr(layer, name):  # a constructor argument the layer does not keep: its default
            continue
        value = getattr(layer, name)
        if name == "dtype":
            value = np.dtype(value).name
        elif name == "transfer_func" and callable(value):
            raise TypeError(f"cannot save a {type(layer).__name__} whose transfer_func is a callable ({value!r}): "
                            f"only 'soft_threshold' and 'hard_threshold' are saved")
        elif name == "lr_schedule" and value is not None:
            warnings.warn(f"the {type(layer).__name__}'s lr_schedule (a callable) is not saved: set it again after "
                          f"load()", UserWarning, stacklevel=4)
            value = None
        elif name in ("result_dir",) and value is not None:
            value = os.fspath(value)
        elif name == "seed":
            try:
                _to_json(value, "seed")
            except TypeError:
                value = None  # the seed only drew the initial weights, which the file holds
        settings[name] = value
    return settings, {"weights": _host(layer.weights)}, {"forward_pass": int(layer.forward_pass)}


def _lca_build(cls, settings, arrays, state, backend):
    layer = cls(**settings, backend=backend)
    layer.weights = layer.xp.asarray(arrays["weights"])
    layer.forward_pass = int(state.get("forward_pass", 1))
    return layer


def _estimator_describe(est):
    settings, arrays = {}, {}
    for name, value in est.get_params(deep=False).items():
        if name == "backend":
            continue
        if name in est._array_params and value is not None:
            arrays[f"param.{name}"] = np.array(value)
            settings[name] = {"__array__": f"param.{name}"}
        else:
            settings[name] = value
    fitted, state = est.get_state()
    arrays.update({f"fitted.{k}": np.array(v) for k, v in fitted.items()})
    return settings, arrays, state


def _estimator_build(cls, settings, arrays, state, backend):
    params = {k: (arrays[v["__array__"]] if isinstance(v, dict) and "__array__" in v else v)
              for k, v in settings.items()}
    est = cls(**params, backend=backend)
    fitted = {k[len("fitted."):]: v for k, v in arrays.items() if k.startswith("fitted.")}
    return est.set_state(fitted, state)


def _ebm_describe(net):
    arrays, meta = net.get_state()
    if type(net).__name__ == "MLPEBM":
        sizes = [int(net.in_features)] + [int(W.shape[0]) for W, _ in net.params]
        settings = {"sizes": sizes}
    else:
        convs = net.params[:net.n_conv]
        if net.n_conv:
            in_size = int(net.conv_in_shapes[0][0])
            channels = [int(convs[0][0].shape[1])] + [int(W.shape[0]) for W, _ in convs]
        else:  # no conv layer: the first fc layer reads C * in_size^2 = its fan-in inputs
            in_size, channels = 1, [int(net.params[0][0].shape[1])]
        settings = {"in_size": in_size, "channels": channels, "kernels": [int(W.shape[2]) for W, _ in convs],
                    "strides": [int(s) for s in net.strides], "paddings": [int(p) for p in net.paddings],
                    "pools": net.pools, "fc": [int(W.shape[0]) for W, _ in net.params[net.n_conv:]],
                    "layout": net.layout}
    settings.update(activation=net.act_name, softmax=bool(net.softmax), loss=net.loss, dtype=net.dtype.name)
    return settings, arrays, meta


def _lcacnn_describe(model):
    arrays, meta = model.get_state()
    ebm, lca = model.ebm, model.lca
    convs = ebm.params[:ebm.n_conv]
    settings = {
        "in_size": model.in_size, "in_channels": model.in_channels,
        "channels": [int(W.shape[0]) for W, _ in convs], "kernels": [int(W.shape[2]) for W, _ in convs],
        "strides": [int(s) for s in ebm.strides], "paddings": [int(p) for p in ebm.paddings], "pools": ebm.pools,
        "fc": [int(W.shape[0]) for W, _ in ebm.params[ebm.n_conv:]],
        "lca_feats": int(lca.out_neurons), "lca_lambda": lca.lambda_, "lca_tau": lca.tau, "lca_eta": lca.eta,
        "lca_iters": int(lca.lca_iters), "lca_stride": int(lca.stride[0]), "lca_ksize": int(lca.kernel_size[0]),
        "lca_solver": lca.solver, "lca_tol": lca.tol, "dict_training": model.dict_training,
        "scale_feedback": model.scale_feedback, "activation": ebm.act_name, "softmax": bool(ebm.softmax),
        "loss": ebm.loss, "dtype": ebm.dtype.name, "layout": ebm.layout}
    state = {"meta": meta, "lca_forward_pass": int(lca.forward_pass)}
    return settings, arrays, state


def _lcacnn_build(cls, settings, arrays, state, backend):
    dictionary = None if settings["dict_training"] == "learn" else arrays["lca_weights"]
    model = cls(**settings, dictionary=dictionary, backend=backend)
    model.set_state(arrays, state["meta"])
    model.lca.forward_pass = int(state.get("lca_forward_pass", 1))
    return model


def _lpl_describe(net):
    from .ops.elementwise import ACTIVATIONS  # noqa: PLC0415
    from .optim import Adam  # noqa: PLC0415

    arrays, meta = net.get_state()
    activation = next((name for name, (f, _) in ACTIVATIONS.items() if f is net.f), None)
    if activation is None:
        raise TypeError("cannot save an LPLConvNet whose activation is not one of the registered ones")
    W0 = net.params[0][0]
    settings = {"in_channels": int(W0.shape[1]), "channels": [int(W.shape[0]) for W, _ in net.params],
                "pools": net.pools, "activation": activation, "kernel_size": int(net.kernel_size),
                "lambda1": net.lambda1, "lambda2": net.lambda2, "eps": net.eps, "predictive": "pred" in net.terms,
                "mode": net.mode, "lr": float(net.optimizer.base_lr[0]),
                "optimizer": "adam" if isinstance(net.optimizer, Adam) else "sgd",
                "weight_decay": net.weight_decay, "dtype": np.dtype(W0.dtype).name}
    return settings, arrays, meta


def _stateful_build(cls, settings, arrays, state, backend):
    model = cls(**settings, backend=backend)
    model.set_state(arrays, state)
    return model


def _foldiak_describe(net):
    arrays, meta = net.get_state()
    settings = {name: getattr(net, name) for name in ("n_inputs", "n_units", "p", "alpha", "beta", "gamma", "lam",
                                                      "dt", "tol", "max_settle", "check_every", "one_shot")}
    settings["dtype"] = np.dtype(net.Q.dtype).name
    return settings, arrays, meta


_HANDLERS = {
    "LCA": (_lca_describe, _lca_build), "LCAConv1D": (_lca_describe, _lca_build),
    "LCAConv2D": (_lca_describe, _lca_build), "LCAConv3D": (_lca_describe, _lca_build),
    "LCASparseCoder": (_estimator_describe, _estimator_build),
    "LCADictionaryLearning": (_estimator_describe, _estimator_build),
    "ConvLCADictionaryLearning": (_estimator_describe, _estimator_build),
    "ConvEBM": (_ebm_describe, _stateful_build), "MLPEBM": (_ebm_describe, _stateful_build),
    "LCACNN": (_lcacnn_describe, _lcacnn_build),
    "LPLConvNet": (_lpl_describe, _stateful_build),
    "FoldiakNetwork": (_foldiak_describe, _stateful_build),
}


# --------------------------------------------------------------------------- save
def save(model, path, *, compress=False):
    """Write ``model`` to ``path`` (one ``.npz`` file, written atomically); returns the path.

    The path is used as given (no ``.npz`` is appended). ``compress`` deflates the arrays.
    Raises TypeError for a model type :func:`load` cannot rebuild, or settings that cannot be
    saved (a callable ``transfer_func``, a ``random_state`` object).
    """
    from . import __version__  # noqa: PLC0415
    name = _type_name(model)
    describe, _ = _HANDLERS[name]
    settings, arrays, state = describe(model)
    arrays = {k: np.ascontiguousarray(_host(v)) for k, v in arrays.items()}
    for k, v in arrays.items():
        if v.dtype.hasobject:
            raise TypeError(f"cannot save the array {k!r} of dtype object")
    xp = getattr(model, "xp", None)
    backend = getattr(xp, "__name__", None) or getattr(model, "backend", None) or "numpy"
    header = {"format": FORMAT, "version": FORMAT_VERSION, "model": name,
              "settings": _to_json(settings, "the settings"), "state": _to_json(state, "the state"),
              "arrays": {k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in arrays.items()},
              "library_version": __version__, "saved_from_backend": backend}
    blob = np.frombuffer(json.dumps(header, allow_nan=True).encode("utf-8"), dtype=np.uint8)
    bad = [k for k in arrays if k == HEADER]
    if bad:
        raise ValueError(f"array name {HEADER!r} is reserved")
    from .checkpoint import atomic_savez  # noqa: PLC0415

    return atomic_savez(path, {HEADER: blob, **arrays}, compress=compress)


# --------------------------------------------------------------------------- load
def read_header(path):
    """The checked JSON header of a model file (format, version, model type, settings, array list).

    Raises :class:`ModelFileError` for a file that is not a readable model file.
    """
    header, _ = _read(path, arrays=False)
    return header


def _read(path, arrays=True):
    path = os.fspath(path)
    with open(path, "rb") as f:  # FileNotFoundError / PermissionError are what they are
        data = f.read()
    if not data.startswith(b"PK"):
        raise ModelFileError(path, "not a model file: not an .npz (zip) archive"
                             + (" (the file is empty)" if not data else ""))
    try:
        npz = np.load(_io.BytesIO(data), allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise ModelFileError(path, f"not a readable .npz archive (truncated or corrupt: {exc})") from exc
    with npz:
        files = set(npz.files)
        if HEADER not in files:
            kind = ("a training checkpoint (sparsecoding.checkpoint), not a saved model"
                    if "__meta__" in files else f"an .npz file with arrays {sorted(files)[:8]}")
            raise ModelFileError(path, f"not a sparsecoding model file: no {HEADER!r} header; it is {kind}")
        try:
            raw = npz[HEADER]
            header = json.loads(bytes(np.asarray(raw, dtype=np.uint8)).decode("utf-8"))
        except Exception as exc:  # noqa: BLE001  (any failure to read the header: corrupt)
            raise ModelFileError(path, f"the header is unreadable (truncated or corrupt file: {exc})") from exc
        _check_header(path, header)
        if not arrays:
            return header, {}
        listed = header["arrays"]
        missing = sorted(set(listed) - files)
        if missing:
            raise ModelFileError(path, f"missing arrays {missing} (the header lists them)")
        extra = sorted(files - set(listed) - {HEADER})
        if extra:
            raise ModelFileError(path, f"arrays {extra} are not in the header (a foreign or edited file)")
        out = {}
        for key, spec in listed.items():
            try:
                value = npz[key]
            except Exception as exc:  # noqa: BLE001  (bad CRC, truncated member, bad .npy header)
                raise ModelFileError(path, f"array {key!r} is unreadable (truncated or corrupt file: {exc})") from exc
            if list(value.shape) != list(spec.get("shape", [])) or value.dtype.str != spec.get("dtype"):
                raise ModelFileError(path, f"array {key!r} has shape {value.shape} and dtype {value.dtype.str}, the "
                                     f"header says {tuple(spec.get('shape', []))} and {spec.get('dtype')}")
            out[key] = value
    return header, out


def _check_header(path, header):
    if not isinstance(header, dict):
        raise ModelFileError(path, "not a sparsecoding model file (the header is not a JSON object)")
    if header.get("format") != FORMAT:
        raise ModelFileError(path, f"not a sparsecoding model file (format {header.get('format')!r}, "
                             f"expected {FORMAT!r})")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version != FORMAT_VERSION:
        raise ModelFileError(path, f"unknown format version {version!r}: this library (sparsecoding) reads "
                             f"version {FORMAT_VERSION}" + (" (the file is newer: upgrade sparsecoding)"
                                                            if isinstance(version, int) and version > FORMAT_VERSION
                                                            else ""))
    model = header.get("model")
    if model not in MODEL_TYPES:
        raise ModelFileError(path, f"unknown model type {model!r}; known: {', '.join(MODEL_TYPES)}")
    for key, kind in (("settings", dict), ("state", dict), ("arrays", dict)):
        if not isinstance(header.get(key), kind):
            raise ModelFileError(path, f"the header's {key!r} entry is missing or malformed")


def _expected_names(expected):
    items = expected if isinstance(expected, (tuple, list, set, frozenset)) else (expected,)
    names = []
    for e in items:
        name = e if isinstance(e, str) else getattr(e, "__name__", None)
        if name not in MODEL_TYPES:
            raise ValueError(f"expected must name model types among {list(MODEL_TYPES)}, got {e!r}")
        names.append(name)
    return names


def load(path, backend=None, expected=None):
    """Rebuild the model saved in ``path`` on ``backend`` ("numpy", "cupy"; None: the default backend).

    ``expected``: a model class or type name (or a tuple of them): a file holding another model
    type is a :class:`ModelFileError`. Any problem with the file is a :class:`ModelFileError`
    naming it; nothing is returned unless the model was built and filled completely.
    """
    from .backend import namespace  # noqa: PLC0415

    namespace(backend)  # an unknown backend, or cupy without a GPU: the backend's own error, before reading
    names = None if expected is None else _expected_names(expected)
    header, arrays = _read(path)
    model = header["model"]
    if names is not None and model not in names:
        raise ModelFileError(path, f"the file holds a model of type {model}, not {' or '.join(names)}")
    settings, state = _from_json(header["settings"]), _from_json(header["state"])
    _, build = _HANDLERS[model]
    try:
        result = build(_class(model), settings, arrays, state, backend)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ModelFileError(path, f"the saved {model} cannot be rebuilt: {type(exc).__name__}: {exc}") from exc
    return result
