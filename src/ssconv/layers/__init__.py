"""SSC layers: the pattern (one pure function of the arguments) and the ``SSConv2d`` module."""

from ssconv.layers.factory import ConvFactory, SSCFactory, dense_conv
from ssconv.layers.pattern import SPATIAL_MODES, KernelType, SSCPattern
from ssconv.layers.ssconv import BACKENDS, SSConv2d, SSCTracer, symbolic_trace

__all__ = [
    "BACKENDS",
    "SPATIAL_MODES",
    "ConvFactory",
    "KernelType",
    "SSCFactory",
    "SSCPattern",
    "SSConv2d",
    "SSCTracer",
    "dense_conv",
    "symbolic_trace",
]
