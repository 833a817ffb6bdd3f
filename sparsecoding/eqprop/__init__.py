"""Equilibrium propagation for convolutional energy-based networks (DESIGN.md §6)."""
from .network import ACTIVATIONS, ConvEBM, MLPEBM
from .train import evaluate, make_optimizer, train

__all__ = ["ACTIVATIONS", "ConvEBM", "MLPEBM", "evaluate", "make_optimizer", "train"]
