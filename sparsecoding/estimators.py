"""scikit-learn-compatible estimators on the LCA layers (DESIGN.md §2: ``estimators.py``).

Three transformers, usable in a scikit-learn ``Pipeline`` and ``GridSearchCV``:

* :class:`LCASparseCoder` codes data against a fixed dictionary (scikit-learn's ``SparseCoder``
  with the LCA / FISTA encoders): ``fit`` only validates, ``transform`` solves, per sample,
  ``min_a 1/2 ||x - D^T a||^2 + lambda_ ||a||_1`` (``a >= 0`` with ``nonneg``).
* :class:`LCADictionaryLearning` learns the dictionary (rows of ``components_``, unit norm) by
  mini-batch sparse coding with lca-pytorch's dictionary rule (:meth:`sparsecoding.lca.LCA.fit`,
  the library's learning loop); ``partial_fit`` takes one step on one mini-batch.
* :class:`ConvLCADictionaryLearning` is the convolutional counterpart for image arrays
  ``(N, C, H, W)`` (and 1-D / 3-D signals, ``(N, C, L)`` / ``(N, C, D, H, W)``), on
  :class:`~sparsecoding.lca.LCAConv2D` and its siblings.

scikit-learn's conventions: keyword parameters stored unchanged by ``__init__`` and checked in
``fit`` / ``transform`` (a ``ValueError`` or ``TypeError`` naming the parameter), fitted
attributes with a trailing underscore, ``get_params`` / ``set_params``, ``n_features_in_``,
``NotFittedError`` before ``fit``, float32 input kept float32 (everything else becomes
float64, unless ``dtype`` says otherwise). scikit-learn itself is optional: nothing here
imports it (``__sklearn_tags__`` does, when scikit-learn asks for the tags).

Encoder budget. ``transform_max_iter`` and ``transform_tol`` bound every encode (in
``transform`` and in each learning step). ``transform_tol`` is the relative duality gap of
the *batch* (:func:`sparsecoding.solvers.lasso.duality_gap`): the batch's total energy is
certified within ``transform_tol`` of the optimum, so with a tolerance the code of a sample
may differ, within that certificate, with the batch it is encoded in; ``transform_tol=None``
runs exactly ``transform_max_iter`` iterations and makes every row independent of the others.
(The names follow scikit-learn's ``SparseCoder``: to scikit-learn, ``max_iter`` counts the
passes of ``fit`` and ``n_iter_`` reports them.)
"""
from __future__ import annotations

import inspect
import numbers
import sys

import numpy as np

__all__ = ["LCASparseCoder", "LCADictionaryLearning", "ConvLCADictionaryLearning", "NotFittedError"]

_SOLVERS = ("fista", "lca", "cd")


def _store_params(estimator, params):
    """scikit-learn's convention: every constructor argument stored unchanged under its own name."""
    for name, value in params.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)


class NotFittedError(ValueError, AttributeError):
    """An estimator used before ``fit`` (a ValueError and an AttributeError, as scikit-learn's)."""


_BOTH = []


def _not_fitted(est):
    """The error for an estimator used before ``fit``: :class:`NotFittedError`, and also scikit-learn's
    ``NotFittedError`` once scikit-learn is loaded (so that either ``except`` catches it)."""
    msg = (f"This {type(est).__name__} instance is not fitted yet. Call 'fit' with appropriate arguments "
           f"before using this estimator.")
    sk = sys.modules.get("sklearn.exceptions")
    if sk is None:
        return NotFittedError(msg)
    if not _BOTH:
        _BOTH.append(type("NotFittedError", (NotFittedError, sk.NotFittedError), {"__module__": __name__}))
    return _BOTH[0](msg)


# --------------------------------------------------------------------------- checks
def _number(name, value, minimum=0.0, *, strict=False, allow_none=False, integer=False):
    """A parameter checked: a real number >= minimum (> with strict), an integer with ``integer``."""
    if value is None and allow_none:
        return None
    kind = "an integer" if integer else "a finite number"
    bound = f"{'>' if strict else '>='} {minimum:g}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {kind} {bound}{' or None' if allow_none else ''}, got {value!r}")
    v = float(value)
    bad = not np.isfinite(v) or v < minimum or (strict and v == minimum)
    if integer:
        bad = bad or not v.is_integer()
    if bad:
        raise ValueError(f"{name} must be {kind} {bound}{' or None' if allow_none else ''}, got {value!r}")
    return int(v) if integer else v


