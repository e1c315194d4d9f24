"""The channel-order pass: chains of frozen SSC layers run in residue channel order, with
conversions (:class:`~ssconv.layers.channel_order.ChannelOrder`) only where orders differ."""

from __future__ import annotations

import collections
import logging
import operator
import warnings

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ssconv.layers.channel_order import ChannelGather, ChannelOrder
from ssconv.layers.inference import SSConv2dInference
from ssconv.layers.ssconv import SSConv2d, SSCTracer

__all__ = ["chain_channels_last", "fuse_relu", "optimize_channel_order"]

log = logging.getLogger(__name__)


_PASS_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.Identity,
    nn.Dropout,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.Hardswish,
    nn.SiLU,
    nn.GELU,
    nn.LeakyReLU,
)


def _is_pass_through(node, modules) -> bool:
    """Per-channel ops that keep any channel order."""

    if node.op == "call_module":
        return isinstance(modules.get(node.target), _PASS_MODULES)
    if node.op == "call_function":
        return (
            node.target
            in (
                F.relu,
                torch.relu,
                torch.relu_,
                F.relu6,
                F.max_pool2d,
                F.avg_pool2d,
                F.hardswish,
                F.silu,
            )
            or node.target is operator.neg
        )
    if node.op == "call_method":
        return node.target in ("relu", "relu_")
    return False


def _is_add(node) -> bool:

    if node.op == "call_function":
        return node.target in (operator.add, operator.iadd, torch.add)
    return node.op == "call_method" and node.target in ("add", "add_")


def _is_perm(tag) -> bool:
    return tag is not None and tag[0] == "perm"


def _chained(layer: SSConv2dInference) -> bool:
    return layer.gathered and layer.out_gather is None


def optimize_channel_order(model: nn.Module) -> nn.Module:
    """Run chains of SSC layers in residue channel order, converting only where orders differ.

    Each frozen SSC layer normally permutes its input into residue order and its output back.
    Between two layers with the same ``(groups, period, channels)`` (through ReLU, pooling and
    residual adds) both permutations cancel; this pass removes them and keeps conversions
    (:class:`ChannelOrder`) only where orders really change. Layers in the gathered form
    (:meth:`SSConv2dInference.use_gathered_input`, shuffled layers exported for onnxruntime)
    leave their output permuted: the next gathered layer's input gather absorbs the
    permutation, and one :class:`ChannelGather` converts where anything else needs another
    order. Outputs are unchanged (up to
    floating-point summation order). Works on a ``torch.fx``-traceable frozen model; others
    are returned unchanged with a warning.
    """

    if any(
        isinstance(m, (ChannelOrder, ChannelGather))
        or (isinstance(m, SSConv2dInference) and (m.residue or _chained(m)))
        for m in model.modules()
    ):
        return model  # already optimized (freezing a frozen model must not redo it)

    try:
        graph = SSCTracer().trace(model)
    except Exception as exc:
        warnings.warn(
            f"optimize_channel_order: model is not traceable by torch.fx ({exc}); "
            "channel order left as is",
            stacklevel=2,
        )
        return model
    gm = fx.GraphModule(model, graph)
    modules = dict(gm.named_modules())
    tags: dict = {}
    converters: dict = {}
    count = 0

    def convert(node, target):
        nonlocal count
        source = tags.get(node)
        if source == target:
            return node
        key = (node, target)
        if key not in converters:
            name = f"channel_order_{count}"
            while hasattr(gm, name):
                count += 1
                name = f"channel_order_{count}"
            count += 1
            if _is_perm(source) or _is_perm(target):
                channels = len((source if _is_perm(source) else target)[1])
                converter = ChannelGather(source, target, channels)
            else:
                converter = ChannelOrder(source, target)
            gm.add_submodule(name, converter)
            with gm.graph.inserting_after(node):
                converters[key] = gm.graph.call_module(name, (node,))
            tags[converters[key]] = target
        return converters[key]

    calls = collections.Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    for node in list(gm.graph.nodes):
        if node in tags or node.op in ("placeholder", "get_attr"):
            tags.setdefault(node, None)
            continue
        module = modules.get(node.target) if node.op == "call_module" else None
        args = [a for a in node.args if isinstance(a, fx.Node)]
        if (
            isinstance(module, SSConv2dInference)
            and module.gathered
            and calls[node.target] == 1
            and len(args) == 1
        ):
            # The input gather absorbs any incoming order; the output stays permuted.
            tags[node] = module.chain_gathers(tags.get(args[0]))
        elif isinstance(module, SSConv2dInference) and module.residue_tags() is not None:
            need, out = module.residue_tags()
            node.replace_input_with(args[0], convert(args[0], need))
            module.use_residue_order()
            tags[node] = out
        elif _is_pass_through(node, modules) and len(args) >= 1:
            tags[node] = tags.get(args[0])
        elif _is_add(node) and len(args) == 2 and not node.kwargs:
            first = tags.get(args[0])
            node.replace_input_with(args[1], convert(args[1], first))
            tags[node] = first
        else:
            for a in args:
                if tags.get(a) is not None:
                    node.replace_input_with(a, convert(a, None))
            for value in node.kwargs.values():
                if isinstance(value, fx.Node) and tags.get(value) is not None:
                    raise RuntimeError(
                        "optimize_channel_order: keyword tensor inputs are not supported"
                    )
            tags[node] = None
    gm.graph.lint()
    gm.recompile()
    log.info("channel order: %d conversions kept", len(converters))
    return gm


