"""Pictures of an SSC layer's structure: the kernel-type map (output x input channels)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ssconv.layers.pattern import checkerboard_taps
from ssconv.layers.ssconv import SSConv2d
from ssconv.sparsity.counting import weight_mask

__all__ = ["kernel_type_image", "plot_pattern"]

# Codes of the picture: empty, point, spatial (full), checkerboard parity 0, parity 1.
_COLORS = ["#ffffff", "#f28e2b", "#1f4e79", "#4e9dd6", "#59a14f"]
_LABELS = [
    "E: empty",
    "P: 1x1 (centre tap)",
    "S: full KxK",
    "S: checkerboard, parity 0",
    "S: checkerboard, parity 1",
]


def kernel_type_image(layer: nn.Module) -> torch.Tensor:
    """(C_out, C_in) long codes 0..4 (see ``_LABELS``) for an SSC, masked or dense conv.

    Codes 0-2 are :class:`~ssconv.layers.pattern.KernelType`'s; 3 and 4 split checkerboard
    spatial kernels by parity.
    """
    if isinstance(layer, SSConv2d):
        pat = layer.pattern
        types = pat.type_map().long()  # 0 E, 1 P, 2 S
        image = types.clone()
        if pat.spatial == "checkerboard" and pat.has_spatial:
            parity = pat.spatial_parity()  # (C_out, A) in absolute a order
            cin_g, p = pat.in_per_group, pat.period
            o = torch.arange(pat.out_channels)
            g = o // pat.out_per_group
            s = (o % pat.out_per_group) % p
            for a in range(pat.spatial_per_filter):
                cols = g * cin_g + a * p + s
                image[o, cols] = 3 + parity[:, a]
        return image
    if isinstance(layer, nn.Conv2d):
        mask = weight_mask(layer)
        w = torch.ones(layer.weight.shape, dtype=torch.bool) if mask is None else mask.cpu() != 0
        kh, kw = w.shape[2], w.shape[3]
        nnz = w.flatten(2).sum(2)
        centre_only = (nnz == 1) & w[:, :, kh // 2, kw // 2]
        codes = torch.where(nnz == 0, 0, torch.where(centre_only, 1, 2))
        full = torch.zeros(layer.out_channels, layer.in_channels, dtype=torch.long)
        cin_g, cout_g = layer.in_channels // layer.groups, layer.out_channels // layer.groups
        for gi in range(layer.groups):
            full[gi * cout_g : (gi + 1) * cout_g, gi * cin_g : (gi + 1) * cin_g] = codes[
                gi * cout_g : (gi + 1) * cout_g
            ]
        return full
    raise TypeError(f"expected a conv layer, got {type(layer).__name__}")


def plot_pattern(
    layer: nn.Module,
    path: str | Path,
    *,
    title: str = "",
    max_channels: int | None = 64,
    dpi: int = 150,
) -> Path:
    """Draw the kernel-type map of ``layer`` into an image file (PNG, SVG, PDF by suffix).

    Shows at most ``max_channels`` output and input channels (the top-left corner) so that
    individual kernels stay visible; the title says when the map is cropped.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    image = kernel_type_image(layer)
    c_out, c_in = image.shape
    crop = ""
    if max_channels is not None and (c_out > max_channels or c_in > max_channels):
        image = image[:max_channels, :max_channels]
        crop = f" (first {image.shape[0]} x {image.shape[1]} of {c_out} x {c_in})"
    present = sorted(set(image.unique().tolist()))
    fig_w = 7.5 if layer.kernel_size != (1, 1) else 6.5
    # A bare Figure (no pyplot): the user's matplotlib backend is left as it is.
    fig = Figure(figsize=(fig_w, 5.2), layout="constrained")
    ax = fig.subplots()
    ax.imshow(
        image.numpy(),
        cmap=ListedColormap(_COLORS),
        vmin=0,
        vmax=4,
        interpolation="nearest",
        aspect="auto",
    )
    ax.set_xlabel("input channel")
    ax.set_ylabel("output channel (filter)")
    settings = ""
    if isinstance(layer, SSConv2d):
        settings = f" [{layer.pattern.describe()}, density {layer.density:.3f}]"
    ax.set_title((title or type(layer).__name__) + settings + crop, fontsize=9)
    handles = [Patch(facecolor=_COLORS[c], edgecolor="#999999", label=_LABELS[c]) for c in present]
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False
    )
    if any(c in present for c in (3, 4)):
        k = layer.kernel_size
        for parity, y in ((0, 0.35), (1, 0.05)):
            inset = ax.inset_axes((1.05, y, 0.18, 0.22))
            taps = checkerboard_taps(k, parity).long() * (3 + parity)
            inset.imshow(taps.numpy(), cmap=ListedColormap(_COLORS), vmin=0, vmax=4)
            inset.set_xticks([])
            inset.set_yticks([])
            inset.set_title(f"taps, parity {parity}", fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