def _choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _dtype_param(dtype):
    if dtype is None:
        return None
    try:
        d = np.dtype(dtype)
    except TypeError:
        d = None
    if d not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be None, 'float32' or 'float64', got {dtype!r}")
    return d


def _seed(random_state):
    """An int seed from scikit-learn's ``random_state`` (None, an int, a RandomState or a Generator)."""
    if random_state is None:
        return int(np.random.default_rng().integers(2**31 - 1))
    if isinstance(random_state, (numbers.Integral, np.integer)) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be None, an int >= 0, a RandomState or a Generator, "
                             f"got {random_state!r}")
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    raise ValueError(f"random_state must be None, an int >= 0, a RandomState or a Generator, got {random_state!r}")


def _int_tuple(name, value, d):
    """An int or a sequence of ``d`` ints, each >= 1, as a tuple of ``d`` ints."""
    values = (value,) * d if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != d:
        raise ValueError(f"{name} must be an int or a tuple of {d} ints (one per spatial dim), got {value!r}")
    return tuple(_number(f"{name}", v, 1, integer=True) for v in values)


def _feature_names(X):
    """Column names of a data frame (all strings), else None."""
    cols = getattr(X, "columns", None)
    if cols is None or not hasattr(X, "__array__"):
        return None
    names = np.asarray(list(cols), dtype=object)
    if len(names) and all(isinstance(c, str) for c in names):
        return names
    return None


def _as_float_array(X, dtype, name="X", ndims=(2,)):
    """``X`` as a C-contiguous float32/float64 numpy array of one of ``ndims`` ranks, finite, non-empty.

    ``dtype`` None keeps float32 and float64 and turns anything else into float64. The errors carry
    scikit-learn's messages (its checks match them).
    """
    if X is None:
        raise ValueError(f"{name} is None: expected an array of data")
    if "scipy.sparse" in sys.modules and sys.modules["scipy.sparse"].issparse(X):
        raise TypeError(f"Sparse data was passed for {name}, but dense data is required. Use '.toarray()' to "
                        f"convert to a dense numpy array.")
    if hasattr(X, "get") and type(X).__module__.startswith("cupy"):
        X = X.get()
    arr = np.asarray(X)
    if arr.dtype.kind == "c":
        raise ValueError(f"Complex data not supported\n{arr}\n")
    if arr.ndim not in ndims:
        want = " or ".join(f"{d}D" for d in ndims)
        got = "scalar" if arr.ndim == 0 else f"{arr.ndim}D"
        hint = (" Reshape your data either using array.reshape(-1, 1) if your data has a single feature or "
                "array.reshape(1, -1) if it contains a single sample.") if arr.ndim < 2 else ""
        raise ValueError(f"Expected {want} array, got {got} array instead: {name} has shape {arr.shape}.{hint}")
    target = dtype if dtype is not None else (arr.dtype if arr.dtype in (np.float32, np.float64) else np.float64)
    if arr.dtype.kind in "OUS":
        arr = arr.astype(np.float64)  # numpy names what does not convert ("float() argument must be ...")
    arr = np.ascontiguousarray(arr, dtype=target)
    if arr.shape[0] == 0:
        raise ValueError(f"Found array with 0 sample(s) (shape={arr.shape}) while a minimum of 1 is required.")
    if arr.ndim == 2 and arr.shape[1] == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required.")
    if not np.isfinite(arr).all():
        what = "NaN" if np.isnan(arr).any() else "infinity or a value too large for " + repr(arr.dtype)
        raise ValueError(f"Input {name} contains {what}.")
    return arr


