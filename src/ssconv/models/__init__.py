"""Model registry, architectures, one-call conversion to SSC and budget matching."""

from ssconv.models import cifar_resnet, imagenet, vgg  # noqa: F401  (register the models)
from ssconv.models.budget import candidate_patterns, erk_densities, solve_budget
from ssconv.models.convert import (
    ConversionReport,
    LayerDecision,
    convert,
    load_dense_state_dict,
    replace_convs,
)
from ssconv.models.coverage import CoverageIssue, check_coverage, model_coverage
from ssconv.models.registry import (
    PretrainedWeightsError,
    create_model,
    list_models,
    model_info,
    register_model,
)
from ssconv.models.weights import WeightsError, load_init_checkpoint, read_state_dict

__all__ = [
    "ConversionReport",
    "CoverageIssue",
    "LayerDecision",
    "PretrainedWeightsError",
    "WeightsError",
    "candidate_patterns",
    "check_coverage",
    "convert",
    "create_model",
    "erk_densities",
    "list_models",
    "load_dense_state_dict",
    "load_init_checkpoint",
    "model_coverage",
    "model_info",
    "read_state_dict",
    "register_model",
    "replace_convs",
    "solve_budget",
]
