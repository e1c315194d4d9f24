"""How ``backend="auto"`` picks the execution path of an :class:`ssconv.SSConv2d` call.

The static rules measured in docs/benchmarks.md (the layer benchmark, the fused training
kernels, the pixel kernel), in one place: the stock backend of a layer, the fused CPU kernels
in inference and training, and the pixel-vectorised kernel. The functions read a layer's
backend, its shape and its pattern's decomposition (``_a`` input channels per residue group,
``_m`` filters per residue class, ``_identity_perm``), as :class:`ssconv.SSConv2d` and its
frozen twin keep them. :func:`ssconv.autotune` measures instead of using these rules.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssconv.kernels import fused

__all__ = [
    "STOCK_BACKENDS",
    "resolve",
    "stock_backend",
    "fused_by_default",
    "train_kernel",
    "trains_fused",
    "train_kernel_call",
    "infers_on_pixels",
    "pixel_rows_suit",
    "pixels_take_channels_last",
    "compiles_fused",
    "graph_key",
]

#: The backends built from stock PyTorch convolutions (what ``auto`` picks among where no
#: native kernel runs; what :func:`ssconv.autotune` times).
STOCK_BACKENDS = ("masked", "decomposed", "split")

# The static "auto" rule, from the layer benchmark (docs/benchmarks.md): one dense convolution
# beats the decomposition above this density, for layers narrower than AUTO_MIN_CHANNELS
# (fixed costs dominate) and when the grouped convolution's groups are narrower than
# AUTO_MIN_GROUP_WIDTH input channels (stock kernels are inefficient there), except when the
# spatial part is a plain depthwise convolution (one input and one output channel per group),
# which has its own fast kernels on CPU: decomposed was 1.4 to 9x faster than one dense
# convolution for every such layer measured, narrow, strided and checkerboard ones included.
# Not on CUDA: on an H200 the same change made CIFAR models slower (launch-bound kernels).
# ssconv.autotune measures instead.
AUTO_DENSE_ABOVE = 0.5
AUTO_MIN_CHANNELS = 64
AUTO_MIN_GROUP_WIDTH = 8
# "auto" uses the fused kernel in CPU inference for layers with a spatial part, period > 1, a
# spatial part that is not depthwise-like (see above: those run decomposed), and
# at least this many input and output channels (narrower ones ran faster on stock kernels in
# the layer benchmark: too little work per pixel to pay for the kernel's per-tile set-up), and,
# below AUTO_MIN_CHANNELS, only where its blocks execute at most AUTO_FUSED_MAX_WASTE times the
# effective MACs (residue classes narrower than a block waste lanes; measured on ResNet-32's
# 32-channel checkerboard layers at density 0.10, waste 2.7: slower than one dense conv).
AUTO_FUSED_MIN_CHANNELS = 32
AUTO_FUSED_MAX_WASTE = 2.0
# In inference on CPU, depthwise-like layers narrower than this run as one dense convolution
# after all: as single layers the two paths were within 7 % of each other at 16 channels, but
# inside frozen CIFAR ResNet-32s (ten such layers) the dense choice made the whole model 19 and
# 18 % faster in two in-process comparisons (1.03x -> 1.22x and 1.06x -> 1.32x over dense at
# density 0.10). Training keeps the rule above (its measurements covered forward + backward).
AUTO_DEPTHWISE_INFERENCE_MIN_CHANNELS = 32
# In training on CPU, "auto" runs stride-1 layers on the fused (pixel-vectorised) kernels where
# their output rows are at least AUTO_FUSED_TRAIN_MIN_WIDTH pixels wide, or at least
# AUTO_FUSED_TRAIN_NARROW_MIN_WIDTH for layers of at most AUTO_FUSED_TRAIN_NARROW channels
# (benchmarks/layer_speed.py --train, docs/benchmarks.md: all 30 stride-1 rows at 32 and 16
# pixels of ResNet-32 and VGG-19 were faster fused, 1.09-2.92x over the stock choice; at 8
# pixels the 64-channel layers were in 4 of 6 settings, the wider ones in 2 of 12; at 4 and 2
# pixels vectors are half empty and the stock choice was 2.1-6.7x faster). The rule picks the
# faster of the two in all but 4 of the 54 stride-1 rows (those 4 within 25 %).
AUTO_FUSED_TRAIN_MIN_WIDTH = 16
AUTO_FUSED_TRAIN_NARROW_MIN_WIDTH = 7
AUTO_FUSED_TRAIN_NARROW = 64
# Strided layers (since 2026-12-03: the pixel kernels read a strided layer's input through
# phase planes, and its input gradient runs as stride_y * stride_x stride-1 phases) train and
# infer on the pixel kernels where their output rows are at least this wide, whatever their
# width: forward + backward was 8-21 % faster than the stock choice at 14 and 16 output pixels
# (ResNet-32's 16 -> 32 @32/s2 in 5 of 7 settings, the Fashion-MNIST ResNet-20's @28/s2), and
# 1.1-2x slower at 8 (32 -> 64 @16/s2: four kernel calls with their set-up for 64 pixels).
AUTO_FUSED_STRIDED_MIN_WIDTH = 14
# Inference alone (forward, no gradients) of strided layers takes the pixel kernels from
# narrower rows: at 8 output pixels (ResNet-32's 32 -> 64 @16/s2) they were faster than the
# channel-lane kernel in 6 of 7 settings, 1.2x-1.5x (benchmarks/layer_speed.py --nchw,
# 2026-12-07, Zen 4: efficiency 0.32-0.53 against 0.21-0.45; P = 2: 0.57 against 0.62); it is
# the input gradient's stride phases that make training slower there.
AUTO_PIXELS_STRIDED_INFER_MIN_WIDTH = 8
# In training on CPU, stride-1 layers whose output rows are too short for the pixel kernels
# (the rule above) and at most AUTO_CHANNELS_TRAIN_MAX_WIDTH pixels wide train on the
# channel-lane kernels (forward, input gradient as the forward of the transposed packing,
# weight gradient; NHWC, through copies of NCHW tensors) where both their channel counts are
# at least AUTO_CHANNELS_TRAIN_MIN_CHANNELS. Measured (2026-12-07, Zen 4, 2 threads,
# benchmarks/channels_train_rule.py, docs/benchmarks.md): VGG-19's 8-, 4- and 2-pixel layers at
# densities 0.10 and 0.05, forward + backward 1.11-1.41x (8 px) and 1.34-2.77x (4, 2 px) the
# stock choice; ResNet-50's 256-channel 14-pixel layers (batch 8) 0.86-1.08x, hence the width
# limit; its 512-channel 7-pixel ones 1.05x (0.87-0.91x before the kernels split small maps
# evenly over the threads). Layers without a 1 x 1 part (one grouped convolution on the stock
# path) were 0.84-0.92x in all four such rows of benchmarks/layer_speed.py --train; narrower
# layers keep the stock choice too.
AUTO_CHANNELS_TRAIN_MIN_CHANNELS = 128
AUTO_CHANNELS_TRAIN_MAX_WIDTH = 8
# Inference of channels_last inputs runs the pixel kernel (through an NCHW copy and back) for
# layers of at most this many channels, where the channels_last kernel wastes most lanes.
PIXELS_CHANNELS_LAST_MAX = 32


def resolve(layer, inference: bool = False) -> str:
    """The backend that ``layer.forward`` runs (:meth:`ssconv.SSConv2d.resolved_backend`).

    ``inference=False`` (calls that need gradients): ``"masked"`` (one dense conv),
    ``"decomposed"`` or ``"split"``. ``inference=True`` (a float32 CPU call without
    gradients, not traced or compiled): ``"fused"`` where the fused kernel applies, else
    the same. Asking with ``inference=True`` builds the kernel if it is not built yet.
    """
    if layer._backend == "fused":
        return "fused" if inference else stock_backend(layer)
    if layer._backend != "auto":
        return layer._backend
    if inference and fused_by_default(layer):
        return "fused"
    stock = stock_backend(layer)
    if (
        inference
        and stock == "decomposed"
        and layer._a == 1
        and layer._m == 1
        and min(layer.in_channels, layer.out_channels) < AUTO_DEPTHWISE_INFERENCE_MIN_CHANNELS
        and layer._param_device().type == "cpu"
    ):
        return "masked"
    return stock


def fused_by_default(layer) -> bool:
    if not (
        layer._has_spatial
        and not layer._identity_perm
        and min(layer.in_channels, layer.out_channels) >= AUTO_FUSED_MIN_CHANNELS
        and layer._param_device().type == "cpu"
    ):
        return False
    if layer._a == 1 and layer._m == 1:
        # Depthwise-like spatial part (one filter and one input per residue class): every
        # class is its own block, which wastes lanes; oneDNN's depthwise + 1 x 1 kernels
        # (the decomposed path) were faster on VGG-19's such layers (8.4 vs 14.4 ms and
        # 6.6 vs 8.0 ms at density 0.10).
        return False
    narrow = min(layer.in_channels, layer.out_channels) < AUTO_MIN_CHANNELS
    if narrow and layer.fused_waste() > AUTO_FUSED_MAX_WASTE:
        return False
    return fused.available()


def stock_backend(layer) -> str:
    if layer._backend in STOCK_BACKENDS:
        return layer._backend
    if layer._identity_perm:
        # P = 1 or P = None: the decomposition is already a single stock convolution.
        return "decomposed"
    if layer.density > AUTO_DENSE_ABOVE:
        return "masked"
    if layer._a == 1 and layer._m == 1 and layer._param_device().type == "cpu":
        return "decomposed"  # depthwise spatial part + 1 x 1 (CPU only, see AUTO_ rule)
    if (
        min(layer.in_channels, layer.out_channels) < AUTO_MIN_CHANNELS
        or layer._a < AUTO_MIN_GROUP_WIDTH
    ):
        return "masked"
    return "decomposed"


def train_kernel(layer, input_width: int | None = None) -> str | None:
    """The fused kernels a gradient-needing float32 CPU call on inputs ``input_width`` pixels
    wide trains on: ``"pixels"`` (the :func:`trains_fused` rule), ``"channels"`` (the
    channel-lane kernels: ``"auto"`` layers at stride 1 whose rows are too short for the
    pixel kernels, the AUTO_CHANNELS_TRAIN_* rule), None (the stock choice).
    ``input_width=None`` answers for the pixel kernels alone."""
    if trains_fused(layer, input_width):
        return "pixels"
    if (
        layer._backend != "auto"
        or input_width is None
        or not (layer._has_spatial and layer._has_point)
        or tuple(layer.stride) != (1, 1)
        or min(layer.in_channels, layer.out_channels) < AUTO_CHANNELS_TRAIN_MIN_CHANNELS
        or layer._param_device().type != "cpu"
    ):
        return None
    padding = (0, 0) if layer.padding_mode != "zeros" else layer.padding
    if fused.transposed_geometry(layer.kernel_size, (1, 1), padding, layer.dilation) is None:
        return None
    span = input_width + 2 * padding[1] - layer.dilation[1] * (layer.kernel_size[1] - 1)
    if span > AUTO_CHANNELS_TRAIN_MAX_WIDTH or not fused.available():
        return None
    return "channels"


def trains_fused(layer, input_width: int | None = None, *, inference: bool = False) -> bool:
    """Whether gradient-needing float32 CPU calls (on inputs ``input_width`` pixels wide)
    run on the fused training kernels.

    They do for ``backend="fused"``, and for ``"auto"`` on CPU where the kernel is built,
    for layers with a spatial part (at stride 1, padding at most ``dilation * (k - 1)``)
    whose output rows are wide enough for the pixel-vectorised kernels (the
    AUTO_FUSED_TRAIN_* rule, AUTO_FUSED_STRIDED_MIN_WIDTH for strided layers;
    ``input_width=None`` skips that check; ``inference=True``: the rule of calls without
    gradients, AUTO_PIXELS_STRIDED_INFER_MIN_WIDTH for strided layers). Other devices and
    dtypes, tracing and
    ``torch.export`` use the stock choice of :func:`resolve`; ``torch.compile`` follows this
    rule with the kernels as graph ops (:func:`compiles_fused`, :func:`graph_key`). Builds
    the kernel if it is not built yet.
    """
    padding = (0, 0) if layer.padding_mode != "zeros" else layer.padding
    if layer._backend == "fused":
        wanted = True
    elif layer._backend == "auto":
        wanted = layer._has_spatial and layer._param_device().type == "cpu"
        if wanted and input_width is not None:
            channels = min(layer.in_channels, layer.out_channels)
            wanted = pixel_rows_suit(
                layer.kernel_size,
                padding,
                layer.dilation,
                channels,
                input_width,
                layer.stride,
                inference=inference,
            )
    else:
        return False
    if not wanted:
        return False
    stride1 = tuple(layer.stride) == (1, 1)
    if (
        stride1
        and fused.transposed_geometry(layer.kernel_size, (1, 1), padding, layer.dilation) is None
    ):
        return False
    # An explicit "fused" raises in forward when the kernel cannot be built, as in inference.
    return layer._backend == "fused" or fused.available()


def infers_on_pixels(layer, x: Tensor) -> bool:
    """Whether this inference call (float32 CPU, no gradients) runs on the pixel kernel:
    NCHW inputs of layers that train on it too (:func:`trains_fused`), except
    period-1 / pointwise layers, which are one stock convolution (measured: the pixel
    kernel is 2-11x faster than the channel-lane kernel and the stock paths on ResNet-32's
    16- to 64-channel layers, docs/benchmarks.md)."""
    if layer._backend == "auto" and layer._identity_perm:
        return False
    if layer._backend not in ("fused", "auto") or x.dim() != 4:
        return False
    if _is_channels_last(x) and not pixels_take_channels_last(layer):
        return False
    return trains_fused(layer, x.shape[-1], inference=True)


def train_kernel_call(layer, x: Tensor) -> str | None:
    """The fused kernels this gradient-needing call trains on (:func:`train_kernel`), None
    for the stock choice."""
    if layer._backend not in ("fused", "auto"):
        return None
    if layer._backend == "auto" and x.dtype != torch.float32:
        return None
    if not fused.can_train(x, list(layer.parameters())):
        return None
    return train_kernel(layer, x.shape[-1])


def pixel_rows_suit(
    kernel_size: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    channels: int,
    input_width: int,
    stride: tuple[int, int] = (1, 1),
    *,
    inference: bool = False,
) -> bool:
    """The AUTO_FUSED_TRAIN_* rule: output rows wide enough for the pixel-vectorised kernels
    (8-pixel vectors), narrower ones allowed for narrow stride-1 layers;
    AUTO_FUSED_STRIDED_MIN_WIDTH for strided ones (AUTO_PIXELS_STRIDED_INFER_MIN_WIDTH for
    calls without gradients, ``inference=True``)."""
    span = input_width + 2 * padding[1] - dilation[1] * (kernel_size[1] - 1)
    out_width = (span - 1) // stride[1] + 1
    if tuple(stride) != (1, 1):
        if inference:
            return out_width >= AUTO_PIXELS_STRIDED_INFER_MIN_WIDTH
        return out_width >= AUTO_FUSED_STRIDED_MIN_WIDTH
    narrow = channels <= AUTO_FUSED_TRAIN_NARROW
    return out_width >= AUTO_FUSED_TRAIN_MIN_WIDTH or (
        narrow and out_width >= AUTO_FUSED_TRAIN_NARROW_MIN_WIDTH
    )


def pixels_take_channels_last(layer) -> bool:
    """Whether channels_last inputs go to the pixel kernel (through an NCHW copy and back):
    for layers of at most PIXELS_CHANNELS_LAST_MAX channels."""
    return min(layer.in_channels, layer.out_channels) <= PIXELS_CHANNELS_LAST_MAX


def _is_channels_last(x: Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def compiles_fused(layer, x: Tensor) -> bool:
    """Whether a call of ``layer`` traced by ``torch.compile`` may run the fused kernels as
    the graph op ``ssconv::ssc_conv2d`` (:mod:`ssconv.kernels.graph_ops`): a 4-d CPU input
    of float32 (float64 for ``backend="fused"``), parameters alike, no autocast. Whether the
    layer's shape suits them is :func:`graph_key`'s part. Traced, so it reads only what
    dynamo can see (dtypes, devices, the backend)."""
    if layer._backend not in ("fused", "auto") or x.dim() != 4 or x.device.type != "cpu":
        return False
    dtypes = (torch.float32,) if layer._backend == "auto" else (torch.float32, torch.float64)
    if x.dtype not in dtypes or fused._cpu_autocast():
        return False
    return all(p.device.type == "cpu" and p.dtype == x.dtype for p in layer.parameters())


def _graph_key(layer, input_width: int, padding: tuple[int, int]) -> int:
    """The :mod:`ssconv.kernels.graph_ops` key of ``layer``'s kernels on inputs
    ``input_width`` pixels wide, -1 where they do not apply (the :func:`trains_fused` rule;
    the pixel kernel's rule for frozen layers). Registers the layer's plans on first use
    (eager: dynamo runs it at trace time and keeps its result as a constant, see
    :data:`graph_key`). Builds the kernel if it is not built yet."""
    if not isinstance(input_width, int):  # a dynamic shape: the rule needs the width
        return -1
    return layer._graph_program_key(input_width, tuple(padding))


# torch.compiler.assume_constant_result(fn) sets this flag on fn (dynamo then calls fn at
# trace time and keeps its result), but it imports torch._dynamo (seconds), which
# `import ssconv` must not pay; tests/layers/test_graph_ops.py checks that dynamo honours it.
_graph_key._dynamo_marked_constant = True  # type: ignore[attr-defined]
graph_key = _graph_key
