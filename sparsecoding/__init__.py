"""sparsecoding: biologically inspired representation learning on plain arrays.

Sparse coding with the Locally Competitive Algorithm, equilibrium propagation,
latent predictive learning and Földiák's anti-Hebbian network, on numpy (CPU)
or cupy (GPU), with every derivative written by hand.
"""
from .backend import BackendUnavailable, asarray, get_xp, set_backend, to_numpy, use_backend

__version__ = "0.1.0"

__all__ = ["BackendUnavailable", "asarray", "get_xp", "set_backend", "to_numpy", "use_backend", "__version__"]
