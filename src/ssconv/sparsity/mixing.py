"""Channel mixing across SSC groups as an explicit module (the design study's first form).

Stacked layers with the same channel groups split a network into independent sub-networks:
group ``g`` of one layer only ever reads group ``g`` of the layer before (residual additions
keep the alignment). ShuffleNet (Zhang et al., CVPR 2018, arXiv:1707.01083) mixes them with a
channel shuffle before each grouped convolution. :func:`shuffle_groups` puts such a shuffle
in front of every ``SSConv2d`` with more than one group, so that its group ``h`` reads
channels ``h, h + G, h + 2G, ...``: one channel from each block of the previous layer.

The design study of ``docs/ssc.md`` first measured mixing this way (a gather module before
each layer, method ``ssc_shuffled`` until 2026-12-02). The default now folds the same
permutation into the layer (``SSConv2d(shuffle=True)``): the fused kernels read through it
at no cost and export emits one Gather. ``SSConv2d(shuffle=True)`` computes exactly what
``nn.Sequential(ChannelShuffle(G), SSConv2d(...))`` computes with the same weights, and it
loads that module's state_dict (tests/sparsity/test_mixing.py).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ChannelShuffle", "shuffle_groups"]


class ChannelShuffle(nn.Module):
    """``x[:, h * (C // G) + j] <- x[:, j * G + h]``: ShuffleNet's shuffle with ``G`` groups."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g = self.groups
        return x.reshape(n, c // g, g, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


def shuffle_groups(model: nn.Module) -> list[str]:
    """Put a :class:`ChannelShuffle` in front of every ``SSConv2d`` with ``groups > 1``.

    The layer becomes ``nn.Sequential(ChannelShuffle(G), layer)`` under the same name (its
    parameters move to ``<name>.1.``). Returns the names of the shuffled layers.
    """
    from ssconv.layers.ssconv import SSConv2d
    from ssconv.utils.modules import replace_module

    names = [
        name
        for name, m in model.named_modules()
        if isinstance(m, SSConv2d) and m.groups > 1 and m.in_channels % m.groups == 0
    ]
    for name in names:
        layer = model.get_submodule(name)
        replace_module(model, name, nn.Sequential(ChannelShuffle(layer.groups), layer))
    return names