# --------------------------------------------------------------------------- base
class _Estimator:
    """get_params / set_params / repr / tags / validation, without scikit-learn."""

    _requires_fit = True
    _array_params = ()  # parameters that may hold arrays (io saves them as arrays)

    @classmethod
    def _get_param_names(cls):
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values()
                      if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))

    def get_params(self, deep=True):
        """The constructor parameters as a dict (``deep``: also those of nested estimators)."""
        out = {}
        for key in self._get_param_names():
            value = getattr(self, key)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{key}__{k}", v) for k, v in value.get_params().items())
            out[key] = value
        return out

    def set_params(self, **params):
        """Set constructor parameters (checked when the estimator is next used); returns ``self``."""
        valid = self._get_param_names()
        for key, value in params.items():
            head, _, sub = key.partition("__")
            if head not in valid:
                raise ValueError(f"Invalid parameter {head!r} for estimator {type(self).__name__}. "
                                 f"Valid parameters are: {valid!r}.")
            if sub:
                getattr(self, head).set_params(**{sub: value})
            else:
                setattr(self, head, value)
        return self

    def __repr__(self):
        sig = inspect.signature(type(self).__init__)
        parts = []
        for name, p in sig.parameters.items():
            if name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            value = getattr(self, name)
            if isinstance(value, np.ndarray):
                parts.append(f"{name}=<array of shape {value.shape}, {value.dtype}>")
            elif p.default is p.empty or not _same(value, p.default):
                parts.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __sklearn_tags__(self):
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags  # noqa: PLC0415  (optional)

        return Tags(estimator_type=None, target_tags=TargetTags(required=False),
                    transformer_tags=TransformerTags(preserves_dtype=["float64", "float32"]),
                    input_tags=InputTags(two_d_array=self._two_d_input(), three_d_array=False),
                    requires_fit=self._requires_fit)

    def _more_tags(self):  # scikit-learn < 1.6
        return {"preserves_dtype": [np.float64, np.float32], "requires_fit": self._requires_fit,
                "X_types": ["2darray"] if self._two_d_input() else ["3darray"]}

    def _two_d_input(self):
        return True

    # ----------------------------------------------------------- validation
    def _check_feature_names(self, X, reset):
        names = _feature_names(X)
        if reset:
            if names is not None:
                self.feature_names_in_ = names
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
            return
        fitted = getattr(self, "feature_names_in_", None)
        if fitted is None and names is None:
            return
        import warnings  # noqa: PLC0415

        if fitted is not None and names is None:
            warnings.warn(f"X does not have valid feature names, but {type(self).__name__} was fitted with "
                          f"feature names", UserWarning, stacklevel=3)
        elif fitted is None:
            warnings.warn(f"X has feature names, but {type(self).__name__} was fitted without feature names",
                          UserWarning, stacklevel=3)
        elif len(names) != len(fitted) or (names != fitted).any():
            raise ValueError("The feature names should match those that were passed during fit.")

    def _check_n_features(self, n, reset):
        if reset:
            self.n_features_in_ = n
        elif hasattr(self, "n_features_in_") and n != self.n_features_in_:
            raise ValueError(f"X has {n} features, but {type(self).__name__} is expecting {self.n_features_in_} "
                             f"features as input.")

    def _check_fitted(self):
        if not self.__sklearn_is_fitted__():
            raise _not_fitted(self)

    def __sklearn_is_fitted__(self):
        # (scikit-learn's default test looks for attributes ending in "_", and lambda_ is a parameter)
        return not self._requires_fit or hasattr(self, "components_")

    def _encode_settings(self):
        """The encoder's parameters checked (names as the user gave them)."""
        lam = _number("lambda_", self.lambda_, 0.0)
        solver = _choice("solver", self.solver, _SOLVERS)
        max_iter = _number("transform_max_iter", self.transform_max_iter, 1, integer=True)
        tol = _number("transform_tol", self.transform_tol, 0.0, allow_none=True)
        tau = _number("tau", self.tau, 0.0, strict=True, allow_none=True)
        every = _number("check_every", self.check_every, 1, integer=True)
        if not isinstance(self.nonneg, (bool, np.bool_)):
            raise TypeError(f"nonneg must be a bool, got {self.nonneg!r}")
        _dtype_param(self.dtype)
        return {"lambda_": lam, "solver": solver, "lca_iters": max_iter, "tol": tol, "check_every": every,
                "nonneg": bool(self.nonneg)}, tau

    def _layer(self, cls, shape_args, dtype, weights=None, seed=None, eta=0.01, **extra):
        """An LCA layer with this estimator's encoder settings and ``weights`` (host array) as its dictionary."""
        settings, tau = self._encode_settings()
        layer = cls(*shape_args, tau=1.0 if tau is None else tau, eta=eta, input_zero_mean=False,
                    input_unit_var=False, dtype=dtype, seed=seed, backend=self.backend, **settings, **extra)
        if weights is not None:
            layer.weights = layer.xp.asarray(np.asarray(weights, dtype=dtype))
        return layer

    def _set_tau(self, layer, in_shape=None):
        """``tau=None``: the step ``1/tau = 1/max(L, 1)``, ``L`` the largest eigenvalue of ``D D^T``."""
        if self.solver == "lca" and self.tau is None:
            layer.tau = max(float(layer.lipschitz(in_shape)), 1.0)

    def _encode(self, layer, X):
        """Codes of ``X`` (host array of the layer's dtype) as a host array."""
        from .backend import to_numpy  # noqa: PLC0415

        self._set_tau(layer, X.shape[2:] if X.ndim > 2 else None)
        return np.ascontiguousarray(to_numpy(_solve(layer, layer.xp.asarray(X))["acts"]))

    def fit_transform(self, X, y=None, **fit_params):
        """``fit(X).transform(X)``."""
        return self.fit(X, y, **fit_params).transform(X)

    # ----------------------------------------------------------- save / load
    def get_state(self):
        """``(arrays, meta)``: the fitted attributes (host arrays by name, JSON-able values); empty before fit."""
        arrays, meta = {}, {}
        params = set(self._get_param_names())
        for key, value in vars(self).items():
            if not key.endswith("_") or key.startswith("_") or key in params:
                continue
            if key == "feature_names_in_":
                meta[key] = [str(v) for v in value]
            elif isinstance(value, np.ndarray):
                arrays[key] = value
            else:
                meta[key] = value.name if isinstance(value, np.dtype) else value
        return arrays, meta

    def set_state(self, arrays, meta):
        """Restore :meth:`get_state`'s output (fitted attributes); the parameters are the constructor's."""
        for key, value in arrays.items():
            setattr(self, key, np.array(value))
        for key, value in meta.items():
            if key == "dtype_":
                value = np.dtype(value)
            elif key == "feature_names_in_":
                value = np.asarray(value, dtype=object)
            setattr(self, key, value)
        return self


