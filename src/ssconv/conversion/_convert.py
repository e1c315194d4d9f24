"""One-call conversion of any CNN's ``nn.Conv2d`` layers to :class:`~ssconv.SSConv2d`.

Works on any ``nn.Module`` (this project's models, torchvision, timm): convolutions are found
by type, replaced in place (or on a copy), and a report says what happened to each of them.
With ``density=...`` the per-layer settings come from the budget solver
(:mod:`ssconv.sparsity.budget`); otherwise the given settings are used where they fit.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from ssconv.conversion.coverage import check_coverage
from ssconv.conversion.report import (
    _FALLBACK_REASON,
    _LINEAR_REASON,
    ConversionReport,
    LayerDecision,
)
from ssconv.errors import BudgetInfeasibleError, NoConvertibleLayerError
from ssconv.layers.factory import DEFAULT_PERIOD
from ssconv.layers.linear import SSCLinear
from ssconv.layers.pattern import SSCPattern, resolve_period
from ssconv.layers.ssconv import DEFAULT_INIT_SCALE, INIT_SCALES, SSConv2d
from ssconv.sparsity.budget import (
    AUTO,
    LayerSpec,
    resolve_distribution,
    solve_budget,
)
from ssconv.sparsity.counting import counted_layers, model_weight_counts, weight_counts
from ssconv.sparsity.selection import (
    DEFAULT_CLASSIFIER_PATTERNS,
    KEEP_RULES,
    _is_same_pad_conv,
    _matches,
    select_layers,
)
from ssconv.utils.modules import replace_module

__all__ = [
    "convert",
    "ConversionReport",
    "LayerDecision",
    "load_dense_state_dict",
    "LoadResult",
    "SamePadSSConv2d",
]

log = logging.getLogger(__name__)

_DEFAULT_SETTINGS = {"groups": 1, "period": DEFAULT_PERIOD, "pointwise": True, "spatial": "full"}
_POINTWISE_REASON = "1x1 pointwise"


def _same_pad(x: Tensor, kernel_size, stride, dilation) -> Tensor:
    """TensorFlow 'SAME' padding computed from the input size (as timm's ``pad_same``)."""
    ih, iw = x.shape[-2:]
    pads = [
        max((math.ceil(i / s) - 1) * s + (k - 1) * d + 1 - i, 0)
        for i, k, s, d in zip((ih, iw), kernel_size, stride, dilation)
    ]
    ph, pw = pads
    if ph or pw:
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
    return x


class SamePadSSConv2d(SSConv2d):
    """:class:`SSConv2d` with TensorFlow 'SAME' padding computed from each input's size.

    What :func:`convert` turns timm's ``Conv2dSame`` into: the input is zero-padded as timm's
    ``pad_same`` does (the extra row / column at the bottom / right), then convolved with no
    padding, so outputs keep the original layer's shape and alignment at any input size.
    """

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(_same_pad(x, self.kernel_size, self.stride, self.dilation))


def convert(
    model: nn.Module,
    *,
    density: float | None = None,
    groups=AUTO,
    period=AUTO,
    pointwise=AUTO,
    spatial=AUTO,
    point_groups=1,
    distribution: str = AUTO,
    prefer: str = "weights",
    skip: Sequence[str] = (),
    include: Sequence[str] = (),
    keep: Sequence[str] = KEEP_RULES,
    pointwise_fallback: bool = True,
    linear_fallback: bool = True,
    linear_in_budget: bool = True,
    inplace: bool = False,
    copy_weights: bool = False,
    backend: str = "auto",
    fill: bool = True,
    warn_coverage: bool = True,
    init_scale: str = DEFAULT_INIT_SCALE,
    shuffle: bool = True,
) -> ConversionReport:
    """Replace the ``nn.Conv2d`` layers of ``model`` by :class:`SSConv2d`.

    Subclasses of ``nn.Conv2d`` are converted when their forward is the standard one; timm's
    ``Conv2dSame`` (padding computed from the input size) becomes a :class:`SamePadSSConv2d`
    that pads the same way; other subclasses with their own forward are kept and the report
    says why. ``nn.Linear`` layers are converted (to :class:`ssconv.layers.SSCLinear`) only by
    ``linear_fallback``, when the convolutions cannot carry a budget.

    Args:
        model: any ``nn.Module``.
        density: target model density (nonzero / dense conv+linear weights, kept layers
            included). When given, the solver picks each layer's settings; settings passed
            explicitly are then held fixed. When ``None``, the settings are used as given
            (defaults: ``groups=1, period=4, pointwise=True, spatial="full"``).
        groups: SSC groups on top of each conv's own ``groups``.
        period, pointwise, spatial: the SSC pattern (see :class:`SSConv2d`). ``period`` may
            also be ``"depthwise"``: in every layer the period equals the group's input width,
            so each filter has one spatial kernel and the spatial part runs as a (shifted)
            depthwise convolution, the form onnxruntime has a fast path for.
        point_groups: groups of each layer's 1 x 1 part per SSC group (``SSConv2d``'s
            ``point_groups`` is ``groups * point_groups``): ``1`` (default: the 1 x 1 weights
            span each group), an int, or ``"auto"`` (the solver may thin the 1 x 1 part to
            spend the weights on more spatial kernels; the design study in ``docs/ssc.md``).
        distribution: layer-wise target densities: ``"auto"`` (default: ERK's below density
            0.1, where the design study in ``docs/ssc.md`` measured them ahead of uniform
            densities, uniform from 0.1 up), ``"uniform"``, ``"erk"`` or ``"equal"`` (the same
            number of weights in every layer, as SynFlow allocates them). The report records
            the one used (:attr:`ConversionReport.distribution`).
        prefer: what the solver keeps within a layer's share of the budget: ``"weights"``
            (the densest pattern that fits) or ``"mixing"`` (only patterns that no cheaper one
            beats in input channels per filter: :func:`ssconv.sparsity.budget.mixing_front`).
        skip: extra name patterns (``fnmatch``) of convs to keep dense.
        include: name patterns of convs to convert even where a rule of ``keep`` would keep
            them dense.
        keep: default rules that keep convs dense, any of ``"stem"`` (the first conv, which
            sees the image), ``"pointwise"`` (1 x 1 convs), ``"depthwise"`` (one input channel
            per group) and ``"classifier"`` (convs named like a classifier head). Pass
            ``keep=("stem", "depthwise", "classifier")`` to convert 1 x 1 convs too.
        pointwise_fallback: with ``density``, when the convs the rules leave to convert cannot
            carry the budget (or there are none, as in MobileNet / EfficientNet / RegNet /
            ShuffleNet, whose 3 x 3 convs are depthwise or hold few weights), convert the
            1 x 1 convs the ``"pointwise"`` rule keeps too, as grouped pointwise SSC
            (``period=None``), and list them in :attr:`ConversionReport.pointwise_fallback`.
            Budgets the other layers carry are solved exactly as without it.
        linear_fallback: with ``density``, when the convs (1 x 1 fallback included) still
            cannot carry the budget (or there are none, as in ConvNeXt, whose 1 x 1 layers are
            ``nn.Linear``), convert ``nn.Linear`` layers too, as block-diagonal
            :class:`~ssconv.layers.SSCLinear` (SSC's 1 x 1 pattern; shuffled like the convs),
            first those that are not the classifier (the last ``nn.Linear`` and those named
            like a head), then the classifier too if the budget needs it; they are listed in
            :attr:`ConversionReport.linear_fallback`. Ignored with ``linear_in_budget=False``.
        linear_in_budget: count the ``nn.Linear`` layers in the
            budget (default, the model density of the paper). ``False`` sets ``density`` on
            the conv layers only, for networks whose classifier holds most weights
            (MobileNetV3-Small: 64 %); the report then gives both the conv density
            (:attr:`ConversionReport.budget_density`) and the model density.
        inplace: modify ``model`` itself instead of a deep copy.
        copy_weights: start each SSC layer from the dense weights on its pattern (otherwise
            the layers are freshly initialized, as for training from scratch). Use it to
            convert a pretrained model; :func:`load_dense_state_dict` does the same for a
            dense state_dict loaded after conversion.
        backend: execution backend of the new layers.
        fill: let the solver spend the budget left over by discrete choices.
        warn_coverage: emit a warning when a converted layer leaves channels uncovered.
        init_scale: the initialization scale of freshly initialized layers (ignored with
            ``copy_weights=True``): ``"dense"`` (default: Kaiming over the dense fan-in on the
            pattern, as pruning at initialization masks a dense init), ``"balanced"`` or
            ``"effective"`` (over each filter's nonzero fan-in; use it for networks without
            normalization after the convolutions). See :mod:`ssconv.sparsity.init` and the
            design study in ``docs/ssc.md``.
        shuffle: let each converted layer with several channel groups read its input in
            ShuffleNet's shuffled channel order (``SSConv2d(shuffle=True)``), so that the
            groups of stacked layers mix (default; the design study in ``docs/ssc.md``
            measured it). It changes no weight count and, on the fused kernels, no run time.
            Convs that are grouped themselves (``groups > 1``) are never shuffled.
    """
    if init_scale not in INIT_SCALES:
        raise ValueError(f"init_scale must be one of {INIT_SCALES}, got {init_scale!r}")
    if density is not None and not (isinstance(density, (int, float)) and 0 < density <= 1):
        raise ValueError(f"density must be a number in (0, 1], got {density!r}")
    distribution = resolve_distribution(distribution, density)  # (checks it too)
    if not inplace:
        model = copy.deepcopy(model)
    convs = select_layers(model, skip=skip, include=include, keep=keep, same_padding=True)
    decisions: dict[str, LayerDecision] = {}
    todo: list[tuple[str, nn.Conv2d]] = []
    for name, conv, reason in convs:
        decision = LayerDecision.unconverted(name, conv, reason)
        decisions[name] = decision
        if reason is None:
            todo.append((name, conv))

    explicit = {
        k: v
        for k, v in {
            "groups": groups,
            "period": period,
            "pointwise": pointwise,
            "spatial": spatial,
        }.items()
        if v != AUTO
    }
    if point_groups != 1:
        explicit["point_groups"] = point_groups
    patterns: dict[str, SSCPattern] = {}
    targets: dict[str, float] = {}
    fallback: list[str] = []
    linear_ids = {id(m) for _, m, _ in counted_layers(model) if isinstance(m, nn.Linear)}
    linear_converted: list[str] = []
    linear_candidates: list[tuple[str, nn.Linear, bool]] = []
    if density is not None:
        pointwise_convs = [(n, c) for n, c, r in convs if r == _POINTWISE_REASON]
        attempts: list[tuple[list, dict]] = [(todo, {})]
        if pointwise_fallback and pointwise_convs:
            extra = {n for n, _ in pointwise_convs}
            with_pw = [(n, c) for n, c, r in convs if r is None or n in extra]
            attempts.append((with_pw, {n: {"period": None} for n in extra}))
        if linear_fallback and linear_in_budget:
            linear_candidates = _linear_candidates(model, skip)
            layers, constraints = attempts[-1]
            for head in (False, True):
                extra_linear = [(n, m) for n, m, is_head in linear_candidates if is_head == head]
                if not extra_linear:
                    continue
                layers = layers + extra_linear
                constraints = {**constraints, **{n: {"period": None} for n, _ in extra_linear}}
                attempts.append((layers, constraints))
        solved = None
        error: BudgetInfeasibleError | None = None
        for layers, layer_constraints in attempts:
            if not layers:
                continue
            try:
                solved = _solve(
                    model,
                    layers,
                    float(density),
                    linear_ids=set() if linear_in_budget else linear_ids,
                    distribution=distribution,
                    prefer=prefer,
                    fill=fill,
                    constraints=explicit,
                    layer_constraints=layer_constraints,
                )
            except BudgetInfeasibleError as exc:
                error = exc
                continue
            todo = layers
            linear_converted = [n for n, m in layers if isinstance(m, nn.Linear)]
            fallback = [n for n in layer_constraints if n not in linear_converted]
            break
        if solved is None:
            # No attempt had layers to convert (error None), or none met the budget.
            kind = NoConvertibleLayerError if error is None else BudgetInfeasibleError
            raise kind(
                _budget_hint(
                    model,
                    decisions,
                    float(density),
                    error,
                    keep=keep,
                    linear_in_budget=linear_in_budget,
                    tried_fallback=pointwise_fallback and bool(pointwise_convs),
                    tried_linear=any(
                        isinstance(m, nn.Linear) for layers, _ in attempts for _, m in layers
                    ),
                    linear_fallback=linear_fallback,
                )
            )
        for (name, _), pattern, t in zip(todo, *solved):
            patterns[name], targets[name] = pattern, t
        if fallback:
            log.warning(
                "density=%s: the convs the keep rules leave cannot carry the budget; converting "
                "%d 1x1 convs too (period=None; pointwise_fallback=False keeps them dense)",
                density,
                len(fallback),
            )
        if linear_converted:
            log.warning(
                "density=%s: the convs cannot carry the budget; converting %d nn.Linear layers "
                "to SSCLinear too (linear_fallback=False keeps them dense)",
                density,
                len(linear_converted),
            )
            for name, linear, _ in linear_candidates:
                decisions[name] = LayerDecision.unconverted(
                    name, linear, None if name in linear_converted else "classifier"
                )
    else:
        settings = {**_DEFAULT_SETTINGS, **explicit}
        if settings.get("point_groups", 1) == AUTO:
            raise ValueError(
                "point_groups='auto' needs density= (the solver picks it); pass an int"
            )
        for name, conv in todo:
            groups_total = conv.groups * int(settings["groups"])
            try:
                patterns[name] = SSCPattern(
                    conv.in_channels,
                    conv.out_channels,
                    conv.kernel_size,
                    groups_total,
                    resolve_period(settings["period"], conv.in_channels, groups_total),
                    settings["pointwise"],
                    settings["spatial"],
                    groups_total * int(settings.get("point_groups", 1)),
                )
            except ValueError as exc:
                decisions[name].reason = f"pattern does not fit: {exc}"

    fallback_set = set(fallback)
    for name, conv in todo:
        pattern = patterns.get(name)
        if pattern is None:
            continue
        if isinstance(conv, nn.Linear):
            linear = SSCLinear.from_linear(
                conv,
                groups=pattern.groups,
                shuffle=shuffle,
                copy_weights=copy_weights,
                init_scale=init_scale,
            )
            replace_module(model, name, linear)
            d = decisions[name]
            d.converted = True
            d.reason = _LINEAR_REASON
            d.settings = f"G={linear.groups}" + (", shuffled" if linear.shuffle else "")
            d.target_density = targets.get(name)
            continue
        cls = SamePadSSConv2d if _is_same_pad_conv(conv) else SSConv2d
        layer = cls.from_conv2d(
            conv,
            period=pattern.period,
            pointwise=pattern.pointwise,
            spatial=pattern.spatial,
            groups=pattern.groups,
            backend=backend,
            copy_weights=copy_weights,
            init_scale=init_scale,
            shuffle=shuffle and conv.groups == 1,
            point_groups=pattern.point_groups,
        )
        replace_module(model, name, layer)
        d = decisions[name]
        d.converted = True
        d.reason = _FALLBACK_REASON if name in fallback_set else "converted"
        d.settings = pattern.describe() + (", shuffled" if layer.shuffle else "")
        d.target_density = targets.get(name)

    for name, d in decisions.items():
        counts = weight_counts(model.get_submodule(name))
        assert counts is not None
        d.params, d.dense_params = counts
        d.density = d.params / d.dense_params

    weight, dense = model_weight_counts(model)
    budget_weight = budget_dense = None
    if not linear_in_budget:
        budget_weight, budget_dense = weight, dense
        for _, m, (n, d) in counted_layers(model):
            if isinstance(m, nn.Linear):
                budget_weight, budget_dense = budget_weight - n, budget_dense - d
    issues = [
        issue
        for name in decisions
        if decisions[name].converted
        for issue in check_coverage(model.get_submodule(name), name)
    ]
    if warn_coverage and issues:
        warnings.warn("SSC coverage: " + "; ".join(i.message for i in issues), stacklevel=2)
    report = ConversionReport(
        model=model,
        layers=list(decisions.values()),
        target_density=None if density is None else float(density),
        distribution=distribution,
        weight_params=weight,
        dense_weight_params=dense,
        coverage=issues,
        pointwise_fallback=fallback,
        linear_fallback=linear_converted,
        linear_in_budget=linear_in_budget,
        budget_weight_params=budget_weight,
        budget_dense_weight_params=budget_dense,
    )
    log.info(
        "converted %d of %d convs, density %.4f", len(report.converted), len(convs), report.density
    )
    return report


def _solve(
    model: nn.Module,
    layers: list[tuple[str, nn.Conv2d]],
    density: float,
    *,
    linear_ids: set[int],
    **kwargs,
) -> tuple[list[SSCPattern], list[float]]:
    specs = [
        LayerSpec(n, c.in_features, c.out_features, (1, 1), 1)
        if isinstance(c, nn.Linear)
        else LayerSpec(n, c.in_channels, c.out_channels, tuple(c.kernel_size), c.groups)
        for n, c in layers
    ]
    todo_ids = {id(c) for _, c in layers}
    fixed = sum(
        n
        for _, m, (n, _) in counted_layers(model)
        if id(m) not in todo_ids and id(m) not in linear_ids
    )
    return solve_budget(specs, density, fixed_params=fixed, **kwargs)


def _budget_hint(
    model: nn.Module,
    decisions: dict[str, LayerDecision],
    density: float,
    error: BudgetInfeasibleError | None,
    *,
    keep: Sequence[str],
    linear_in_budget: bool,
    tried_fallback: bool,
    tried_linear: bool = False,
    linear_fallback: bool = True,
) -> str:
    """The error of an unmet budget: what stays dense, its share, and the exact fix."""
    if error is None:
        kept = sorted({d.reason for d in decisions.values()})
        head = (
            f"density={density}: no conv layer to convert "
            f"(kept: {', '.join(kept) or 'no nn.Conv2d in the model'})"
        )
    else:
        head = error.problem
    counts = {name: c for name, _, c in counted_layers(model)}
    linear = [n for n, m, _ in counted_layers(model) if isinstance(m, nn.Linear)]
    total = sum(d for n, (_, d) in counts.items() if linear_in_budget or n not in linear)

    def share(names: list[str]) -> float:
        return sum(counts[n][1] for n in names) / max(total, 1)

    groups: dict[str, list[str]] = {}
    for d in decisions.values():
        if not d.reason or (tried_fallback and d.reason == _POINTWISE_REASON):
            continue  # in the last attempt
        groups.setdefault(d.reason.split(" (")[0], []).append(d.name)
    rules = {
        "stem": "stem",
        "depthwise": "depthwise",
        "classifier": "classifier",
        _POINTWISE_REASON: "pointwise",
    }
    parts = []
    if linear and linear_in_budget and not tried_linear:
        shown = ", ".join(linear[:3]) + (", ..." if len(linear) > 3 else "")
        fix = (
            "pass linear_fallback=True to convert them to SSCLinear, or "
            if not linear_fallback
            else ""
        )
        parts.append(
            f"{len(linear)} nn.Linear layer(s) ({shown}) hold {share(linear):.4f}: {fix}pass "
            f"linear_in_budget=False to set density on the conv layers only"
        )
    for reason, names in sorted(groups.items(), key=lambda kv: -share(kv[1])):
        what = f"{len(names)} conv(s) kept as {reason!r} hold {share(names):.4f}"
        if reason in rules and rules[reason] in keep and len(names) > 3:
            fix = f"pass keep={tuple(k for k in keep if k != rules[reason])!r} to convert them"
        elif reason in rules:
            fix = f"pass include={names!r} to convert them"
        elif reason.startswith("skip pattern"):
            fix = "drop that pattern from skip= to convert them"
        else:
            fix = "SSC cannot convert them"
        parts.append(f"{what}: {fix}")
    what = [w for w, t in (("1x1 convs", tried_fallback), ("nn.Linear layers", tried_linear)) if t]
    tried = f" ({' and '.join(what)} included: the fallback was tried)" if what else ""
    listing = "; ".join(parts) if parts else "none"
    return f"{head}{tried}. Dense in the budget: {listing}. Or raise density"


def _linear_candidates(model: nn.Module, skip: Sequence[str]) -> list[tuple[str, nn.Linear, bool]]:
    """The ``nn.Linear`` layers the linear fallback may convert: ``(name, layer, is_head)``;
    the head is the last ``nn.Linear`` and any named like a classifier. Subclasses with their
    own forward and names matching ``skip`` stay dense."""
    linears = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear)
        and (type(m).forward is nn.Linear.forward or _is_timm_linear(m))
        # nn.MultiheadAttention reads its out_proj's .weight itself, never calling it; a lazy
        # layer has no shape before its first forward.
        and not isinstance(m, (NonDynamicallyQuantizableLinear, LazyModuleMixin))
        and _matches(n, skip) is None
    ]
    last = linears[-1][0] if linears else None
    return [
        (n, m, n == last or _matches(n, DEFAULT_CLASSIFIER_PATTERNS) is not None)
        for n, m in linears
    ]


