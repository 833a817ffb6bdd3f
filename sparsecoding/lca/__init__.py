"""Sparse coding with the Locally Competitive Algorithm (DESIGN.md §5)."""
from .dynamics import LCAResult, check_tau, run_lca
from .layers import LCA, LCAConv1D, LCAConv2D, LCAConv3D
from .learning import fit
from .metrics import compute_frac_active, compute_l1_sparsity, compute_l2_error, compute_times_active_by_feature

__all__ = ["LCA", "LCAConv1D", "LCAConv2D", "LCAConv3D", "LCAResult", "run_lca", "check_tau", "fit",
           "compute_frac_active", "compute_l1_sparsity", "compute_l2_error", "compute_times_active_by_feature"]
from .health import *  # noqa: E402,F401,F403  (DictionaryHealth, Homeostasis, usage / coherence / recovery)
from .health import __all__ as _health_all  # noqa: E402
__all__ += _health_all
