"""Equilibrium propagation for convolutional energy-based networks (DESIGN.md §6)."""
from .lcacnn import LCACNN
from .network import ACTIVATIONS, ConvEBM, MLPEBM
from .train import evaluate, make_optimizer, train

__all__ = ["ACTIVATIONS", "ConvEBM", "LCACNN", "MLPEBM", "evaluate", "make_optimizer", "train"]
