"""Array primitives shared by every model: convolutions, pools, thresholds."""
from .conv import ConvOperator, conv, conv_output_shape, conv_transpose, resolve_padding
from .pool import avg_pool, avg_pool_adjoint, max_pool, max_unpool
from .threshold import TRANSFER_FUNCTIONS, get_transfer, hard_threshold, nonneg_hard_threshold, nonneg_soft_threshold, soft_threshold

__all__ = [
    "ConvOperator", "conv", "conv_transpose", "conv_output_shape", "resolve_padding",
    "max_pool", "max_unpool", "avg_pool", "avg_pool_adjoint",
    "soft_threshold", "hard_threshold", "nonneg_soft_threshold", "nonneg_hard_threshold",
    "TRANSFER_FUNCTIONS", "get_transfer",
]
