"""Pruning-at-initialization baselines at exactly the same budget as SSC.

SSC's rivals in "Pushing the Efficiency Limit Using Structured Sparse Convolutions" (Verma et
al., WACV 2023, arXiv:2210.12818) are the methods that prune a network before training,
compared at the same number of nonzero weights:

* ``random`` and ``erk``: random masks, uniform or with the Erdos-Renyi-Kernel layer densities of
  "Rigging the Lottery: Making All Tickets Winners" (Evci et al., ICML 2020, arXiv:1911.11134);
* ``magnitude``: ``|w|`` at initialization;
* ``snip``: "SNIP: Single-shot Network Pruning based on Connection Sensitivity" (Lee et al.,
  ICLR 2019, arXiv:1810.02340);
* ``grasp``: "Picking Winning Tickets Before Training by Preserving Gradient Flow" (Wang et al.,
  ICLR 2020, arXiv:2002.07376);
* ``synflow``: "Pruning neural networks without any data by iteratively conserving synaptic
  flow" (Tanaka et al., NeurIPS 2020, arXiv:2006.05467).

One interface: a :class:`Pruner` scores the prunable weights (:mod:`ssconv.pruning.methods`),
:func:`scores_to_masks` turns scores into masks at an exact count, and :func:`apply_masks`
attaches them so that pruned weights stay exactly zero (:mod:`ssconv.pruning.masks`).
:func:`prune` does all of it at a ``density`` or an exact ``num_params``::

    report = ssconv.pruning.prune(model, "synflow", density=0.1, input_size=(3, 32, 32))
    print(report.table())
"""

from ssconv.pruning._prune import SCOPES, LayerPruning, PruneReport, prunable_layers, prune
from ssconv.pruning.masks import (
    apply_masks,
    get_masks,
    layer_budgets,
    prepare_masks,
    remove_masks,
    scores_to_masks,
)
from ssconv.pruning.methods import (
    PRUNING_METHODS,
    ERKPruner,
    GraSPPruner,
    MagnitudePruner,
    Pruner,
    RandomPruner,
    ScoreInputs,
    SNIPPruner,
    SynFlowPruner,
    get_pruner,
)
from ssconv.sparsity.budget import DISTRIBUTIONS
from ssconv.sparsity.masking import WeightMask

__all__ = [
    "DISTRIBUTIONS",
    "ERKPruner",
    "GraSPPruner",
    "LayerPruning",
    "MagnitudePruner",
    "PRUNING_METHODS",
    "PruneReport",
    "Pruner",
    "RandomPruner",
    "SCOPES",
    "SNIPPruner",
    "ScoreInputs",
    "SynFlowPruner",
    "WeightMask",
    "apply_masks",
    "get_masks",
    "get_pruner",
    "layer_budgets",
    "prepare_masks",
    "prunable_layers",
    "prune",
    "remove_masks",
    "scores_to_masks",
]
