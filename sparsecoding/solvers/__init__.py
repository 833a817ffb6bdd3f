"""LASSO solvers used as references and as fast encoders."""
from .lasso import SolverResult, coordinate_descent, fista, ista, lasso_energy
from .operators import ConvDictionary, DenseDictionary, power_iteration

__all__ = ["SolverResult", "coordinate_descent", "fista", "ista", "lasso_energy",
           "ConvDictionary", "DenseDictionary", "power_iteration"]