def _solve(layer, X):
    """The layer's encode result with every variable (``solve``; ``encode`` in earlier versions)."""
    solve = getattr(layer, "solve", None)
    return solve(X) if solve is not None else layer.encode(X)


def _same(a, b):
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):
        return a is b


# --------------------------------------------------------------------------- dense coder
class LCASparseCoder(_Estimator):
    """Sparse coding against a fixed dictionary with the LCA or FISTA (scikit-learn's ``SparseCoder``).

    ``transform(X)`` returns, row by row, the minimiser of
    ``1/2 ||x - D^T a||^2 + lambda_ ||a||_1`` (``a >= 0`` with ``nonneg``), ``D = dictionary``.

    Parameters
    ----------
    dictionary : array (n_components, n_features), the atoms as rows (used as given: not renormalised)
    lambda_ : float >= 0, the sparsity weight (default 0.1)
    solver : "fista" (default; accelerated proximal gradient), "lca" (the LCA dynamics, step ``1/tau``) or
        "cd" (coordinate descent: the exact dense route; locally greedy on convolutional dictionaries;
        ``transform_max_iter`` sweeps at most, no ``check_every``)
    nonneg : non-negative codes (default False)
    transform_max_iter : iterations of the encoder at most (default 1000)
    transform_tol : None, or stop once the relative duality gap of the batch is below it (default 1e-4;
        see the module notes)
    tau : None (default: the stable step ``1/tau = 1/max(L, 1)``, ``L`` the largest eigenvalue of
        ``D D^T``) or the LCA time constant (solver="lca" only; ``1/tau <= 2/L`` is checked)
    check_every : iterations between two stopping checks (default 10)
    dtype : None (float32 input stays float32, anything else is coded in float64), "float32" or "float64"
    backend : None (the default backend), "numpy" or "cupy"; the codes come back as numpy arrays

    Attributes
    ----------
    n_features_in_, n_components_ : set by ``fit`` (which only validates: the coder is stateless)
    components_ : the dictionary as a float array (float32 stays float32)
    """

    _requires_fit = False
    _array_params = ("dictionary",)

    def __init__(self, dictionary, *, lambda_=0.1, solver="fista", nonneg=False, transform_max_iter=1000,
                 transform_tol=1e-4, tau=None, check_every=10, dtype=None, backend=None):
        _store_params(self, locals())

    def _dictionary(self):
        return _as_float_array(self.dictionary, None, "dictionary")  # float32 stays float32

    def fit(self, X, y=None):
        """Validate the parameters and ``X`` (``n_features`` must be the dictionary's); returns ``self``."""
        D = self._dictionary()
        self._encode_settings()
        Xa = _as_float_array(X, _dtype_param(self.dtype))
        if Xa.shape[1] != D.shape[1]:
            raise ValueError(f"X has {Xa.shape[1]} features, but the dictionary of {type(self).__name__} has "
                             f"{D.shape[1]} (dictionary shape {D.shape})")
        self._check_feature_names(X, reset=True)
        self.n_features_in_ = Xa.shape[1]
        self.n_components_ = D.shape[0]
        self.components_ = D
        return self

    def transform(self, X):
        """Codes ``(n_samples, n_components)`` of ``X (n_samples, n_features)``."""
        D = self._dictionary()
        names_ok = hasattr(self, "n_features_in_")
        Xa = _as_float_array(X, _dtype_param(self.dtype))
        if names_ok:
            self._check_feature_names(X, reset=False)
            self._check_n_features(Xa.shape[1], reset=False)
        if Xa.shape[1] != D.shape[1]:
            raise ValueError(f"X has {Xa.shape[1]} features, but {type(self).__name__} is expecting {D.shape[1]} "
                             f"features as input (the dictionary has shape {D.shape}).")
        from .lca.layers import LCA  # noqa: PLC0415

        layer = self._layer(LCA, (D.shape[0], D.shape[1]), Xa.dtype, weights=D, seed=0)
        return self._encode(layer, Xa)

    def inverse_transform(self, codes):
        """Reconstruction ``codes @ dictionary`` ``(n_samples, n_features)``."""
        D = self._dictionary()
        A = _as_float_array(codes, _dtype_param(self.dtype), "codes")
        if A.shape[1] != D.shape[0]:
            raise ValueError(f"codes have {A.shape[1]} components, the dictionary {D.shape[0]}")
        return A @ D.astype(A.dtype)

    def get_feature_names_out(self, input_features=None):
        """``["lcasparsecoder0", ...]``, one name per component."""
        return _names_out(self, np.asarray(self.dictionary).shape[0], input_features)


