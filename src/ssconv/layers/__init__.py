"""SSC layers: the pattern (one pure function of the arguments) and the ``SSConv2d`` module."""

from ssconv.layers.factory import DEFAULT_PERIOD, ConvFactory, SSCFactory, dense_conv
from ssconv.layers.linear import SSCLinear
from ssconv.layers.pattern import SPATIAL_MODES, KernelType, SSCPattern
from ssconv.layers.ssconv import BACKENDS, STOCK_BACKENDS, SSConv2d, SSCTracer, symbolic_trace

__all__ = [
    "BACKENDS",
    "DEFAULT_PERIOD",
    "SPATIAL_MODES",
    "ConvFactory",
    "KernelType",
    "SSCFactory",
    "SSCLinear",
    "SSCPattern",
    "SSConv2d",
    "SSCTracer",
    "STOCK_BACKENDS",
    "dense_conv",
    "symbolic_trace",
]
