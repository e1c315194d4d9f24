"""Coverage check: the SSC form of layer collapse.

A structured pattern can leave an input channel with no spatial (K x K) kernel in any filter
(e.g. ``period`` larger than the number of filters per group), an input channel read by no
filter at all, or a filter with no weight (an output that is constant). The same check works
for pruned layers, whose masks can collapse a layer entirely ("Pruning neural networks without
any data by iteratively conserving synaptic flow", Tanaka et al., NeurIPS 2020,
arXiv:2006.05467, discuss layer collapse).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ssconv.layers.ssconv import SSConv2d
from ssconv.sparsity.counting import weight_mask

__all__ = ["CoverageIssue", "check_coverage", "model_coverage"]


@dataclass
class CoverageIssue:
    """One coverage problem of one layer."""

    layer: str
    kind: str  # "no_spatial_input", "dead_input", "dead_output"
    channels: list[int]
    message: str


def _nonzero_mask(module: nn.Module) -> torch.Tensor | None:
    """(C_out, C_in/G, kh, kw) bool of the weights that can be nonzero, or ``None``."""
    if isinstance(module, SSConv2d):
        return module.pattern.dense_mask()
    if isinstance(module, nn.Conv2d):
        mask = weight_mask(module)
        if mask is None:
            return torch.ones(module.weight.shape, dtype=torch.bool)
        return mask.detach().cpu() != 0
    return None


def _expand_groups(mask: torch.Tensor, groups: int, in_channels: int) -> torch.Tensor:
    """(C_out, C_in/G, ...) -> (C_out, C_in, ...) with zeros across groups."""
    c_out, cin_g = mask.shape[:2]
    full = torch.zeros(c_out, in_channels, *mask.shape[2:], dtype=torch.bool)
    cout_g = c_out // groups
    for g in range(groups):
        full[g * cout_g : (g + 1) * cout_g, g * cin_g : (g + 1) * cin_g] = mask[
            g * cout_g : (g + 1) * cout_g
        ]
    return full


def check_coverage(module: nn.Module, name: str = "") -> list[CoverageIssue]:
    """Coverage problems of one conv layer (SSC or masked); empty when it is fine.

    Checks that every filter has a weight, every input channel is read by some filter, and,
    for layers with K x K kernels, every input channel gets a spatial kernel (a tap outside the
    centre) from some filter.
    """
    if isinstance(module, SSConv2d):
        full = module.full_mask()  # (C_out, C_in, kh, kw), the channel shuffle applied
    else:
        mask = _nonzero_mask(module)
        if mask is None:
            return []
        full = _expand_groups(mask, module.groups, module.in_channels)
    issues = []
    dead_out = (~full.flatten(1).any(1)).nonzero().flatten().tolist()
    if dead_out:
        issues.append(
            CoverageIssue(
                name,
                "dead_output",
                dead_out,
                f"{name}: {len(dead_out)} filter(s) have no weight (constant output)",
            )
        )
    read = full.flatten(2).any(2).any(0)  # (C_in,)
    dead_in = (~read).nonzero().flatten().tolist()
    if dead_in:
        issues.append(
            CoverageIssue(
                name,
                "dead_input",
                dead_in,
                f"{name}: {len(dead_in)} input channel(s) are read by no filter",
            )
        )
    kh, kw = full.shape[2], full.shape[3]
    if kh * kw > 1:
        off_centre = full.clone()
        off_centre[:, :, kh // 2, kw // 2] = False
        spatial = off_centre.flatten(2).any(2).any(0)
        missing = [i for i in (~spatial).nonzero().flatten().tolist() if i not in dead_in]
        if missing:
            issues.append(
                CoverageIssue(
                    name,
                    "no_spatial_input",
                    missing,
                    f"{name}: {len(missing)} of {module.in_channels} input channel(s) get no "
                    f"spatial kernel from any filter",
                )
            )
    return issues


def model_coverage(model: nn.Module) -> list[CoverageIssue]:
    """:func:`check_coverage` over every SSC or masked conv of ``model``."""
    issues = []
    for name, module in model.named_modules():
        if isinstance(module, SSConv2d) or (
            isinstance(module, nn.Conv2d) and weight_mask(module) is not None
        ):
            issues += check_coverage(module, name)
    return issues
