"""BatchNorm folding: every eval-mode ``BatchNorm2d`` that directly follows a conv (dense or SSC)
is folded into that conv's weights and bias."""

from __future__ import annotations

import copy
import logging
import warnings

import torch
import torch.fx as fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ssconv.layers.ssconv import SSConv2d, SSCTracer
from ssconv.utils.modules import replace_module

__all__ = ["fold_batchnorm"]

log = logging.getLogger(__name__)


def _fold_into_ssc(layer: SSConv2d, bn: nn.BatchNorm2d) -> SSConv2d:
    folded = copy.deepcopy(layer)
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
        if folded.weight_spatial is not None:
            if folded.weight_spatial.dim() == 1:  # checkerboard: flat taps in mask order
                per_tap = scale.view(-1, 1, 1, 1).expand(folded.tap_mask.shape)[folded.tap_mask]
                folded.weight_spatial.mul_(per_tap)
            else:
                folded.weight_spatial.mul_(scale.view(-1, 1, 1, 1))
        if folded.weight_point is not None:
            folded.weight_point.mul_(scale.view(-1, 1))
        bias = folded.bias if folded.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = (bias - bn.running_mean) * scale + bn.bias
        folded.bias = nn.Parameter(new_bias)
    return folded


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a conv into that conv.

    Uses ``torch.fx`` (SSC layers are leaves); a model that cannot be traced is returned
    unchanged with a warning. Works on a copy.
    """

    model = copy.deepcopy(model).eval()
    try:
        graph = SSCTracer().trace(model)
    except Exception as exc:  # data-dependent control flow etc.
        warnings.warn(
            f"fold_batchnorm: model is not traceable by torch.fx ({exc}); BatchNorm left unfolded",
            stacklevel=2,
        )
        return model
    gm = fx.GraphModule(model, graph)
    modules = dict(gm.named_modules())
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        prev = node.args[0]
        if not isinstance(prev, fx.Node) or prev.op != "call_module" or len(prev.users) != 1:
            continue
        conv, bn = modules.get(prev.target), modules[node.target]
        if bn.running_mean is None or not bn.track_running_stats:
            continue
        if type(conv) is nn.Conv2d:
            merged = fuse_conv_bn_eval(conv, bn)
        elif isinstance(conv, SSConv2d):
            merged = _fold_into_ssc(conv, bn)
        else:
            continue
        replace_module(gm, prev.target, merged)
        modules[prev.target] = merged
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        folded += 1
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    log.info("folded %d BatchNorm layers", folded)
    return gm
