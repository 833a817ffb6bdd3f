"""Array primitives shared by every model: the linear operators (dense, convolution, pools), their
engines, the elementwise registry and the fused solver updates."""
from .conv import ConvOperator, conv, conv_output_shape, conv_transpose, resolve_padding
from .linop import DenseOperator, LinearOperator, dottest, power_iteration
from .pool import AvgPool, MaxPool, avg_pool, avg_pool_adjoint, max_pool, max_unpool
from .elementwise import (ACTIVATIONS, TRANSFER_FUNCTIONS, get_activation, get_transfer, hard_threshold,
                          nonneg_hard_threshold, nonneg_soft_threshold, one_hot, sigmoid, soft_threshold, softmax)

__all__ = [
    "LinearOperator", "DenseOperator", "ConvOperator", "MaxPool", "AvgPool", "dottest", "power_iteration",
    "conv", "conv_transpose", "conv_output_shape", "resolve_padding",
    "max_pool", "max_unpool", "avg_pool", "avg_pool_adjoint",
    "soft_threshold", "hard_threshold", "nonneg_soft_threshold", "nonneg_hard_threshold",
    "TRANSFER_FUNCTIONS", "get_transfer", "ACTIVATIONS", "get_activation", "sigmoid", "softmax", "one_hot",
]
