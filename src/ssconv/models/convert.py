"""One-call conversion of any CNN's ``nn.Conv2d`` layers to :class:`~ssconv.SSConv2d`.

Works on any ``nn.Module`` (this project's models, torchvision, timm): convolutions are found
by type, replaced in place (or on a copy), and a report says what happened to each of them.
With ``density=...`` the per-layer settings come from the budget solver
(:mod:`ssconv.models.budget`); otherwise the given settings are used where they fit.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from torch import nn

from ssconv.layers.factory import ConvFactory
from ssconv.layers.pattern import SSCPattern
from ssconv.layers.ssconv import DEFAULT_INIT_SCALE, INIT_SCALES, SSConv2d
from ssconv.models.budget import AUTO, LayerSpec, solve_budget
from ssconv.models.coverage import CoverageIssue, check_coverage
from ssconv.profile import counted_layers, model_weight_counts, weight_counts

__all__ = [
    "convert",
    "ConversionReport",
    "LayerDecision",
    "replace_convs",
    "replace_module",
    "select_layers",
    "DEFAULT_CLASSIFIER_PATTERNS",
    "KEEP_RULES",
]

log = logging.getLogger(__name__)

DEFAULT_CLASSIFIER_PATTERNS = (
    "classifier",
    "classifier.*",
    "*.classifier*",
    "fc",
    "head",
    "head.*",
)
#: Default rules that keep a conv dense (see :func:`convert`).
KEEP_RULES = ("stem", "pointwise", "depthwise", "classifier")
_DEFAULT_SETTINGS = {"groups": 1, "period": 4, "pointwise": True, "spatial": "full"}


@dataclass
class LayerDecision:
    """What :func:`convert` did with one ``nn.Conv2d``."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    groups: int
    converted: bool
    reason: str
    settings: str = ""
    target_density: float | None = None
    density: float = 1.0
    params: int = 0
    dense_params: int = 0

    @classmethod
    def unconverted(cls, name: str, conv: nn.Conv2d, reason: str | None) -> LayerDecision:
        """``conv`` left as it is (``reason``: why, or ``None`` for a layer still to convert)."""
        return cls(
            name,
            conv.in_channels,
            conv.out_channels,
            tuple(conv.kernel_size),
            conv.groups,
            converted=False,
            reason=reason or "",
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kernel_size"] = list(self.kernel_size)
        return d


@dataclass
class ConversionReport:
    """The converted model and one :class:`LayerDecision` per original convolution."""

    model: nn.Module
    layers: list[LayerDecision]
    target_density: float | None
    distribution: str
    weight_params: int
    dense_weight_params: int
    coverage: list[CoverageIssue] = field(default_factory=list)

    @property
    def density(self) -> float:
        """Achieved model density: nonzero over dense weights of all conv and linear layers."""
        return self.weight_params / self.dense_weight_params if self.dense_weight_params else 1.0

    @property
    def converted(self) -> list[LayerDecision]:
        return [d for d in self.layers if d.converted]

    def to_dict(self) -> dict:
        return {
            "target_density": self.target_density,
            "density": self.density,
            "distribution": self.distribution,
            "weight_params": self.weight_params,
            "dense_weight_params": self.dense_weight_params,
            "layers": [d.to_dict() for d in self.layers],
            "coverage": [asdict(c) for c in self.coverage],
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def table(self) -> str:
        header = ["layer", "shape", "action", "settings", "target", "density", "params"]
        rows = []
        for d in self.layers:
            k = "x".join(map(str, d.kernel_size))
            shape = f"{d.in_channels}->{d.out_channels} {k}" + (
                f" g{d.groups}" if d.groups > 1 else ""
            )
            rows.append(
                [
                    d.name,
                    shape,
                    "ssc" if d.converted else f"kept ({d.reason})",
                    d.settings,
                    "" if d.target_density is None else f"{d.target_density:.4f}",
                    f"{d.density:.4f}",
                    str(d.params),
                ]
            )
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        target = "" if self.target_density is None else f"target {self.target_density:.4f}, "
        lines.append(
            f"model density ({target}achieved): {self.density:.4f} = "
            f"{self.weight_params:,} / {self.dense_weight_params:,} conv+linear weights"
        )
        lines += [f"coverage: {c.message}" for c in self.coverage]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule called ``name`` (dotted path) by ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def replace_convs(model: nn.Module, conv_layer: ConvFactory) -> nn.Module:
    """Rebuild every ``nn.Conv2d`` of ``model`` with ``conv_layer`` (same geometry), in place.

    This is how models defined elsewhere (torchvision) take a conv factory.
    """
    for name, conv in [(n, m) for n, m in model.named_modules() if type(m) is nn.Conv2d]:
        new = conv_layer(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
        )
        if new is not conv:
            replace_module(model, name, new)
    return model


def _matches(name: str, patterns: Sequence[str]) -> str | None:
    return next((p for p in patterns if fnmatch.fnmatchcase(name, p)), None)


def convert(
    model: nn.Module,
    *,
    density: float | None = None,
    groups=AUTO,
    period=AUTO,
    pointwise=AUTO,
    spatial=AUTO,
    distribution: str = "uniform",
    skip: Sequence[str] = (),
    include: Sequence[str] = (),
    keep: Sequence[str] = KEEP_RULES,
    inplace: bool = False,
    copy_weights: bool = False,
    backend: str = "auto",
    fill: bool = True,
    warn_coverage: bool = True,
    init_scale: str = DEFAULT_INIT_SCALE,
) -> ConversionReport:
    """Replace the ``nn.Conv2d`` layers of ``model`` by :class:`SSConv2d`.

    Args:
        model: any ``nn.Module``.
        density: target model density (nonzero / dense conv+linear weights, kept layers
            included). When given, the solver picks each layer's settings; settings passed
            explicitly are then held fixed. When ``None``, the settings are used as given
            (defaults: ``groups=1, period=4, pointwise=True, spatial="full"``).
        groups: SSC groups on top of each conv's own ``groups``.
        period, pointwise, spatial: the SSC pattern (see :class:`SSConv2d`).
        distribution: layer-wise target densities, ``"uniform"`` or ``"erk"``.
        skip: extra name patterns (``fnmatch``) of convs to keep dense.
        include: name patterns of convs to convert even where a rule of ``keep`` would keep
            them dense.
        keep: default rules that keep convs dense, any of ``"stem"`` (the first conv, which
            sees the image), ``"pointwise"`` (1 x 1 convs), ``"depthwise"`` (one input channel
            per group) and ``"classifier"`` (convs named like a classifier head). Pass
            ``keep=("stem", "depthwise", "classifier")`` to convert 1 x 1 convs too.
        inplace: modify ``model`` itself instead of a deep copy.
        copy_weights: start each SSC layer from the dense weights on its pattern (otherwise
            the layers are freshly initialized, as for training from scratch).
        backend: execution backend of the new layers.
        fill: let the solver spend the budget left over by discrete choices.
        warn_coverage: emit a warning when a converted layer leaves channels uncovered.
        init_scale: the initialization scale of freshly initialized layers (ignored with
            ``copy_weights=True``): ``"dense"`` (default: Kaiming over the dense fan-in on the
            pattern, as pruning at initialization masks a dense init), ``"balanced"`` or
            ``"effective"`` (over each filter's nonzero fan-in; use it for networks without
            normalization after the convolutions). See :mod:`ssconv.sparsity.init` and the
            design study in ``docs/ssc.md``.
    """
    if init_scale not in INIT_SCALES:
        raise ValueError(f"init_scale must be one of {INIT_SCALES}, got {init_scale!r}")
    if density is not None and not (isinstance(density, (int, float)) and 0 < density <= 1):
        raise ValueError(f"density must be a number in (0, 1], got {density!r}")
    if not inplace:
        model = copy.deepcopy(model)
    convs = select_layers(model, skip=skip, include=include, keep=keep)
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
    patterns: dict[str, SSCPattern] = {}
    targets: dict[str, float] = {}
    if density is not None and not todo:
        kept = sorted({d.reason for d in decisions.values()})
        raise ValueError(
            f"density={density}: no conv layer to convert (kept: {', '.join(kept) or 'none'}); "
            f"pass include=[...] name patterns to convert layers the default rules keep"
        )
    if density is not None:
        specs = [
            LayerSpec(n, c.in_channels, c.out_channels, tuple(c.kernel_size), c.groups)
            for n, c in todo
        ]
        todo_ids = {id(c) for _, c in todo}
        fixed = sum(n for _, m, (n, _) in counted_layers(model) if id(m) not in todo_ids)
        chosen, layer_targets = solve_budget(
            specs,
            float(density),
            fixed_params=fixed,
            distribution=distribution,
            fill=fill,
            constraints=explicit,
        )
        for (name, _), pattern, t in zip(todo, chosen, layer_targets):
            patterns[name], targets[name] = pattern, t
    else:
        settings = {**_DEFAULT_SETTINGS, **explicit}
        for name, conv in todo:
            try:
                patterns[name] = SSCPattern(
                    conv.in_channels,
                    conv.out_channels,
                    conv.kernel_size,
                    conv.groups * int(settings["groups"]),
                    settings["period"],
                    settings["pointwise"],
                    settings["spatial"],
                )
            except ValueError as exc:
                decisions[name].reason = f"pattern does not fit: {exc}"

    for name, conv in todo:
        pattern = patterns.get(name)
        if pattern is None:
            continue
        layer = SSConv2d.from_conv2d(
            conv,
            period=pattern.period,
            pointwise=pattern.pointwise,
            spatial=pattern.spatial,
            groups=pattern.groups,
            backend=backend,
            copy_weights=copy_weights,
            init_scale=init_scale,
        )
        replace_module(model, name, layer)
        d = decisions[name]
        d.converted, d.reason = True, "converted"
        d.settings = pattern.describe()
        d.target_density = targets.get(name)

    for name, d in decisions.items():
        counts = weight_counts(model.get_submodule(name))
        assert counts is not None
        d.params, d.dense_params = counts
        d.density = d.params / d.dense_params

    weight, dense = model_weight_counts(model)
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
    )
    log.info(
        "converted %d of %d convs, density %.4f", len(report.converted), len(convs), report.density
    )
    return report


def select_layers(
    model: nn.Module,
    *,
    skip: Sequence[str] = (),
    include: Sequence[str] = (),
    keep: Sequence[str] = KEEP_RULES,
) -> list[tuple[str, nn.Conv2d, str | None]]:
    """Every ``nn.Conv2d`` of ``model`` with the reason it is kept dense (``None``: convert it).

    The one place that applies the skip rules, shared by :func:`convert` and the pruning
    baselines so that both touch the same layers at the same budget. See :func:`convert` for
    ``skip``, ``include`` and ``keep``.
    """
    convs = [(n, m) for n, m in model.named_modules() if type(m) is nn.Conv2d]
    stem = convs[0][0] if convs else None
    return [(n, m, _skip_reason(n, m, stem, skip, include, keep)) for n, m in convs]


def _skip_reason(
    name: str,
    conv: nn.Conv2d,
    stem: str | None,
    skip: Sequence[str],
    include: Sequence[str],
    keep: Sequence[str],
) -> str | None:
    unknown = set(keep) - set(KEEP_RULES)
    if unknown:
        raise ValueError(f"keep: unknown rule(s) {sorted(unknown)}; allowed: {KEEP_RULES}")
    pattern = _matches(name, skip)
    if pattern is not None:
        return f"skip pattern {pattern!r}"
    if any(k % 2 == 0 for k in conv.kernel_size):
        # SSC needs a centre tap (e.g. ConvNeXt's 2x2 stride-2 downsampling convs).
        return f"even kernel {tuple(conv.kernel_size)}"
    if _matches(name, include) is not None:
        return None
    if "stem" in keep and name == stem:
        return "stem"
    if "depthwise" in keep and conv.groups > 1 and conv.in_channels // conv.groups == 1:
        # One input channel per group: already as sparse as a channel pattern can make it.
        return "depthwise"
    if "pointwise" in keep and tuple(conv.kernel_size) == (1, 1):
        return "1x1 pointwise"
    if "classifier" in keep and _matches(name, DEFAULT_CLASSIFIER_PATTERNS) is not None:
        return "classifier"
    return None
