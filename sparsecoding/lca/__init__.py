"""Sparse coding with the Locally Competitive Algorithm (DESIGN.md §5)."""
from .dynamics import LCAResult, check_tau, run_lca
from .layers import LCA, LCAConv1D, LCAConv2D, LCAConv3D
from .learning import fit

__all__ = ["LCA", "LCAConv1D", "LCAConv2D", "LCAConv3D", "LCAResult", "run_lca", "check_tau", "fit"]
