"""LASSO solvers over any linear operator (ISTA, FISTA; coordinate descent for dense and convolutional
dictionaries), and the relaxation runner every iterative model uses."""
from ..ops.linop import power_iteration
from .lasso import (SolveResult, SolverResult, WeightedOperator, check_mask, coordinate_descent, duality_gap, fista, ista,
                    lasso_energy)
from .relax import RelaxResult, relax, relative_change
from .cd_conv import conv_coordinate_descent

__all__ = ["SolveResult", "SolverResult", "WeightedOperator", "check_mask", "duality_gap", "coordinate_descent", "conv_coordinate_descent", "fista", "ista", "lasso_energy", "power_iteration",
           "RelaxResult", "relax", "relative_change"]
