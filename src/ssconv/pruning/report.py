"""What :func:`ssconv.pruning.prune` did: one :class:`LayerPruning` per layer and the model's
:class:`PruneReport` (table, JSON)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from ssconv.utils.text import text_table

__all__ = ["LayerPruning", "PruneReport"]


@dataclass
class LayerPruning:
    """One convolution or linear layer of a pruned model."""

    name: str
    kind: str
    weight_shape: tuple[int, ...]
    pruned: bool  # whether the layer was prunable (it carries a mask)
    reason: str  # "pruned", or why the layer stayed dense
    params: int  # nonzero (unmasked) weights
    dense_params: int
    target_density: float | None = None  # the layer's own target (per-layer scopes)

    @property
    def density(self) -> float:
        return self.params / self.dense_params if self.dense_params else 1.0

    @property
    def collapsed(self) -> bool:
        """A prunable layer left with no weight at all (layer collapse).

        The network is cut there, unless a shortcut bypasses the layer (a residual branch).
        """
        return self.pruned and self.params == 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["weight_shape"] = list(self.weight_shape)
        d["density"] = self.density
        d["collapsed"] = self.collapsed
        return d


@dataclass
class PruneReport:
    """What :func:`ssconv.pruning.prune` did: the method, the budget, and one
    :class:`LayerPruning` per layer."""

    model: nn.Module
    method: str
    scope: str  # "global" (one ranking) or "layer" (per-layer keep counts)
    distribution: str | None  # per-layer densities ("uniform" / "erk"); None for global
    layers: list[LayerPruning]
    target_density: float | None  # as asked (None when num_params was asked)
    target_params: int  # nonzero conv+linear weights aimed at (kept layers included)
    weight_params: int  # achieved
    dense_weight_params: int
    iterations: int
    data: str  # "given", "synthetic" or "none"
    batches: int  # batches scored (0 for data-free methods)
    seed: int | None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def density(self) -> float:
        """Achieved model density: nonzero over dense weights of all conv and linear layers."""
        return self.weight_params / self.dense_weight_params if self.dense_weight_params else 1.0

    @property
    def collapsed(self) -> list[str]:
        """Names of the prunable layers left with no weight (layer collapse)."""
        return [layer.name for layer in self.layers if layer.collapsed]

    @property
    def pruned_layers(self) -> list[LayerPruning]:
        return [layer for layer in self.layers if layer.pruned]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "options": dict(self.options),
            "scope": self.scope,
            "distribution": self.distribution,
            "iterations": self.iterations,
            "data": self.data,
            "batches": self.batches,
            "seed": self.seed,
            "target_density": self.target_density,
            "target_params": self.target_params,
            "density": self.density,
            "weight_params": self.weight_params,
            "dense_weight_params": self.dense_weight_params,
            "collapsed": self.collapsed,
            "execution": "masked dense layers: executed MACs are the dense MACs",
            "layers": [layer.to_dict() for layer in self.layers],
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def table(self) -> str:
        header = ["layer", "weight", "action", "target", "density", "params"]
        rows = []
        for layer in self.layers:
            rows.append(
                [
                    layer.name,
                    "x".join(map(str, layer.weight_shape)),
                    ("pruned" if layer.pruned else f"kept ({layer.reason})")
                    + (" COLLAPSED" if layer.collapsed else ""),
                    "" if layer.target_density is None else f"{layer.target_density:.4f}",
                    f"{layer.density:.4f}",
                    f"{layer.params}/{layer.dense_params}",
                ]
            )
        lines = text_table(header, rows)
        how = self.scope if self.distribution is None else f"{self.scope}, {self.distribution}"
        iters = f", {self.iterations} rounds" if self.iterations > 1 else ""
        target = (
            f"target {self.target_density:.4f}"
            if self.target_density is not None
            else f"target {self.target_params:,} weights"
        )
        lines.append(
            f"{self.method} ({how}{iters}, data: {self.data}): model density ({target}, "
            f"achieved) {self.density:.4f} = {self.weight_params:,} / "
            f"{self.dense_weight_params:,} conv+linear weights"
        )
        if self.collapsed:
            lines.append(f"layer collapse: {', '.join(self.collapsed)} keep no weight")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()
