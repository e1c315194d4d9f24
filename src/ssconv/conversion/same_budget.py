"""Any method at the same budget as SSC: SSC's exact weight count, then the rival built to it.

The comparison of "Pushing the Efficiency Limit Using Structured Sparse Convolutions" (Verma et
al., WACV 2023, arXiv:2210.12818) holds the number of nonzero weights fixed: a pruning method
prunes to exactly the count SSC reaches at the same density on the same architecture (conv and
linear layers, kept layers included), and the structured baselines meet the same density with
their own per-layer choices. One recipe for the trainer, the CLI and the benchmarks.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from ssconv.conversion._convert import ConversionReport, convert
from ssconv.conversion.baselines import to_depthwise_separable
from ssconv.pruning import PRUNING_METHODS, PruneReport, prune
from ssconv.sparsity.budget import AUTO
from ssconv.sparsity.selection import KEEP_RULES

__all__ = ["RIVALS", "STRUCTURED_RIVALS", "build_rival", "ssc_weight_budget"]

#: The structured baselines built here (group convolution is SSC with ``period=1``: a preset
#: of :func:`ssconv.convert`).
STRUCTURED_RIVALS = ("dw_separable",)
#: Every method :func:`build_rival` builds.
RIVALS = (*STRUCTURED_RIVALS, *PRUNING_METHODS)


def ssc_weight_budget(
    model: nn.Module,
    density: float,
    *,
    distribution: str = AUTO,
    settings: Mapping[str, Any] | None = None,
    skip: Sequence[str] = (),
    include: Sequence[str] = (),
    keep: Sequence[str] = KEEP_RULES,
) -> int:
    """The nonzero weights of ``model`` converted to SSC at ``density`` (``settings``: SSC
    settings held fixed, as :func:`ssconv.convert` takes them; ``distribution``: SSC's layer
    distribution, by default SSC's own); ``model`` is left as it is."""
    report = convert(
        copy.deepcopy(model),
        density=density,
        distribution=distribution,
        inplace=True,
        warn_coverage=False,
        skip=skip,
        include=include,
        keep=keep,
        **dict(settings or {}),
    )
    return report.weight_params


def build_rival(
    model: nn.Module,
    method: str,
    *,
    density: float | None,
    num_params: int | None = None,
    distribution: str = "uniform",
    skip: Sequence[str] = (),
    include: Sequence[str] = (),
    keep: Sequence[str] = KEEP_RULES,
    **prune_options: Any,
) -> ConversionReport | PruneReport:
    """Apply ``method`` to ``model`` in place at the budget.

    ``dw_separable`` replaces the convertible convs by depthwise-separable blocks meeting
    ``density``; a pruning method prunes to exactly ``num_params`` nonzero weights when given
    (e.g. :func:`ssc_weight_budget`), else to ``density``. ``prune_options`` go to
    :func:`ssconv.pruning.prune` (data, input_size, scope, seed, ...).
    """
    rules = {"skip": skip, "include": include, "keep": keep}
    if method in STRUCTURED_RIVALS:
        if density is None:
            raise ValueError(f"{method} needs density=...")
        return to_depthwise_separable(
            model, density=density, distribution=distribution, inplace=True, **rules
        )
    if method in PRUNING_METHODS:
        return prune(
            model,
            method,
            density=None if num_params is not None else density,
            num_params=num_params,
            distribution=distribution,
            **rules,
            **prune_options,
        )
    raise ValueError(f"method must be one of {RIVALS}, got {method!r}")
