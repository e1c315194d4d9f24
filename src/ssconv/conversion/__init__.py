"""Conversion: any CNN to SSC at a budget (:func:`convert`), the structured baselines at the
same budget (depthwise-separable; group convolution is SSC with ``period=1``), and coverage
checks of a converted model."""

from ssconv.conversion._convert import (
    ConversionReport,
    LayerDecision,
    LoadResult,
    SamePadSSConv2d,
    convert,
    load_dense_state_dict,
)
from ssconv.conversion.baselines import DepthwiseSeparableConv2d, to_depthwise_separable
from ssconv.conversion.coverage import CoverageIssue, check_coverage, model_coverage

__all__ = [
    "ConversionReport",
    "CoverageIssue",
    "DepthwiseSeparableConv2d",
    "LayerDecision",
    "LoadResult",
    "SamePadSSConv2d",
    "check_coverage",
    "convert",
    "load_dense_state_dict",
    "model_coverage",
    "to_depthwise_separable",
]
