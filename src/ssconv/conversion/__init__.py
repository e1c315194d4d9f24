"""Conversion: any CNN to SSC at a budget (:func:`convert`), the structured baselines at the
same budget (depthwise-separable; group convolution is SSC with ``period=1``), coverage checks
of a converted model, and the one recipe that builds any rival at SSC's budget
(:func:`ssc_weight_budget`, :func:`build_rival`)."""

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
from ssconv.conversion.same_budget import RIVALS, build_rival, ssc_weight_budget

__all__ = [
    "ConversionReport",
    "CoverageIssue",
    "DepthwiseSeparableConv2d",
    "LayerDecision",
    "LoadResult",
    "RIVALS",
    "SamePadSSConv2d",
    "build_rival",
    "check_coverage",
    "convert",
    "load_dense_state_dict",
    "model_coverage",
    "ssc_weight_budget",
    "to_depthwise_separable",
]
