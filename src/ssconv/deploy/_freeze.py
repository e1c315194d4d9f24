"""Freezing: an inference copy of a model, BatchNorm folded, SSC layers frozen
(:class:`~ssconv.layers.inference.SSConv2dInference`), activations kept in residue channel order
between SSC layers that share it."""

from __future__ import annotations

import copy

from torch import nn

from ssconv.deploy.batchnorm import fold_batchnorm
from ssconv.deploy.channel_order import chain_channels_last, fuse_relu, optimize_channel_order
from ssconv.layers.inference import SSConv2dInference
from ssconv.layers.ssconv import SSConv2d
from ssconv.utils.modules import replace_module

__all__ = ["freeze", "FREEZE_TARGETS"]

#: The runtimes :func:`freeze` can choose the stock-operator form for.
FREEZE_TARGETS = ("torch", "onnxruntime")
#: Largest ``in_channels * out_channels`` whose 1 x 1 part freeze(target="onnxruntime") holds
#: ungrouped: ResNet-32's 16- to 64-channel layers ran 6-8 % faster that way in onnxruntime
#: (docs/benchmarks.md, "onnxruntime"); wider layers were not measured.
ORT_DENSE_POINT_MAX = 64 * 64


def _depthwise_spatial(layer: SSConv2d) -> bool:
    """Whether the layer's grouped K x K convolution has one input channel per group."""
    d = layer.pattern.decomposition()
    return d.has_spatial and d.spatial_per_filter == 1


def freeze(
    model: nn.Module,
    *,
    fold_bn: bool = True,
    dense_above: float | None = None,
    channel_order: bool = True,
    target: str = "torch",
    fast_pooling: bool | None = None,
    relu_fusion: bool | None = None,
):
    """An inference copy of ``model``: pruning masks baked in, BatchNorm folded, SSC layers
    frozen.

    Args:
        fold_bn: fold BatchNorm into the preceding convolutions.
        dense_above: SSC layers denser than this run as one dense convolution (default: the
            layer's own ``auto`` choice).
        channel_order: keep activations in residue order between SSC layers that share it
            (:func:`optimize_channel_order`).
        target: the runtime the stock-operator form is chosen for. ``"torch"`` (default): each
            layer's own ``auto`` choice. ``"onnxruntime"`` (what :func:`export_onnx` uses):
            layers whose spatial part is depthwise (one spatial kernel per filter, ``A = 1``)
            run decomposed, a depthwise K x K plus a grouped 1 x 1 convolution, which
            onnxruntime's depthwise fast path runs several times faster than the one dense
            convolution PyTorch prefers (docs/benchmarks.md, "onnxruntime"); shuffled layers
            run their channel shuffle and residue reorders as index gathers, shared between
            consecutive layers, and narrow ones hold their 1 x 1 part ungrouped
            (:meth:`SSConv2dInference.use_gathered_input`).
        fast_pooling: 2 x 2 max pools on ssconv's NCHW kernel
            (:func:`ssconv.layers.pooling.fast_pooling`; equal results, PyTorch's code for
            other windows and layouts). Default: on for ``target="torch"``, off for
            ``"onnxruntime"`` (an export holds the standard operator either way).
        relu_fusion: fuse each ReLU that alone reads a frozen SSC layer's output into the
            layer (:func:`fuse_relu`: the fused kernels apply it as they store; a traceable
            model then comes back as a ``torch.fx.GraphModule``, as with ``channel_order``).
            Default: on for ``target="torch"``, off for ``"onnxruntime"``.

    With ``target="torch"`` frozen SSC layers on the fused kernel also hand channels_last
    outputs to each other (:func:`chain_channels_last`).
    """
    if target not in FREEZE_TARGETS:
        raise ValueError(f"target must be one of {FREEZE_TARGETS}, got {target!r}")
    from ssconv.pruning.masks import mask_parametrization, remove_masks

    if any(mask_parametrization(m) is not None for m in model.modules()):
        # A pruned model: masks baked into plain weights, so that its BatchNorms fold and an
        # export holds plain convolutions (no mask multiplies).
        model = remove_masks(copy.deepcopy(model))
    model = fold_batchnorm(model) if fold_bn else copy.deepcopy(model).eval()
    for name, layer in [(n, m) for n, m in model.named_modules() if isinstance(m, SSConv2d)]:
        if dense_above is not None:
            mode = "dense" if layer.density > dense_above else "decomposed"
        else:
            # The layer's own inference choice (a fused layer keeps decomposed stock kernels
            # for export and for devices without the kernel).
            mode = "dense" if layer.resolved_backend(inference=True) == "masked" else "decomposed"
            if target == "onnxruntime" and _depthwise_spatial(layer):
                mode = "decomposed"
        frozen = SSConv2dInference(layer, mode)
        if target == "onnxruntime" and frozen.gathered_input_applies():
            # Gathers instead of reorders; in narrow layers an ungrouped 1 x 1 part, which
            # onnxruntime fuses with the add (measured up to 64 x 64 channels).
            narrow = layer.in_channels * layer.out_channels <= ORT_DENSE_POINT_MAX
            frozen.use_gathered_input(dense_point=narrow)
        replace_module(model, name, frozen)
    if fast_pooling is None:
        fast_pooling = target == "torch"
    if fast_pooling:
        from ssconv.layers.pooling import fast_pooling as use_fast_pooling

        use_fast_pooling(model)
    if channel_order:
        model = optimize_channel_order(model)
    if target == "torch":
        chain_channels_last(model)  # only the fused kernel reads the setting (eager, CPU)
    if relu_fusion is None:
        relu_fusion = target == "torch"
    if relu_fusion:
        model = fuse_relu(model)  # ReLUs into the kernels' stores (other paths apply them)
    return model.eval()
