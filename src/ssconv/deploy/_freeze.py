"""Freezing: an inference copy of a model, BatchNorm folded, SSC layers frozen
(:class:`~ssconv.layers.inference.SSConv2dInference`), activations kept in residue channel order
between SSC layers that share it."""

from __future__ import annotations

import copy

from torch import nn

from ssconv.deploy.batchnorm import fold_batchnorm
from ssconv.deploy.channel_order import optimize_channel_order
from ssconv.layers.inference import SSConv2dInference
from ssconv.layers.ssconv import SSConv2d
from ssconv.utils.modules import replace_module

__all__ = ["freeze"]


def freeze(
    model: nn.Module,
    *,
    fold_bn: bool = True,
    dense_above: float | None = None,
    channel_order: bool = True,
):
    """An inference copy of ``model``: BatchNorm folded, SSC layers frozen.

    Args:
        fold_bn: fold BatchNorm into the preceding convolutions.
        dense_above: SSC layers denser than this run as one dense convolution (default: the
            layer's own ``auto`` choice).
        channel_order: keep activations in residue order between SSC layers that share it
            (:func:`optimize_channel_order`).
    """
    model = fold_batchnorm(model) if fold_bn else copy.deepcopy(model).eval()
    for name, layer in [(n, m) for n, m in model.named_modules() if isinstance(m, SSConv2d)]:
        if dense_above is not None:
            mode = "dense" if layer.density > dense_above else "decomposed"
        else:
            # The layer's own inference choice (a fused layer keeps decomposed stock kernels
            # for export and for devices without the kernel).
            mode = "dense" if layer.resolved_backend(inference=True) == "masked" else "decomposed"
        replace_module(model, name, SSConv2dInference(layer, mode))
    if channel_order:
        model = optimize_channel_order(model)
    return model.eval()
