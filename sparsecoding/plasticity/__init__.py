"""Local plasticity rules: Földiák's anti-Hebbian network and latent predictive learning."""
from .foldiak import FoldiakNetwork

__all__ = ["FoldiakNetwork"]