def _is_timm_linear(m: nn.Module) -> bool:
    # timm.layers.Linear: nn.Linear whose forward casts weight and bias under TorchScript only.
    return type(m).__name__ == "Linear" and type(m).__module__.startswith("timm.")


class LoadResult(NamedTuple):
    """What :func:`load_dense_state_dict` could not match (empty with ``strict=True``)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def load_dense_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor], *, strict: bool = True
) -> LoadResult:
    """Load the state_dict of the dense model into its conversion ``model``.

    For each :class:`SSConv2d` of ``model`` the dense ``<name>.weight`` (shape ``(C_out,
    C_in / groups, kh, kw)`` of the original ``nn.Conv2d``; ``(out_features, in_features)``
    for an :class:`~ssconv.layers.SSCLinear`) is restricted to the SSC pattern and copied
    into ``weight_spatial`` / ``weight_point`` (the weights off the pattern are dropped), as
    ``convert(..., copy_weights=True)`` does; every other key (biases, normalization
    statistics, dense layers) is loaded as :meth:`nn.Module.load_state_dict` loads it. Use it
    to start SSC from pretrained dense weights converted beforehand.

    With ``strict=True`` (default) keys of ``state_dict`` that match nothing in ``model``, and
    keys of ``model`` that ``state_dict`` lacks, raise :class:`KeyError` naming them before
    anything is loaded; with ``strict=False`` they are returned.
    """
    ssc = {name: m for name, m in model.named_modules() if isinstance(m, (SSConv2d, SSCLinear))}
    own = model.state_dict()
    ssc_keys = {
        f"{name}.{key}" if name else key
        for name, m in ssc.items()
        for key in m.state_dict()
        if key != "bias"
    }
    dense_keys = {f"{name}.weight" if name else "weight": name for name in ssc}
    missing = sorted(k for k in dense_keys if k not in state_dict)
    missing += sorted(k for k in own if k not in ssc_keys and k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own and k not in dense_keys)
    if strict and (missing or unexpected):
        parts = []
        if unexpected:
            parts.append(f"unexpected keys (in state_dict, not in model): {unexpected}")
        if missing:
            parts.append(f"missing keys (in model, not in state_dict): {missing}")
        raise KeyError(
            "load_dense_state_dict: " + "; ".join(parts) + ". Pass the state_dict of the "
            "dense model that was converted (same architecture and names), or strict=False "
            "to load the keys that match"
        )
    for key, name in dense_keys.items():
        if key not in state_dict:
            continue
        layer = ssc[name]
        weight = state_dict[key]
        if isinstance(layer, SSCLinear):
            if tuple(weight.shape) != (layer.out_features, layer.in_features):
                raise ValueError(
                    f"load_dense_state_dict: {key!r} has shape {tuple(weight.shape)}, the dense "
                    f"nn.Linear behind this SSCLinear has "
                    f"{(layer.out_features, layer.in_features)}"
                )
            layer.load_dense_weight(weight.to(layer.weight_point))
            continue
        expected = (layer.out_channels, layer.in_channels // layer.dense_groups, *layer.kernel_size)
        if tuple(weight.shape) != expected:
            raise ValueError(
                f"load_dense_state_dict: {key!r} has shape {tuple(weight.shape)}, the dense conv "
                f"behind this SSC layer has {expected}"
            )
        param = layer.weight_spatial if layer.weight_spatial is not None else layer.weight_point
        weight = weight.to(param)
        layer.load_conv_weight(weight)
    rest = {k: v for k, v in state_dict.items() if k not in dense_keys and k in own}
    model.load_state_dict(rest, strict=False)
    return LoadResult(missing, unexpected)
