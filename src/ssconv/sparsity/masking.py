"""The mask parametrization that keeps masked weights at exactly zero (pruning's masks).

Applied with :mod:`torch.nn.utils.parametrize`: the layer's ``weight`` becomes
``torch.where(mask, original, 0)``, recomputed at every access (see :mod:`ssconv.pruning.masks`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = ["WeightMask", "mask_parametrization"]


class WeightMask(nn.Module):
    """A parametrization ``weight -> where(mask, weight, 0)`` with ``mask`` a persistent buffer.

    ``ssconv.profile`` counts a layer's nonzero weights from this buffer.
    """

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().to(torch.bool).clone())

    def forward(self, weight: Tensor) -> Tensor:
        return torch.where(self.mask, weight, 0.0)

    def right_inverse(self, weight: Tensor) -> Tensor:
        # Assigning ``layer.weight = w`` stores ``w`` with its pruned entries zeroed.
        return torch.where(self.mask, weight, 0.0)

    def extra_repr(self) -> str:
        kept = int(self.mask.count_nonzero())
        return f"kept={kept}/{self.mask.numel()}"


def mask_parametrization(module: nn.Module) -> WeightMask | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    return next((p for p in module.parametrizations["weight"] if isinstance(p, WeightMask)), None)
