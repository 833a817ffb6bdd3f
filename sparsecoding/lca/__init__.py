"""Sparse coding with the Locally Competitive Algorithm (DESIGN.md §5)."""
from .dynamics import LCAResult, check_tau, run_lca
from .health import (DictionaryHealth, Homeostasis, atom_usage, cross_correlation, dead_atoms, init_from_patches,
                     match_atoms, mutual_coherence, recovery)
from .layers import LCA, LCAConv1D, LCAConv2D, LCAConv3D
from .learning import fit
from .metrics import compute_frac_active, compute_l1_sparsity, compute_l2_error, compute_times_active_by_feature

__all__ = ["LCA", "LCAConv1D", "LCAConv2D", "LCAConv3D", "LCAResult", "run_lca", "check_tau", "fit",
           "compute_frac_active", "compute_l1_sparsity", "compute_l2_error", "compute_times_active_by_feature",
           "atom_usage", "cross_correlation", "mutual_coherence", "dead_atoms", "match_atoms", "recovery",
           "init_from_patches", "DictionaryHealth", "Homeostasis"]
