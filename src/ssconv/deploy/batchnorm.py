"""BatchNorm folding: every eval-mode BatchNorm that directly follows a conv (dense or SSC) is
folded into that conv's weights and bias: ``nn.BatchNorm2d`` modules, and the ``F.batch_norm``
of norm + activation modules that tracing goes into (timm's ``BatchNormAct2d``)."""

from __future__ import annotations

import copy
import logging
import warnings

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.operator_schemas import normalize_function
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ssconv.layers.ssconv import SSConv2d, SSCTracer
from ssconv.sparsity.selection import _is_same_pad_conv
from ssconv.utils.modules import replace_module

__all__ = ["fold_batchnorm"]

log = logging.getLogger(__name__)


def _fold_into_ssc(layer: SSConv2d, bn: nn.BatchNorm2d) -> SSConv2d:
    folded = copy.deepcopy(layer)
    with torch.no_grad():
        gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
        scale = gamma / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
        if folded.weight_spatial is not None:
            if folded.weight_spatial.dim() == 1:  # checkerboard: flat taps in mask order
                per_tap = scale.view(-1, 1, 1, 1).expand(folded.tap_mask.shape)[folded.tap_mask]
                folded.weight_spatial.mul_(per_tap)
            else:
                folded.weight_spatial.mul_(scale.view(-1, 1, 1, 1))
        if folded.weight_point is not None:
            folded.weight_point.mul_(scale.view(-1, 1))
        bias = folded.bias if folded.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = (bias - bn.running_mean) * scale + beta
        folded.bias = nn.Parameter(new_bias)
    return folded


def _eval_batchnorm(node: fx.Node, gm: fx.GraphModule, modules: dict) -> nn.BatchNorm2d | None:
    """The eval-mode BatchNorm ``node`` applies, or None: an ``nn.BatchNorm2d`` module call, or
    ``F.batch_norm`` with running statistics and ``training=False``, what tracing leaves of a
    norm + activation module such as timm's ``BatchNormAct2d`` (its activation and dropout
    stay nodes of their own). The functional form comes back as an equivalent module."""
    if node.op == "call_module":
        bn = modules.get(node.target)
        ok = isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
        return bn if ok and bn.running_mean is not None else None
    if node.op != "call_function" or node.target is not F.batch_norm:
        return None
    call = normalize_function(
        node.target, node.args, node.kwargs, normalize_to_only_use_kwargs=True
    )
    if call is None:
        return None
    kw = call.kwargs
    if kw.get("training", False) is not False:
        return None

    def attr(arg):
        if arg is None:
            return None
        if not isinstance(arg, fx.Node) or arg.op != "get_attr":
            raise LookupError  # computed at run time: not a constant to fold
        value = gm
        for part in arg.target.split("."):
            value = getattr(value, part)
        return value

    try:
        mean, var = attr(kw.get("running_mean")), attr(kw.get("running_var"))
        weight, bias = attr(kw.get("weight")), attr(kw.get("bias"))
    except LookupError:
        return None
    if mean is None or var is None:
        return None
    bn = nn.BatchNorm2d(mean.numel(), eps=float(kw.get("eps", 1e-5)))
    with torch.no_grad():
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        if weight is not None:
            bn.weight.copy_(weight)
        if bias is not None:
            bn.bias.copy_(bias)
    return bn.eval().to(mean.device)


def _reads_metadata(node: fx.Node) -> bool:
    """Whether ``node`` reads only its input's shape, rank, dtype or device (as timm's
    ``BatchNormAct2d`` checks ``x.ndim``): values that folding a BatchNorm does not change."""
    if node.op == "call_function" and node.target is getattr:
        return len(node.args) > 1 and node.args[1] in ("ndim", "shape", "dtype", "device")
    return node.op == "call_method" and node.target in ("dim", "size")


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm that directly follows a conv into that conv.

    Uses ``torch.fx`` (SSC layers are leaves). Besides ``nn.BatchNorm2d`` modules, the
    normalization of norm + activation modules that tracing goes into (timm's
    ``BatchNormAct2d``: ``F.batch_norm``, then its activation) is folded, the activation kept.
    A BatchNorm after a conv that cannot take it (a conv whose output is also used elsewhere,
    or of another type) is named in a warning; a model that cannot be traced is returned
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
    folded, left = 0, []
    for node in list(gm.graph.nodes):
        bn = _eval_batchnorm(node, gm, modules)
        if bn is None:
            continue
        prev = node.args[0] if node.args else node.kwargs.get("input")
        if not isinstance(prev, fx.Node) or prev.op != "call_module":
            continue  # a BatchNorm that follows no conv (pre-activation blocks, after an add)
        conv = modules.get(prev.target)
        if not isinstance(conv, (nn.Conv2d, SSConv2d)):
            continue
        others = [u for u in prev.users if u is not node]
        # timm's Conv2dSame pads, then convolves with its own weight and bias: it folds as is.
        plain = type(conv) is nn.Conv2d or _is_same_pad_conv(conv)
        if any(not _reads_metadata(u) for u in others) or not (plain or isinstance(conv, SSConv2d)):
            left.append(str(node.target) if node.op == "call_module" else node.name)
            continue
        merged = fuse_conv_bn_eval(conv, bn) if plain else _fold_into_ssc(conv, bn)
        replace_module(gm, prev.target, merged)
        modules[prev.target] = merged
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        folded += 1
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    log.info("folded %d BatchNorm layers", folded)
    if left:
        shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
        warnings.warn(
            f"fold_batchnorm: {len(left)} BatchNorm layer(s) after a convolution left unfolded "
            f"({shown}): the convolution's output is used elsewhere too, or its type cannot "
            "take the BatchNorm; they run as separate operations",
            stacklevel=2,
        )
    return gm
