"""sparsecoding: biologically inspired representation learning on plain arrays.

Sparse coding with the Locally Competitive Algorithm, equilibrium propagation,
latent predictive learning and Földiák's anti-Hebbian network, on numpy (CPU)
or cupy (GPU), with every derivative written by hand.
"""
from .backend import BackendUnavailable, asarray, get_xp, set_backend, to_numpy, use_backend

__version__ = "0.1.0"

# imported on first use (PEP 562), so that ``import sparsecoding`` stays light: the estimators need
# no scikit-learn to import, and save / load import a model's module only when they meet one
_LAZY = {
    "LCASparseCoder": "estimators", "LCADictionaryLearning": "estimators", "ConvLCADictionaryLearning": "estimators",
    "save": "io", "load": "io", "ModelFileError": "io",
}

__all__ = ["BackendUnavailable", "asarray", "get_xp", "set_backend", "to_numpy", "use_backend", "__version__",
           *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib  # noqa: PLC0415

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