def _pool_width_change(node, modules) -> tuple | None:
    """The (kernel, stride, padding, dilation, ceil_mode) of a pooling module along the width,
    () for per-channel operations that keep the size, None where it is not known."""
    module = modules.get(node.target) if node.op == "call_module" else None
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):

        def last(v):
            return v[-1] if isinstance(v, (tuple, list)) else v

        stride = module.stride if module.stride is not None else module.kernel_size
        dilation = getattr(module, "dilation", 1)
        return tuple(last(v) for v in (module.kernel_size, stride, module.padding, dilation)) + (
            module.ceil_mode,
        )
    if module is not None or node.op == "call_method":
        return ()  # ReLU, dropout, activations: the size is kept
    if node.op == "call_function" and node.target in (F.max_pool2d, F.avg_pool2d):
        return None
    return ()


def chain_channels_last(model: nn.Module) -> nn.Module:
    """Let SSC layers on the channel-lane kernels hand their output to the next in
    channels_last: frozen layers in inference, ``SSConv2d`` layers in training.

    The fused (channel-vectorised) kernel works in channels_last; on an NCHW input it copies
    the input in and its output back, two copies a layer (a tenth of a frozen VGG-19's
    inference time in NCHW, where its 8 x 8 and smaller layers run on that kernel). A layer
    whose output reaches, through ReLUs, pooling and other per-channel operations only, other
    frozen SSC layers, returns its output in channels_last when all of them run the fused
    kernel at the size they get (checked per call: a layer that would run the pixel kernel on
    NCHW gets NCHW), and the next one reads it as it is; the last layer of such a chain
    returns NCHW (``SSConv2dInference.output_layout``). So a chain copies once on the way
    in and once on the way out, and NCHW calls keep NCHW outputs (channels_last calls get NCHW
    from a chain's end too). Values are unchanged.

    Trainable ``SSConv2d`` layers chain the same way in training calls (with gradients),
    through BatchNorm too, where the next layers train on the channel-lane kernels at the
    size they get (:func:`ssconv.layers.dispatch.train_kernel`: the short rows of wide layers,
    VGG-19's 8-, 4- and 2-pixel layers): the copies of the input and output and of their
    gradients go from four a layer to four a chain. The layers, activations, pools and
    BatchNorm inside a chain then see channels_last tensors (PyTorch's BatchNorm and pools
    take the place of ssconv's NCHW ones there, a different float32 summation order); calls
    without gradients are unchanged. The trainer's option ``channels_last_chains``.

    Works on a ``torch.fx``-traceable model; others are returned unchanged. Returns ``model``.
    """
    try:
        graph = SSCTracer().trace(model)
    except Exception as exc:  # not traceable: left as is (optimize_channel_order warns)
        log.debug("chain_channels_last: model not traceable (%s)", exc)
        return model
    modules = dict(model.named_modules())
    calls = collections.Counter(n.target for n in graph.nodes if n.op == "call_module")

    def fused_layer(node) -> SSConv2dInference | SSConv2d | None:
        """A layer that may chain: frozen on the fused kernel, or trainable (whether its
        calls train on the channel-lane kernels is checked per call)."""
        if node.op != "call_module" or calls[node.target] != 1:
            return None
        module = modules.get(node.target)
        frozen = isinstance(module, SSConv2dInference) and module.fused
        return module if frozen or isinstance(module, SSConv2d) else None

    def passes(node) -> bool:
        """Per-channel operations that take any memory layout (BatchNorm too, for the
        trainable layers' chains; frozen models have it folded)."""
        if node.op == "call_module" and isinstance(modules.get(node.target), nn.BatchNorm2d):
            return True
        return _is_pass_through(node, modules)

    def consumers(node, kind, pools=()) -> list | None:
        """(node, pools) of the ``kind`` layers ``node``'s output reaches through per-channel
        operations, or None where it reaches anything else (the model's output included)."""
        found = []
        for user in node.users:
            if user.args[:1] != (node,) or any(a is node for a in user.args[1:]):
                return None
            if isinstance(fused_layer(user), kind):
                found.append((user, pools))
                continue
            change = _pool_width_change(user, modules) if passes(user) else None
            more = (
                None
                if change is None
                else consumers(user, kind, pools + ((change,) if change else ()))
            )
            if more is None:
                return None
            found += more
        return found or None

    chained, ends = {}, set()
    for node in graph.nodes:
        layer = fused_layer(node)
        if layer is not None:
            found = consumers(node, type(layer))
            if found:
                chained[node] = [(fused_layer(n), pools) for n, pools in found]
                ends.update(n for n, _ in found)
    for node in graph.nodes:
        layer = fused_layer(node)
        if layer is not None:
            layer.chain_consumers = chained.get(node, [])
            if node in chained:
                layer.output_layout = "channels_last"
            elif node in ends:
                layer.output_layout = "nchw"
            else:
                layer.output_layout = None
    log.info("channels_last chains: %d SSC layers may hand their output on", len(chained))
    return model


