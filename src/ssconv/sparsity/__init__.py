"""Sparsity rules shared by SSC and the pruned baselines: the budget solver, layer selection
(keep rules), weight counting, the mask parametrization, initialization scale and mixing."""

from ssconv.sparsity.budget import (
    AUTO,
    AUTO_ERK_BELOW,
    DISTRIBUTIONS,
    LayerSpec,
    candidate_patterns,
    choose_per_layer,
    equal_densities,
    erk_densities,
    layer_densities,
    resolve_distribution,
    solve_budget,
    uniform_densities,
)
from ssconv.sparsity.counting import counted_layers, model_weight_counts, weight_counts
from ssconv.sparsity.init import DEFAULT_INIT_SCALE, INIT_SCALES, rescale_init
from ssconv.sparsity.selection import DEFAULT_CLASSIFIER_PATTERNS, KEEP_RULES, select_layers

__all__ = [
    "AUTO",
    "AUTO_ERK_BELOW",
    "DEFAULT_CLASSIFIER_PATTERNS",
    "DEFAULT_INIT_SCALE",
    "DISTRIBUTIONS",
    "INIT_SCALES",
    "KEEP_RULES",
    "LayerSpec",
    "candidate_patterns",
    "choose_per_layer",
    "counted_layers",
    "equal_densities",
    "erk_densities",
    "layer_densities",
    "resolve_distribution",
    "model_weight_counts",
    "rescale_init",
    "select_layers",
    "solve_budget",
    "uniform_densities",
    "weight_counts",
]