def _names_out(est, n_out, input_features):
    if input_features is not None:
        n_in = getattr(est, "n_features_in_", None)
        fitted = getattr(est, "feature_names_in_", None)
        input_features = np.asarray(input_features, dtype=object)
        if fitted is not None and (len(fitted) != len(input_features) or (fitted != input_features).any()):
            raise ValueError("input_features is not equal to feature_names_in_")
        if n_in is not None and len(input_features) != n_in:
            raise ValueError(f"input_features should have length equal to number of features ({n_in}), "
                             f"got {len(input_features)}")
    prefix = type(est).__name__.lower()
    return np.asarray([f"{prefix}{i}" for i in range(n_out)], dtype=object)


# --------------------------------------------------------------------------- dictionary learning
class _DictionaryLearningBase(_Estimator):
    """What the dense and convolutional dictionary learners share."""

    def _learn_settings(self, n):
        epochs = _number("max_iter", self.max_iter, 1, integer=True)
        batch = _number("batch_size", self.batch_size, 1, integer=True)
        lr = _number("learning_rate", self.learning_rate, 0.0)
        return epochs, min(batch, n), lr

    def fit(self, X, y=None):
        """Learn the dictionary: ``max_iter`` passes over ``X`` in shuffled mini-batches (full batches only);
        returns ``self``."""
        X = self._validate_fit(X, reset=True)
        epochs, batch, lr = self._learn_settings(X.shape[0])
        seed = _seed(self.random_state)
        layer = self._initial_layer(X, seed, lr)
        callback = None
        if self.solver == "lca" and self.tau is None:
            def callback(step, record):  # keep the step stable as the dictionary changes
                self._set_tau(layer, X.shape[2:] if X.ndim > 2 else None)
            self._set_tau(layer, X.shape[2:] if X.ndim > 2 else None)
        history = layer.fit(X, epochs=epochs, batch_size=batch, seed=seed, progress=False, callback=callback)
        self.components_ = layer.get_weights()
        self.dtype_ = X.dtype
        self.n_iter_ = epochs
        self.n_steps_ = epochs * (X.shape[0] // batch)
        self.history_ = [dict(r) for r in history]
        return self

    def partial_fit(self, X, y=None):
        """One dictionary step on ``X`` as one mini-batch (the first call initialises the dictionary);
        returns ``self``."""
        first = not hasattr(self, "components_")
        X = self._validate_fit(X, reset=first)
        lr = _number("learning_rate", self.learning_rate, 0.0)
        if first:
            layer = self._initial_layer(X, _seed(self.random_state), lr)
            self.dtype_ = X.dtype
            self.n_iter_, self.n_steps_, self.history_ = 0, 0, []
        else:
            layer = self._make_layer(self.components_, self.dtype_, lr)
        self._set_tau(layer, X.shape[2:] if X.ndim > 2 else None)
        out = _solve(layer, layer.xp.asarray(X))
        layer.update_weights(out["acts"], out["recon_errors"])
        self.components_ = layer.get_weights()
        self.n_steps_ += 1
        return self

    def _initial_layer(self, X, seed, lr):
        init = self._dict_init(X)
        layer = self._make_layer(None, X.dtype, lr, seed=seed, X=X)
        if init is not None:
            layer.assign_weight_values(layer.xp.asarray(init.astype(X.dtype)), normalize=True)
        return layer


class LCADictionaryLearning(_DictionaryLearningBase):
    """Dictionary learning with the LCA (scikit-learn's ``MiniBatchDictionaryLearning`` with LCA codes).

    Minimises ``sum_n 1/2 ||x_n - D^T a_n||^2 + lambda_ ||a_n||_1`` over unit-norm atoms (rows of
    ``components_``) by mini-batch alternation: encode a batch (``solver``), then take lca-pytorch's
    dictionary step ``D_k += learning_rate / (n_active_k + 1) sum_n a_nk (x_n - D^T a_n)`` and
    renormalise (:meth:`sparsecoding.lca.LCA.update_weights`). ``fit`` runs the library's learning
    loop (:meth:`sparsecoding.lca.LCA.fit`: batch order ``default_rng([seed, epoch]).permutation``,
    full batches only).

    Parameters
    ----------
    n_components : int or None (default: n_features), the number of atoms
    lambda_, solver, nonneg, transform_max_iter, transform_tol, tau, check_every, dtype, backend :
        the encoder, as :class:`LCASparseCoder` (used by every learning step and by ``transform``)
    max_iter : passes over the data in ``fit`` (default 10)
    batch_size : mini-batch size (default 256; at most n_samples)
    learning_rate : the dictionary step (lca-pytorch's ``eta``, default 0.05)
    dict_init : None (random unit-norm atoms) or an initial dictionary (n_components, n_features),
        renormalised
    random_state : None, an int, a RandomState or a Generator: the initial dictionary and the batch order

    Attributes
    ----------
    components_ : (n_components, n_features) unit-norm atoms
    n_features_in_, n_iter_ (passes run by ``fit``), n_steps_ (dictionary steps in all),
    history_ (per-pass records of ``fit``: energy, L1, L2, frac_active, ...), dtype_
    """

    def __init__(self, n_components=None, *, lambda_=0.1, solver="fista", nonneg=False, max_iter=10,
                 batch_size=256, learning_rate=0.05, dict_init=None, transform_max_iter=1000, transform_tol=1e-4,
                 tau=None, check_every=10, random_state=None, dtype=None, backend=None):
        _store_params(self, locals())

    _array_params = ("dict_init",)

    def _n_components(self, n_features):
        if self.n_components is None:
            return n_features
        return _number("n_components", self.n_components, 1, integer=True)

    def _validate_fit(self, X, reset):
        Xa = _as_float_array(X, _dtype_param(self.dtype) if reset else getattr(self, "dtype_", None))
        self._check_feature_names(X, reset=reset)
        self._check_n_features(Xa.shape[1], reset=reset)
        self._encode_settings()
        return Xa

    def _dict_init(self, X):
        if self.dict_init is None:
            return None
        K = self._n_components(X.shape[1])
        init = _as_float_array(self.dict_init, np.float64, "dict_init")
        if init.shape != (K, X.shape[1]):
            raise ValueError(f"dict_init must have shape (n_components, n_features) = {(K, X.shape[1])}, "
                             f"got {init.shape}")
        if not (np.abs(init).max(axis=1) > 0).all():
            raise ValueError("dict_init has an all-zero atom")
        return init

    def _make_layer(self, weights, dtype, lr, seed=0, X=None):
        from .lca.layers import LCA  # noqa: PLC0415

        D = self.n_features_in_
        K = self._n_components(D) if weights is None else weights.shape[0]
        return self._layer(LCA, (K, D), dtype, weights=weights, seed=seed, eta=lr)

    def transform(self, X):
        """Codes ``(n_samples, n_components)`` of ``X`` on the learned dictionary."""
        self._check_fitted()
        Xa = _as_float_array(X, _dtype_param(self.dtype))
        self._check_feature_names(X, reset=False)
        self._check_n_features(Xa.shape[1], reset=False)
        layer = self._make_layer(self.components_.astype(Xa.dtype), Xa.dtype, 0.0)
        return self._encode(layer, Xa)

    def inverse_transform(self, codes):
        """Reconstruction ``codes @ components_`` ``(n_samples, n_features)``."""
        self._check_fitted()
        A = _as_float_array(codes, _dtype_param(self.dtype), "codes")
        if A.shape[1] != self.components_.shape[0]:
            raise ValueError(f"codes have {A.shape[1]} components, the dictionary {self.components_.shape[0]}")
        return A @ self.components_.astype(A.dtype)

    def get_feature_names_out(self, input_features=None):
        """``["lcadictionarylearning0", ...]``, one name per component."""
        self._check_fitted()
        return _names_out(self, self.components_.shape[0], input_features)


class ConvLCADictionaryLearning(_DictionaryLearningBase):
    """Convolutional dictionary learning with the LCA, for image arrays ``(N, C, H, W)``.

    The convolutional model ``x = sum_k D_k * a_k`` (transposed convolution of the code maps with
    the atoms ``D_k`` of shape ``(C, *kernel_size)``, unit norm), learned as
    :class:`LCADictionaryLearning` does, on :class:`~sparsecoding.lca.LCAConv2D` (and
    ``LCAConv1D`` / ``LCAConv3D`` for inputs ``(N, C, L)`` / ``(N, C, D, H, W)``: the rank of the
    data picks the layer).

    Parameters
    ----------
    n_components : number of atoms (default 16)
    kernel_size : int or tuple, atom size (default 5; odd with pad="same")
    stride : int or tuple (default 1); the code maps are ``ceil(size / stride)`` ("same") large
    pad : "same" (default) or "valid"
    image_shape : None, or the shape ``(C, H, W)`` of one image: then 2-D data ``(N, C*H*W)`` is
        accepted (flattened images, e.g. in a ``Pipeline``) and ``transform`` returns flattened codes
        ``(N, K*h*w)``; 4-D data keeps giving 4-D codes
    the other parameters and the attributes : as :class:`LCADictionaryLearning`; ``n_features_in_``
    is ``C*H*W`` with ``image_shape`` (the width of flattened data), else the channels ``C`` (``X.shape[1]``);
    ``n_channels_`` and ``n_spatial_dims_`` are those of the images ``fit`` saw; ``components_`` has
    shape ``(K, C, *kernel_size)``. Images of any spatial size can be coded after ``fit``.
    """

    def __init__(self, n_components=16, kernel_size=5, stride=1, *, pad="same", lambda_=0.1, solver="fista",
                 nonneg=False, max_iter=5, batch_size=64, learning_rate=0.05, dict_init=None, image_shape=None,
                 transform_max_iter=500, transform_tol=1e-4, tau=None, check_every=10, random_state=None,
                 dtype=None, backend=None):
        _store_params(self, locals())

    _array_params = ("dict_init",)

    def _two_d_input(self):
        return self.image_shape is not None

    def _image_shape(self):
        if self.image_shape is None:
            return None
        shape = self.image_shape
        if isinstance(shape, (numbers.Integral, str)) or not hasattr(shape, "__len__") or not 2 <= len(shape) <= 4:
            raise ValueError(f"image_shape must be None or (C, *spatial) with 1 to 3 spatial dims, got {shape!r}")
        return tuple(_number(f"image_shape[{i}]", v, 1, integer=True) for i, v in enumerate(shape))

    def _as_images(self, X, dtype, fitted, name="X"):
        """``(images (N, C, *spatial), flat)``: 2-D input reshaped by ``image_shape``; when ``fitted``, the
        width of 2-D input is checked against ``n_features_in_`` and the channels / rank of images
        against those of ``fit``."""
        shape = self._image_shape()
        arr = _as_float_array(X, dtype, name, ndims=(2, 3, 4, 5) if shape is not None else (3, 4, 5))
        flat = arr.ndim == 2
        if flat:
            if fitted:
                self._check_n_features(arr.shape[1], reset=False)
            if arr.shape[1] != int(np.prod(shape)):
                raise ValueError(f"{name} has {arr.shape[1]} features, but image_shape={shape} needs "
                                 f"{int(np.prod(shape))} (C*H*W)")
            arr = arr.reshape(arr.shape[0], *shape)
        elif shape is not None and (arr.ndim != len(shape) + 1 or arr.shape[1] != shape[0]):
            raise ValueError(f"{name} must be images of shape (N, {shape[0]}, *spatial) with {len(shape) - 1} "
                             f"spatial dims (image_shape={shape}), got shape {arr.shape}")
        if fitted and (arr.shape[1] != self.n_channels_ or arr.ndim - 2 != self.n_spatial_dims_):
            raise ValueError(f"{name} must be images of shape (N, {self.n_channels_}, *spatial) with "
                             f"{self.n_spatial_dims_} spatial dims (as in fit), got shape {arr.shape}")
        return arr, flat

    def _validate_fit(self, X, reset):
        imgs, flat = self._as_images(X, _dtype_param(self.dtype) if reset else self.dtype_, fitted=not reset)
        if reset:
            shape = self._image_shape()
            self._check_feature_names(X, reset=True)
            self.n_features_in_ = int(np.prod(shape)) if shape is not None else imgs.shape[1]
            self.n_channels_, self.n_spatial_dims_ = imgs.shape[1], imgs.ndim - 2
        self._encode_settings()
        self._geometry(imgs.ndim - 2)
        return imgs

    def _geometry(self, d):
        kernel = _int_tuple("kernel_size", self.kernel_size, d)
        stride = _int_tuple("stride", self.stride, d)
        pad = _choice("pad", self.pad, ("same", "valid"))
        if pad == "same" and any(k % 2 == 0 for k in kernel):
            raise ValueError(f"pad='same' needs odd kernel sizes, got kernel_size={kernel}")
        return kernel, stride, pad

    def _layer_class(self, d):
        from .lca.layers import LCAConv1D, LCAConv2D, LCAConv3D  # noqa: PLC0415

        return {1: LCAConv1D, 2: LCAConv2D, 3: LCAConv3D}[d]

    def _make_layer(self, weights, dtype, lr, seed=0, X=None):
        d = self.n_spatial_dims_
        kernel, stride, pad = self._geometry(d)
        K = _number("n_components", self.n_components, 1, integer=True) if weights is None else weights.shape[0]
        return self._layer(self._layer_class(d), (K, self.n_channels_), dtype, weights=weights, seed=seed, eta=lr,
                           kernel_size=kernel, stride=stride, pad=pad)

    def _dict_init(self, X):
        if self.dict_init is None:
            return None
        kernel, _, _ = self._geometry(X.ndim - 2)
        K = _number("n_components", self.n_components, 1, integer=True)
        init = _as_float_array(self.dict_init, np.float64, "dict_init", ndims=(X.ndim,))
        want = (K, X.shape[1], *kernel)
        if init.shape != want:
            raise ValueError(f"dict_init must have shape (n_components, C, *kernel_size) = {want}, got {init.shape}")
        if not (np.abs(init).reshape(K, -1).max(axis=1) > 0).all():
            raise ValueError("dict_init has an all-zero atom")
        return init

    def transform(self, X):
        """Code maps ``(N, K, *code_spatial)`` of images ``X``; flattened ``(N, K*h*w)`` for 2-D input."""
        self._check_fitted()
        imgs, flat = self._as_images(X, _dtype_param(self.dtype), fitted=True)
        layer = self._make_layer(self.components_.astype(imgs.dtype), imgs.dtype, 0.0)
        codes = self._encode(layer, imgs)
        return codes.reshape(codes.shape[0], -1) if flat else codes

    def inverse_transform(self, codes):
        """Reconstructions ``sum_k D_k * a_k`` of code maps (``(N, C, *spatial)``; flattened for flattened codes).

        The output size is ``image_shape`` when set, else the "same"/"valid" size of the code maps
        (for strides > 1 the smallest image giving them).
        """
        from .backend import to_numpy  # noqa: PLC0415

        self._check_fitted()
        shape = self._image_shape()
        flat = np.ndim(codes) == 2
        A = _as_float_array(codes, _dtype_param(self.dtype), "codes",
                            ndims=(2,) if flat else (self.n_spatial_dims_ + 2,))
        layer = self._make_layer(self.components_.astype(A.dtype), A.dtype, 0.0)
        in_shape = None if shape is None else shape[1:]
        if flat:
            if shape is None:
                raise ValueError("flattened codes need image_shape (set it in the constructor)")
            from .ops.conv import conv_output_shape  # noqa: PLC0415

            out = conv_output_shape(in_shape, layer.kernel_size, layer.stride, layer.pad)
            A = A.reshape(A.shape[0], layer.out_neurons, *out)
        if A.shape[1] != layer.out_neurons:
            raise ValueError(f"codes have {A.shape[1]} maps, the dictionary {layer.out_neurons} atoms")
        recon = np.ascontiguousarray(to_numpy(layer.compute_recon(layer.xp.asarray(A), in_shape=in_shape)))
        return recon.reshape(recon.shape[0], -1) if flat else recon