def _is_relu(node, modules) -> bool:
    """A ReLU of its first argument (module, function or method; in place or not)."""
    if node.op == "call_module":
        return type(modules.get(node.target)) is nn.ReLU
    if node.op == "call_function":
        return node.target in (F.relu, torch.relu, torch.relu_)
    return node.op == "call_method" and node.target in ("relu", "relu_")


def fuse_relu(model: nn.Module) -> nn.Module:
    """Fuse each ReLU that alone reads a frozen SSC layer's output into that layer.

    The fused kernels then apply it as they store the output
    (:attr:`SSConv2dInference.fused_relu`; the other paths apply ``torch.relu`` after), and
    the ReLU's own pass over the output (3-6 % of a frozen SSC VGG-19 on CPU) is gone. Values
    are unchanged: ``max(y, 0)`` either way, NaN kept. Works on a ``torch.fx``-traceable model
    and returns the rewritten ``torch.fx.GraphModule`` (the model itself when it is one);
    others are returned unchanged. Only layers called once are fused (the setting is the
    module's).
    """
    if isinstance(model, fx.GraphModule):
        gm = model
    else:
        try:
            gm = fx.GraphModule(model, SSCTracer().trace(model))
        except Exception as exc:  # not traceable: left as is
            log.debug("fuse_relu: model not traceable (%s)", exc)
            return model
    modules = dict(gm.named_modules())
    calls = collections.Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    fused = 0
    for node in list(gm.graph.nodes):
        layer = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(layer, SSConv2dInference) or calls[node.target] != 1:
            continue
        if layer.fused_relu or len(node.users) != 1:
            continue
        (user,) = node.users
        if not _is_relu(user, modules) or user.args[:1] != (node,) or len(user.args) > 1:
            continue
        if any(v is node for v in user.kwargs.values()):
            continue
        layer.fused_relu = True
        user.replace_all_uses_with(node)
        gm.graph.erase_node(user)
        fused += 1
    if fused:
        gm.graph.lint()
        gm.recompile()
    log.info("fuse_relu: %d ReLUs fused into frozen SSC layers", fused)
    return gm if fused or isinstance(model, fx.GraphModule) else model
