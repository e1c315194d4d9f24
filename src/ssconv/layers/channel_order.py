"""Residue channel order: inside each group, channels sorted by their residue modulo the period,
the layout in which an SSC layer's spatial pairs form one grouped convolution.

A chain of frozen SSC layers can run in this order end to end
(:func:`ssconv.deploy.optimize_channel_order`); :class:`ChannelOrder` converts where orders
differ.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssconv.layers.dispatch import _is_channels_last
from ssconv.layers.ssconv import _channel_transpose

__all__ = ["ChannelOrder", "residue_permutation"]


def residue_permutation(groups: int, period: int, channels: int) -> Tensor:
    """Residue order as a gather index: physical position -> canonical channel.

    Inside each group of ``Cg = channels / groups`` channels, physical ``s * (Cg / P) + x``
    holds canonical ``x * P + s``: channels sorted by residue ``mod P``, the layout in which an
    SSC layer's spatial pairs form a grouped convolution.
    """
    cg = channels // groups
    a = cg // period
    g = torch.arange(groups).view(-1, 1, 1)
    s = torch.arange(period).view(1, -1, 1)
    x = torch.arange(a).view(1, 1, -1)
    return (g * cg + x * period + s).reshape(-1)


class ChannelOrder(nn.Module):
    """Converts a tensor between channel orders: ``None`` (canonical) or a residue tag
    ``(groups, period, channels)``. Two structured transposes at most, in the tensor's own
    memory format (standard Reshape / Transpose operators when exported)."""

    _fx_leaf = True

    def __init__(self, source: tuple | None, target: tuple | None) -> None:
        super().__init__()
        self.source, self.target = source, target

    def forward(self, x: Tensor) -> Tensor:

        cl = _is_channels_last(x)
        if self.source is not None:  # residue -> canonical: (g, s, x) -> (g, x, s)
            g, p, c = self.source
            x = _channel_transpose(x, g, p, c // g // p, cl)
        if self.target is not None:  # canonical -> residue: (g, x, s) -> (g, s, x)
            g, p, c = self.target
            x = _channel_transpose(x, g, c // g // p, p, cl)
        return x

    def extra_repr(self) -> str:
        return f"{self.source} -> {self.target}"


def order_index(tag: tuple | None) -> Tensor | None:
    """A channel-order tag as a gather index (physical position -> canonical channel): ``None``
    (canonical) gives None, a residue tag ``(groups, period, channels)`` its
    :func:`residue_permutation`, a permutation tag ``("perm", (c0, c1, ...))`` its channels."""
    if tag is None:
        return None
    if tag[0] == "perm":
        return torch.tensor(tag[1], dtype=torch.long)
    return residue_permutation(*tag)


def read_through(source: tuple | None, index: Tensor) -> Tensor:
    """The gather index that reads canonical channels ``index`` from a tensor held in channel
    order ``source``: ``x_canonical[:, index] == x_source[:, read_through(source, index)]``."""
    src = order_index(source)
    return index if src is None else torch.argsort(src.to(index.device))[index]


class ChannelGather(nn.Module):
    """Converts a tensor between any two channel orders (tags as in :func:`order_index`) with
    one index gather (``Gather`` when exported)."""

    _fx_leaf = True

    def __init__(self, source: tuple | None, target: tuple | None, channels: int) -> None:
        super().__init__()
        self.source, self.target = source, target
        # x_target[i] = x_canonical[t[i]]
        tgt = order_index(target)
        index = read_through(source, torch.arange(channels) if tgt is None else tgt)
        self.register_buffer("index", index, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x.index_select(1, self.index)

    def extra_repr(self) -> str:
        def name(tag):
            return "permuted" if tag is not None and tag[0] == "perm" else str(tag)

        return f"{name(self.source)} -> {name(self.target)}"
