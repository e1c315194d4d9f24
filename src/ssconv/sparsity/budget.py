"""Budget matching: choose per-layer SSC settings that meet a parameter budget.

Follows the project's specification (section 5): model density is the nonzero weights of the
convolution and linear layers over their dense count; layers that stay dense (the stem, the
classifier, skipped layers) count in the totals. Layer-wise target densities are uniform, or
follow the Erdos-Renyi-Kernel (ERK) rule of "Rigging the Lottery: Making All Tickets Winners"
(Evci, Gale, Menick, Castro, Elsen, ICML 2020, arXiv:1911.11134): a layer's density is
proportional to ``(C_in + C_out + kh + kw) / (C_in * C_out * kh * kw)``, scaled to meet the
budget, capped at 1.

For each layer the solver picks, among all valid (groups, period, pointwise, spatial), the
pattern whose density is closest to the layer's target without exceeding it; among equal
densities it prefers better spatial coverage of the input channels, then fewer executed MACs,
then fewer groups. A greedy pass then spends the budget left over by the discrete choices
(upgrading layers to their next denser pattern while the model's total stays within budget),
so that the achieved model density lands close to the target.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ssconv.errors import BudgetInfeasibleError
from ssconv.layers.pattern import SSCPattern, resolve_period

__all__ = [
    "LayerSpec",
    "candidate_patterns",
    "mixing_front",
    "erk_densities",
    "equal_densities",
    "layer_densities",
    "uniform_densities",
    "solve_budget",
    "choose_per_layer",
    "AUTO",
    "AUTO_ERK_BELOW",
    "DISTRIBUTIONS",
    "resolve_distribution",
    "PREFERENCES",
]

AUTO = "auto"
#: Layer-wise density distributions (of SSC, the structured baselines and pruning):
#: the same density everywhere, ERK's, or the same number of weights in every layer ("equal",
#: the allocation SynFlow converges to: docs/ssc.md, "Design study"); ``"auto"`` (SSC's
#: default) is ERK's below model density :data:`AUTO_ERK_BELOW` and uniform from there up.
DISTRIBUTIONS = ("auto", "uniform", "erk", "equal")
#: Below this model density ``distribution="auto"`` takes ERK layer densities: on the design
#: study's 6-epoch Fashion-MNIST ResNet-20 they gained SSC -0.07 point at 0.10 (3 seeds),
#: +0.25 at 0.05 (6 seeds) and +0.82 at 0.02 (3 seeds) over uniform densities (docs/ssc.md).
AUTO_ERK_BELOW = 0.1
#: What the solver keeps when a layer's share of the budget admits several patterns:
#: ``"weights"`` the densest pattern that fits; ``"mixing"`` only patterns no cheaper one
#: beats in input channels per filter (design study, screen 7, docs/ssc.md).
PREFERENCES = ("weights", "mixing")
_EPS = 1e-12
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerSpec:
    """The geometry of one convolution to convert (``groups`` is the conv's own grouping)."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    groups: int = 1

    @property
    def dense_params(self) -> int:
        return self.out_channels * (self.in_channels // self.groups) * math.prod(self.kernel_size)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def candidate_patterns(
    layer: LayerSpec,
    *,
    groups=AUTO,
    period=AUTO,
    pointwise=AUTO,
    spatial=AUTO,
    point_groups=1,
    pointwise_only: bool = False,
) -> list[SSCPattern]:
    """All valid SSC patterns for ``layer``; a setting other than ``"auto"`` is held fixed.

    ``groups`` counts SSC groups on top of the conv's own (the pattern's group count is
    ``layer.groups * groups``). With ``period="auto"``, patterns without any spatial kernel
    (``period=None``) are proposed for K x K layers only when ``pointwise_only`` is set.
    ``period="depthwise"`` sets the period to each group's input width (one spatial kernel
    per filter).

    ``point_groups`` counts the 1 x 1 part's groups per SSC group (``SSCPattern.point_groups``
    is ``groups * point_groups``): ``1`` (the 1 x 1 part spans each group), an int, or
    ``"auto"`` (every valid count; only patterns with both a spatial and a 1 x 1 part vary,
    elsewhere a finer 1 x 1 grouping is just more ``groups``).
    """
    if point_groups != AUTO and (
        not isinstance(point_groups, int) or isinstance(point_groups, bool) or point_groups < 1
    ):
        raise ValueError(f"point_groups must be a positive int or 'auto', got {point_groups!r}")
    common = math.gcd(layer.in_channels, layer.out_channels)
    if groups == AUTO:
        total_groups = [g for g in _divisors(common) if g % layer.groups == 0]
    else:
        total_groups = [layer.groups * int(groups)]
    pw_options = [True, False] if pointwise == AUTO else [bool(pointwise)]
    if spatial == AUTO:
        sp_options = ["full", "checkerboard"] if layer.kernel_size != (1, 1) else ["full"]
    else:
        sp_options = [spatial]
    out = []
    for g in total_groups:
        if layer.in_channels % g or layer.out_channels % g:
            continue
        width = layer.in_channels // g
        # "auto" does not propose period=None (no spatial kernel at all) for a K x K layer
        # unless asked: a stage of 1 x 1 layers loses all spatial filtering; spatial patterns
        # reach densities down to a checkerboard depthwise conv.
        if period != AUTO:
            periods: list[int | None] = [resolve_period(period, layer.in_channels, g)]
        elif layer.kernel_size == (1, 1) or pointwise_only:
            periods = [*_divisors(width), None]
        else:
            periods = list(_divisors(width))
        for p in periods:
            for pw in pw_options:
                for sp in sp_options:
                    if p is None and (not pw or sp != "full"):
                        continue
                    if p is None or p == 1 or not pw:
                        ratios = [1]  # no spatial or no 1 x 1 part: nothing to split
                    elif point_groups != AUTO:
                        ratios = [point_groups]
                    else:
                        ratios = _divisors(math.gcd(width // p, layer.out_channels // g))
                    for r in ratios:
                        try:
                            out.append(
                                SSCPattern(
                                    layer.in_channels,
                                    layer.out_channels,
                                    layer.kernel_size,
                                    g,
                                    p,
                                    pw,
                                    sp,
                                    g * r,
                                )
                            )
                        except ValueError:
                            continue
    return out


def mixing_front(cands: Sequence[SSCPattern]) -> list[SSCPattern]:
    """The candidates that no other candidate with at most as many weights beats in input
    channels per filter (:attr:`SSCPattern.fan_in_channels`) at no less spatial coverage;
    order kept. A pattern reading 2 channels per filter is dropped when one as cheap reads 8:
    channel mixing is kept, and spatial taps or groups are given up for it."""
    return [
        c
        for c in cands
        if not any(
            d.num_params <= c.num_params
            and d.fan_in_channels > c.fan_in_channels
            and d.spatial_coverage >= c.spatial_coverage
            for d in cands
        )
    ]


def _rank_key(pattern: SSCPattern) -> tuple:
    # Sort: denser first; at equal density better spatial coverage of the input channels (a
    # layer with no spatial kernel at all is the last resort), then fewer executed MACs, fewer
    # groups, full before checkerboard, pointwise before not.
    return (
        -pattern.num_params,
        -pattern.spatial_coverage,
        pattern.executed_params,
        pattern.groups,
        pattern.spatial != "full",
        not pattern.pointwise,
        pattern.point_groups,
    )


def uniform_densities(layers: Sequence[LayerSpec], target: float, fixed_params: int) -> list[float]:
    """The same density for every layer, so that the model (with ``fixed_params`` dense weights
    outside ``layers``) meets ``target``."""
    total = sum(layer.dense_params for layer in layers) + fixed_params
    free = sum(layer.dense_params for layer in layers)
    budget = target * total - fixed_params
    if budget <= 0 or free == 0:
        raise _infeasible(target, fixed_params, total)
    return [min(1.0, budget / free)] * len(layers)


def _proportional_densities(
    layers: Sequence[LayerSpec], target: float, fixed_params: int, score: list[float]
) -> list[float]:
    """Layer densities proportional to ``score`` meeting ``target`` over layers plus fixed
    weights; layers whose density would exceed 1 are made dense and the scale is solved
    again."""
    total = sum(layer.dense_params for layer in layers) + fixed_params
    budget = target * total - fixed_params
    if budget <= 0:
        raise _infeasible(target, fixed_params, total)
    dense_set: set[int] = set()
    while True:
        if len(dense_set) == len(layers):
            return [1.0] * len(layers)  # the budget allows every layer dense
        remaining = budget - sum(layers[i].dense_params for i in dense_set)
        weighted = sum(
            score[i] * layers[i].dense_params for i in range(len(layers)) if i not in dense_set
        )
        if remaining <= 0 or weighted == 0:
            raise _infeasible(target, fixed_params, total)
        eps = remaining / weighted
        over = {i for i in range(len(layers)) if i not in dense_set and eps * score[i] > 1}
        if not over:
            break
        dense_set |= over
    return [1.0 if i in dense_set else eps * score[i] for i in range(len(layers))]


def erk_densities(layers: Sequence[LayerSpec], target: float, fixed_params: int) -> list[float]:
    """ERK layer densities (Evci et al. 2020) meeting ``target`` over layers plus fixed weights.

    Layers whose ERK density would exceed 1 are made dense and the scale is solved again.
    """
    score = [
        (layer.in_channels + layer.out_channels + sum(layer.kernel_size))
        / (layer.in_channels * layer.out_channels * math.prod(layer.kernel_size))
        for layer in layers
    ]
    return _proportional_densities(layers, target, fixed_params, score)


def equal_densities(layers: Sequence[LayerSpec], target: float, fixed_params: int) -> list[float]:
    """The same number of weights in every layer, meeting ``target`` over layers plus fixed
    weights: SynFlow's layer allocation, which its conservation of synaptic flow drives
    towards (Tanaka et al. 2020; at density 0.05 on ResNet-20 its layers keep 611-849 weights
    each), so that narrow layers are the densest. Layers smaller than their share are made
    dense and the rest is shared again (densities proportional to ``1 / dense weights``)."""
    score = [1.0 / layer.dense_params for layer in layers]
    return _proportional_densities(layers, target, fixed_params, score)


def resolve_distribution(distribution: str, density: float | None) -> str:
    """The concrete distribution ``distribution`` stands for at model density ``density``:
    ``"auto"`` is ``"erk"`` below :data:`AUTO_ERK_BELOW` and ``"uniform"`` otherwise (also
    without a density); the others stand for themselves."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if distribution != AUTO:
        return distribution
    return "erk" if density is not None and density < AUTO_ERK_BELOW else "uniform"


def layer_densities(
    distribution: str, layers: Sequence[LayerSpec], target: float, fixed_params: int
) -> list[float]:
    """The layer-wise target densities of ``distribution`` (one of :data:`DISTRIBUTIONS`;
    ``"auto"`` resolved at ``target`` by :func:`resolve_distribution`)."""
    make = {"uniform": uniform_densities, "erk": erk_densities, "equal": equal_densities}
    return make[resolve_distribution(distribution, target)](layers, target, fixed_params)


def _infeasible(target: float, fixed: int, total: int) -> BudgetInfeasibleError:
    return BudgetInfeasibleError(
        f"density={target} cannot be met: the layers kept dense (stem, classifier, skipped) "
        f"alone hold {fixed} of {total} weights ({fixed / total:.4f})",
        "raise density or convert some of them (ssconv.convert's include= names layers, keep= "
        "drops a rule)",
    )


def solve_budget(
    layers: Sequence[LayerSpec],
    target: float,
    *,
    fixed_params: int = 0,
    distribution: str = AUTO,
    fill: bool = True,
    constraints: dict | None = None,
    layer_constraints: dict[str, dict] | None = None,
    prefer: str = "weights",
) -> tuple[list[SSCPattern], list[float]]:
    """Choose one SSC pattern per layer for a model-level target density.

    Args:
        layers: the convolutions to convert.
        target: model density (nonzero / dense weights of all conv and linear layers).
        fixed_params: dense weights of the conv/linear layers that are not converted.
        distribution: ``"auto"`` (ERK below density 0.1, else uniform), ``"uniform"``,
            ``"erk"`` or ``"equal"`` layer-wise target densities (:func:`layer_densities`).
        fill: spend the budget left over by the discrete per-layer choices (greedy).
        constraints: settings held fixed (``groups``, ``period``, ``pointwise``, ``spatial``,
            ``point_groups``: see :func:`candidate_patterns`).
        layer_constraints: per layer name, settings held fixed on top of ``constraints``
            (e.g. ``{"period": None}`` for the 1 x 1 layers :func:`ssconv.convert` adds).
        prefer: ``"weights"`` (each layer gets the densest pattern within its share) or
            ``"mixing"`` (only the patterns of :func:`mixing_front` are considered).

    Returns:
        ``(patterns, layer_targets)``.
    """
    if prefer not in PREFERENCES:
        raise ValueError(f"prefer must be one of {PREFERENCES}, got {prefer!r}")
    constraints = constraints or {}
    layer_constraints = layer_constraints or {}

    def solve(pointwise_only: bool):
        def options(layer: LayerSpec) -> list[SSCPattern]:
            fixed = {**constraints, **layer_constraints.get(layer.name, {})}
            cands = candidate_patterns(layer, pointwise_only=pointwise_only, **fixed)
            if prefer == "mixing":
                cands = mixing_front(cands)
            cands = _dedupe(sorted(cands, key=_rank_key))
            if not cands:
                raise ValueError(f"no SSC pattern fits layer {layer.name!r} with {fixed}")
            return cands

        return choose_per_layer(
            layers, target, options, fixed_params=fixed_params, distribution=distribution, fill=fill
        )

    try:
        return solve(pointwise_only=False)
    except BudgetInfeasibleError:
        if constraints.get("period", AUTO) != AUTO:
            raise
    # Even the sparsest spatial patterns exceed the budget (e.g. a dense classifier holding
    # most of it): allow layers without spatial kernels, as a last resort.
    log.warning("density=%s needs layers without spatial kernels (period=None)", target)
    return solve(pointwise_only=True)


def choose_per_layer(
    layers: Sequence[LayerSpec],
    target: float,
    options: Callable[[LayerSpec], list],
    *,
    fixed_params: int = 0,
    distribution: str = "uniform",
    fill: bool = True,
) -> tuple[list, list[float]]:
    """The budget solver for any family of discrete per-layer structures.

    ``options(layer)`` lists the layer's candidates (objects with ``num_params``), densest and
    best first, one per distinct size. Layers whose sparsest candidate is denser than their
    share of the budget get that candidate, and the others share what is left (keeping the
    uniform / ERK proportions); :class:`~ssconv.errors.BudgetInfeasibleError` when even the
    sparsest choices exceed the budget.
    """
    if not 0 < target <= 1:
        raise ValueError(f"density must be in (0, 1], got {target}")
    targets = layer_densities(distribution, layers, target, fixed_params)
    total = sum(layer.dense_params for layer in layers) + fixed_params
    budget = math.floor(target * total + 1e-9) - fixed_params
    cand_lists = [options(layer) for layer in layers]
    floors = [c[-1].num_params for c in cand_lists]
    if sum(floors) > budget:
        raise BudgetInfeasibleError(
            f"density={target} cannot be met with this structure: its sparsest choice per layer "
            f"already holds {sum(floors) + fixed_params} of {total} weights "
            f"({(sum(floors) + fixed_params) / total:.4f})",
            "raise density",
        )
    targets = _apply_floors(layers, targets, floors, budget)
    chosen: list[int] = []
    for layer, t, cands in zip(layers, targets, cand_lists):
        limit = t * layer.dense_params + _EPS
        chosen.append(
            next((i for i, c in enumerate(cands) if c.num_params <= limit), len(cands) - 1)
        )
    if fill:
        limits = [t * layer.dense_params for layer, t in zip(layers, targets)]
        _fill(cand_lists, chosen, budget, limits)
    return [cand_lists[i][chosen[i]] for i in range(len(layers))], targets


def _apply_floors(
    layers: Sequence[LayerSpec], targets: list[float], floors: list[int], budget: int
) -> list[float]:
    """Raise targets below a layer's sparsest option to it; scale the rest to fit ``budget``."""
    targets = list(targets)
    floored: set[int] = set()
    while True:
        new = {
            i
            for i, (layer, t) in enumerate(zip(layers, targets))
            if i not in floored and floors[i] > t * layer.dense_params + _EPS
        }
        if not new:
            return targets
        floored |= new
        for i in floored:
            targets[i] = floors[i] / layers[i].dense_params
        rest = [i for i in range(len(layers)) if i not in floored]
        wanted = sum(targets[i] * layers[i].dense_params for i in rest)
        left = budget - sum(floors[i] for i in floored)
        if not rest or wanted <= 0:
            return targets
        scale = left / wanted
        for i in rest:
            targets[i] = min(1.0, targets[i] * scale)


def _dedupe(cands: Iterable) -> list:
    """Keep the best-ranked pattern per distinct parameter count (input sorted by rank)."""
    out: list[SSCPattern] = []
    seen: set[int] = set()
    for c in cands:
        if c.num_params not in seen:
            seen.add(c.num_params)
            out.append(c)
    return out


def _fill(options: list[list], chosen: list[int], budget: int, limits: Sequence[float]) -> None:
    """Greedily upgrade layers to their next denser pattern while the sum stays in ``budget``.

    Each round upgrades the layer whose new weight count overshoots its own target (``limits``)
    the least, so the layer-wise distribution (uniform or ERK) is kept as well as the discrete
    choices allow.
    """
    used = sum(options[i][chosen[i]].num_params for i in range(len(options)))
    while True:
        slack = budget - used
        best: tuple[float, int] | None = None  # (overshoot ratio, layer)
        for i, cands in enumerate(options):
            if chosen[i] == 0:
                continue
            nxt = cands[chosen[i] - 1]
            gain = nxt.num_params - cands[chosen[i]].num_params
            if gain <= slack:
                ratio = nxt.num_params / max(limits[i], _EPS)
                if best is None or ratio < best[0]:
                    best = (ratio, i)
        if best is None:
            return
        i = best[1]
        used += options[i][chosen[i] - 1].num_params - options[i][chosen[i]].num_params
        chosen[i] -= 1
