"""What :func:`ssconv.convert` did: one :class:`LayerDecision` per convolution and the model's
:class:`ConversionReport` (table, JSON)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from torch import nn

from ssconv.conversion.coverage import CoverageIssue
from ssconv.utils.text import text_table

__all__ = ["ConversionReport", "LayerDecision"]


_FALLBACK_REASON = "converted (1x1 fallback)"
_LINEAR_REASON = "converted (linear fallback)"
_ACTIONS = {_FALLBACK_REASON: "ssc (1x1 fallback)", _LINEAR_REASON: "ssc linear (fallback)"}


@dataclass
class LayerDecision:
    """What :func:`ssconv.convert` did with one ``nn.Conv2d`` (or, with the linear fallback,
    one ``nn.Linear``: ``kernel_size`` ``(1, 1)``, features as channels)."""

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
    def unconverted(cls, name: str, conv: nn.Module, reason: str | None) -> LayerDecision:
        """``conv`` left as it is (``reason``: why, or ``None`` for a layer still to convert)."""
        if isinstance(conv, nn.Linear):
            return cls(name, conv.in_features, conv.out_features, (1, 1), 1, False, reason or "")
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
    #: the layer-wise distribution the solver used (``"auto"`` resolved at the density)
    distribution: str
    weight_params: int
    dense_weight_params: int
    coverage: list[CoverageIssue] = field(default_factory=list)
    #: 1 x 1 layers converted because the others could not carry the budget (see ``convert``).
    pointwise_fallback: list[str] = field(default_factory=list)
    #: nn.Linear layers converted to SSCLinear because the convs could not carry the budget.
    linear_fallback: list[str] = field(default_factory=list)
    #: False when ``convert(..., linear_in_budget=False)`` left the nn.Linear layers out.
    linear_in_budget: bool = True
    budget_weight_params: int | None = None  # the budget's terms (``None``: the model's)
    budget_dense_weight_params: int | None = None

    @property
    def density(self) -> float:
        """Achieved model density: nonzero over dense weights of all conv and linear layers."""
        return self.weight_params / self.dense_weight_params if self.dense_weight_params else 1.0

    @property
    def budget_density(self) -> float:
        """The density the target was set on: :attr:`density`, or with
        ``linear_in_budget=False`` the density of the conv layers (nn.Linear left out)."""
        if self.budget_dense_weight_params is None:
            return self.density
        nonzero = self.budget_weight_params or 0
        return nonzero / self.budget_dense_weight_params if self.budget_dense_weight_params else 1.0

    @property
    def converted(self) -> list[LayerDecision]:
        return [d for d in self.layers if d.converted]

    def to_dict(self) -> dict:
        out = {
            "target_density": self.target_density,
            "density": self.density,
            "distribution": self.distribution,
            "weight_params": self.weight_params,
            "dense_weight_params": self.dense_weight_params,
            "layers": [d.to_dict() for d in self.layers],
            "coverage": [asdict(c) for c in self.coverage],
        }
        if self.pointwise_fallback:
            out["pointwise_fallback"] = list(self.pointwise_fallback)
        if self.linear_fallback:
            out["linear_fallback"] = list(self.linear_fallback)
        if not self.linear_in_budget:
            out["linear_in_budget"] = False
            out["budget_density"] = self.budget_density
        return out

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
                    (_ACTIONS.get(d.reason, "ssc") if d.converted else f"kept ({d.reason})"),
                    d.settings,
                    "" if d.target_density is None else f"{d.target_density:.4f}",
                    f"{d.density:.4f}",
                    str(d.params),
                ]
            )
        lines = text_table(header, rows)
        target = "" if self.target_density is None else f"target {self.target_density:.4f}, "
        if not self.linear_in_budget:
            lines.append(
                f"conv density ({target}achieved; nn.Linear layers left out of the budget): "
                f"{self.budget_density:.4f} = {self.budget_weight_params:,} / "
                f"{self.budget_dense_weight_params:,} conv weights"
            )
            target = ""
        lines.append(
            f"model density ({target}achieved): {self.density:.4f} = "
            f"{self.weight_params:,} / {self.dense_weight_params:,} conv+linear weights"
        )
        if self.target_density is not None:
            lines.append(
                f"layer targets: {self.distribution} densities (distribution=...; the default, "
                f"auto, takes ERK's below density 0.1 and uniform from 0.1 up)"
            )
        if self.pointwise_fallback:
            lines.append(
                f"1x1 fallback: the layers the keep rules leave cannot carry the budget, so "
                f"{len(self.pointwise_fallback)} 1x1 convs were converted too (period=None; "
                f"pass pointwise_fallback=False to keep them dense)"
            )
        if self.linear_fallback:
            lines.append(
                f"linear fallback: the convs cannot carry the budget, so "
                f"{len(self.linear_fallback)} nn.Linear layers became block-diagonal SSCLinear "
                f"(pass linear_fallback=False to keep them dense)"
            )
        lines += [f"coverage: {c.message}" for c in self.coverage]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()
