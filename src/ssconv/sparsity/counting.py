"""Weight counting: the nonzero and dense weights of conv / linear layers, the terms of model
density.

Model density follows the pruning-at-initialization convention: nonzero weights of the
convolution and linear layers over their dense count; biases and normalization parameters are
not counted.
"""

from __future__ import annotations

import torch
from torch import nn

from ssconv.layers.ssconv import SSConv2d

__all__ = ["counted_layers", "model_weight_counts", "weight_counts", "weight_mask"]


def weight_counts(module: nn.Module) -> tuple[int, int] | None:
    """``(nonzero weights, dense weights)`` of a conv / linear layer, else ``None``.

    Understands :class:`SSConv2d`, layers pruned with a mask buffer (``weight_mask``, as
    ``torch.nn.utils.prune`` and :mod:`ssconv.pruning` leave them), and blocks that count their
    own weights through an ``ssconv_weight_counts()`` method (e.g. a depthwise-separable block
    standing in for one dense conv).
    """
    own = getattr(module, "ssconv_weight_counts", None)
    if callable(own):
        return own()
    if isinstance(module, SSConv2d):
        return module.num_params, module.dense_weight_count
    if isinstance(module, (nn.Conv2d, nn.Linear, nn.Conv1d, nn.Conv3d)):
        mask = weight_mask(module)
        dense = _dense_weight_numel(module)
        if mask is not None:
            return int(mask.count_nonzero()), dense
        return dense, dense
    return None


def counted_layers(model: nn.Module):
    """``(name, module, (nonzero, dense))`` for each counted layer, every weight counted once.

    Children of a block that counts its own weights are skipped.
    """
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in inside):
            continue
        counts = weight_counts(module)
        if counts is None:
            continue
        if callable(getattr(module, "ssconv_weight_counts", None)):
            inside.append(name + ".")
        yield name, module, counts


def model_weight_counts(model: nn.Module) -> tuple[int, int]:
    """(nonzero, dense) weights of all conv and linear layers: the model density's terms."""
    nonzero = dense = 0
    for _, _, (n, d) in counted_layers(model):
        nonzero += n
        dense += d
    return nonzero, dense


def _dense_weight_numel(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    conv = module
    k = 1
    for size in conv.kernel_size:
        k *= size
    return conv.out_channels * (conv.in_channels // conv.groups) * k


def weight_mask(module: nn.Module) -> torch.Tensor | None:
    mask = getattr(module, "weight_mask", None)
    if isinstance(mask, torch.Tensor):
        return mask
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is not None and "weight" in parametrizations:
        for p in parametrizations["weight"]:
            mask = getattr(p, "mask", None)
            if isinstance(mask, torch.Tensor):
                return mask
    return None
