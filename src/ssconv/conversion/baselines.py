"""Structured baselines at the same parameter budget as SSC.

* **Depthwise-separable**: each K x K convolution becomes a K x K depthwise convolution,
  batch norm, ReLU and a (grouped) 1 x 1 convolution, the factorization of MobileNets
  ("MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications",
  Howard et al. 2017, arXiv:1704.04861). The 1 x 1 groups are chosen per layer to meet the
  budget; where even the sparsest factorization exceeds it the budget cannot be met ("where
  shapes allow").
* **Group convolution**: plain grouped K x K convolutions (AlexNet / ResNeXt style); this is SSC
  with ``period=1``, so it goes through :func:`ssconv.convert` with that constraint.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from ssconv.conversion._convert import ConversionReport, LayerDecision
from ssconv.errors import NoConvertibleLayerError
from ssconv.sparsity.budget import LayerSpec, choose_per_layer
from ssconv.sparsity.counting import counted_layers, model_weight_counts, weight_counts
from ssconv.sparsity.selection import KEEP_RULES, select_layers
from ssconv.utils.modules import replace_module

__all__ = ["DepthwiseSeparableConv2d", "to_depthwise_separable"]


class DepthwiseSeparableConv2d(nn.Module):
    """K x K depthwise conv -> BatchNorm -> ReLU -> 1 x 1 conv (``pointwise_groups`` groups).

    Stands in for a dense ``Conv2d(in_channels, out_channels, kernel_size, ...)``; counted by
    :func:`ssconv.profile` against that dense conv (``dense_groups`` of it).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        bias: bool = False,
        padding_mode: str = "zeros",
        *,
        pointwise_groups: int = 1,
        dense_groups: int = 1,
    ) -> None:
        super().__init__()
        if in_channels % pointwise_groups or out_channels % pointwise_groups:
            raise ValueError(
                f"pointwise_groups={pointwise_groups} must divide in_channels="
                f"{in_channels} and out_channels={out_channels}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.dense_groups = dense_groups
        self.depthwise = nn.Conv2d(
            in_channels,
            in_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups=in_channels,
            bias=False,
            padding_mode=padding_mode,
        )
        self.bn = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, groups=pointwise_groups, bias=bias)
        self.kernel_size = self.depthwise.kernel_size

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.relu(self.bn(self.depthwise(x))))

    def ssconv_describe(self) -> str:
        kh, kw = self.kernel_size
        return f"{kh}x{kw} dw + 1x1 G={self.pointwise.groups}"

    def ssconv_weight_counts(self) -> tuple[int, int]:
        """(weights held, weights of the dense conv it replaces)."""
        held = self.depthwise.weight.numel() + self.pointwise.weight.numel()
        kh, kw = self.kernel_size
        return held, self.out_channels * (self.in_channels // self.dense_groups) * kh * kw


@dataclass(frozen=True)
class _Option:
    pointwise_groups: int
    num_params: int


def _options(spec: LayerSpec) -> list[_Option]:
    k = math.prod(spec.kernel_size)
    common = math.gcd(spec.in_channels, spec.out_channels)
    out = [
        _Option(g, spec.in_channels * k + spec.in_channels * spec.out_channels // g)
        for g in range(1, common + 1)
        if common % g == 0
    ]
    return sorted(out, key=lambda o: -o.num_params)


def to_depthwise_separable(
    model: nn.Module,
    *,
    density: float,
    distribution: str = "uniform",
    skip: Sequence[str] = (),
    include: Sequence[str] = (),
    keep: Sequence[str] = KEEP_RULES,
    inplace: bool = False,
) -> ConversionReport:
    """Replace the convertible convs (the rules of :func:`ssconv.convert`) by depthwise-separable
    blocks whose 1 x 1 groups meet ``density`` (model level, kept layers counted)."""
    if not inplace:
        model = copy.deepcopy(model)
    layers = select_layers(model, skip=skip, include=include, keep=keep)
    todo = [(n, c) for n, c, reason in layers if reason is None and c.groups == 1]
    if not todo:
        raise NoConvertibleLayerError("no conv layer to replace (all kept by the rules)")
    todo_ids = {id(c) for _, c in todo}
    fixed = sum(n for _, m, (n, _) in counted_layers(model) if id(m) not in todo_ids)
    specs = [
        LayerSpec(n, c.in_channels, c.out_channels, tuple(c.kernel_size), c.groups) for n, c in todo
    ]
    chosen, targets = choose_per_layer(
        specs, density, _options, fixed_params=fixed, distribution=distribution
    )
    decisions = {n: LayerDecision.unconverted(n, c, reason) for n, c, reason in layers}
    for (name, conv), option, t in zip(todo, chosen, targets):
        block = DepthwiseSeparableConv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.bias is not None,
            conv.padding_mode,
            pointwise_groups=option.pointwise_groups,
            dense_groups=conv.groups,
        ).to(conv.weight.device, conv.weight.dtype)
        replace_module(model, name, block)
        d = decisions[name]
        d.converted, d.reason = True, "converted"
        d.settings = block.ssconv_describe()
        d.target_density = t
    for name, d in decisions.items():
        d.params, d.dense_params = weight_counts(model.get_submodule(name))
        d.density = d.params / d.dense_params
    weight, dense = model_weight_counts(model)
    return ConversionReport(
        model=model,
        layers=list(decisions.values()),
        target_density=density,
        distribution=distribution,
        weight_params=weight,
        dense_weight_params=dense,
    )
