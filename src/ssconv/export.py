"""Deployment: freeze a model for inference (BatchNorm folded, SSC kernels precomputed) and
export it to ONNX or TorchScript.

A frozen SSC layer (:class:`SSConv2dInference`) holds its grouped K x K and 1 x 1 kernels as
buffers and runs only standard operators: reshape / transpose for the channel order, a grouped
convolution, a 1 x 1 convolution and an add (or, where one dense convolution is faster, that
single convolution). Exported graphs therefore contain nothing but ``Conv``, ``Add``,
``Reshape`` / ``Transpose`` and the model's own operators.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssconv.kernels import fused
from ssconv.layers.ssconv import (
    SSConv2d,
    SSCTracer,
    _is_channels_last,
    centre_input,
    pixel_rows_suit,
    pixels_take_channels_last,
    shuffle_channels,
)
from ssconv.models.convert import replace_module

__all__ = [
    "ChannelOrder",
    "SSConv2dInference",
    "optimize_channel_order",
    "residue_permutation",
    "fold_batchnorm",
    "freeze",
    "export_onnx",
    "export_torchscript",
    "ExportReport",
]

log = logging.getLogger(__name__)


class SSConv2dInference(nn.Module):
    """A frozen :class:`SSConv2d`: precomputed kernels, standard operators only.

    Args:
        layer: the trained layer.
        mode: ``"decomposed"`` (grouped K x K + 1 x 1, executes about the effective MACs) or
            ``"dense"`` (the folded dense weight, one convolution).
    """

    _fx_leaf = True  # one call_module node under SSCTracer

    def __init__(self, layer: SSConv2d, mode: str = "decomposed") -> None:
        super().__init__()
        if mode not in ("decomposed", "dense"):
            raise ValueError(f"mode must be 'decomposed' or 'dense', got {mode!r}")
        self.mode = mode
        # In "residue" channel order the layer reads its input and writes its output with the
        # channels of each group ordered by residue (see residue_tag); set by
        # optimize_channel_order so that a chain of such layers needs no transposes.
        self.residue = False
        self.in_channels, self.out_channels = layer.in_channels, layer.out_channels
        self.kernel_size = layer.kernel_size
        self.stride, self.padding, self.dilation = layer.stride, layer.padding, layer.dilation
        self.groups, self.padding_mode = layer.groups, layer.padding_mode
        self.pattern = layer.pattern
        self.dense_groups = layer.dense_groups
        self._pad4 = list(layer._reversed_padding_repeated_twice)
        self._p, self._a, self._m = layer._p, layer._a, layer._m
        self._has_spatial, self._has_point = layer._has_spatial, layer._has_point
        self._identity_perm, self._pad_rows = layer._identity_perm, layer._pad_rows
        # A shuffled layer shuffles its input channels first (Reshape / Transpose when
        # exported); the fused kernel reads through the permutation instead.
        self.shuffle = layer.shuffle
        self.register_buffer("in_index", layer.in_index.detach().clone(), persistent=False)
        with torch.no_grad():
            bias = None if layer.bias is None else layer.bias.detach().clone()
            self.register_buffer("bias", bias)
            if mode == "dense":
                self.register_buffer("weight", layer.to_dense().detach().clone())
            else:
                ws = layer.grouped_spatial_weight().detach().clone() if self._has_spatial else None
                wp = None
                if self._has_point:
                    wp = layer.point_matrix().detach().view(self.out_channels, -1, 1, 1).clone()
                self.register_buffer("weight_spatial", ws)
                self.register_buffer("weight_point", wp)
            # Whether eager float32 CPU calls run the fused kernel (where the layer itself would
            # in inference); everything else (export, tracing, other devices) runs the stock
            # operators above. Its packed weights are derived from the buffers on first use
            # (and again after they change, e.g. by load_state_dict); they are not saved.
            self.fused = layer.resolved_backend(inference=True) == "fused"
            # Stride-1 NCHW calls wide enough for it run the pixel kernel instead, as the
            # layer itself does (SSConv2d._infers_on_pixels; the width is checked per call).
            self.pixels = (
                layer._backend in ("auto", "fused")
                and layer._has_spatial
                and not (layer._backend == "auto" and layer._identity_perm)
                and layer.trains_fused(None)
            )
            self._out_pos = layer.out_pos.detach().cpu().clone()

    @property
    def num_params(self) -> int:
        return self.pattern.num_params

    @property
    def dense_weight_count(self) -> int:
        kh, kw = self.kernel_size
        return self.out_channels * (self.in_channels // self.dense_groups) * kh * kw

    def residue_tags(self) -> tuple[tuple, tuple] | None:
        """Channel-order tags (input, output) of residue mode, or None when not applicable."""
        if (
            self.mode != "decomposed"
            or self.shuffle
            or not self._has_spatial
            or self._identity_perm
            or self._pad_rows
        ):
            return None
        return ((self.groups, self._p, self.in_channels), (self.groups, self._p, self.out_channels))

    @torch.no_grad()
    def use_residue_order(self) -> None:
        """Switch to residue channel order: the 1 x 1 weights and the bias are permuted once."""
        if self.residue_tags() is None:
            raise ValueError(
                "this layer has no residue channel order (dense mode, period 1 / "
                "None, or padded residue classes)"
            )
        if self.residue:
            return
        out_perm = residue_permutation(self.groups, self._p, self.out_channels)
        if self.weight_point is not None:
            cin_g = self.in_channels // self.groups
            local = residue_permutation(1, self._p, cin_g)
            self.weight_point = self.weight_point[out_perm][:, local].contiguous()
        if self.bias is not None:
            self.bias = self.bias[out_perm].contiguous()
        self.residue = True

    def forward(self, x: Tensor) -> Tensor:
        padding = self.padding
        if self.padding_mode != "zeros":
            x = F.pad(x, self._pad4, mode=self.padding_mode)
            padding = (0, 0)
        # can_run first: it is False while tracing, where the width is not a Python int.
        if self.pixels and fused.can_run(x, self._weights()) and self._pixels_suit(x, padding):
            return fused.pixel_conv2d(
                x, self._pixel_packed(), self.kernel_size, self.stride, padding, self.dilation
            )
        if self.fused and fused.can_run(x, self._weights()):
            return fused.fused_conv2d(
                x, self._fused_packed(), self.kernel_size, self.stride, padding, self.dilation
            )
        if self.shuffle:
            x = shuffle_channels(x, self.groups, self.in_channels)
        if self.residue:
            return self._forward_residue(x, padding)
        if self.mode == "dense":
            return F.conv2d(
                x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups
            )
        g, p, a, m = self.groups, self._p, self._a, self._m
        out = None
        if self._has_point:
            out = self._point_conv(x, padding)
        if not self._has_spatial:
            return out
        bias = None if self._has_point else self.bias
        if self._identity_perm:
            y = F.conv2d(
                x,
                self.weight_spatial,
                bias if self._p == 1 else None,
                self.stride,
                padding,
                self.dilation,
                g,
            )
            return y if out is None else out + y
        n, _, h, w = x.shape
        xs = x.reshape(n, g, a, p, h, w).transpose(2, 3).reshape(n, g * a * p, h, w)
        y = F.conv2d(xs, self.weight_spatial, None, self.stride, padding, self.dilation, g * p)
        ho, wo = y.shape[2], y.shape[3]
        cout_g = self.out_channels // g
        y = y.reshape(n, g, p, m, ho, wo).transpose(2, 3).reshape(n, g, m * p, ho, wo)
        y = y[:, :, :cout_g].reshape(n, self.out_channels, ho, wo)
        if out is None:
            return y if bias is None else y + bias.view(1, -1, 1, 1)
        return out + y

    @torch.no_grad()
    def dense_weight(self) -> Tensor:
        """The equivalent dense weight ``(C_out, C_in/G, kh, kw)`` in the layer's channel order
        (over its logical inputs: a shuffled layer reads input channel ``in_index[q]``)."""
        if self.mode == "dense":
            return self.weight
        g, p = self.groups, self._p
        kh, kw = self.kernel_size
        full = None
        if self._has_spatial:
            ws = self.weight_spatial
            if self._identity_perm:
                full = fused.full_weight(ws, g)
            else:
                full = fused.full_weight(ws, g * p)  # rows (g, s, b), columns in residue order
                if not self.residue:
                    cols = torch.argsort(residue_permutation(g, p, self.in_channels))
                    full = full[self._out_pos.to(ws.device)][:, cols.to(ws.device)]
        if self._has_point:
            point = fused.full_weight(self.weight_point, g)[:, :, 0]
            if full is None:
                full = point.new_zeros(self.out_channels, self.in_channels, kh * kw)
            full = full.clone()
            full[:, :, (kh // 2) * kw + kw // 2] += point
        assert full is not None
        return fused.grouped_weight(full, g, self.kernel_size)

    def dense_mask(self) -> Tensor:
        """The pattern's structural mask, like :meth:`dense_weight` in the layer's channel order."""
        mask = self.pattern.dense_mask()
        if self.residue:
            out_perm = residue_permutation(self.groups, self._p, self.out_channels)
            local = residue_permutation(1, self._p, self.in_channels // self.groups)
            mask = mask[out_perm][:, local]
        return mask

    def _fused_packed(self) -> fused.PackedWeight:
        return fused.cached_pack(
            self,
            (self.residue, *fused.weights_key([*self._weights(), self.bias])),
            lambda: fused.pack(
                self.dense_weight(),
                self.dense_mask(),
                self.bias,
                self.groups,
                in_order=self.in_index.cpu() if self.shuffle else None,
            ),
        )

    def _pixels_suit(self, x: Tensor, padding: tuple[int, int]) -> bool:
        if x.dim() != 4 or (_is_channels_last(x) and not pixels_take_channels_last(self)):
            return False
        channels = min(self.in_channels, self.out_channels)
        return pixel_rows_suit(self.kernel_size, padding, self.dilation, channels, x.shape[-1])

    def _pixel_packed(self) -> fused.PixelPacked:
        def make() -> fused.PixelPacked:
            order = self.in_index.cpu() if self.shuffle else None
            plan = fused.make_plan(self.dense_mask(), self.groups, kernel="pixels", in_order=order)
            return fused.pack_pixels(self.dense_weight(), self.bias, plan)

        return fused.cached_pack(
            self,
            (self.residue, *fused.weights_key([*self._weights(), self.bias])),
            make,
            slot="_fused_pixel_cache",
        )

    def _weights(self) -> list[Tensor]:
        names = ("weight",) if self.mode == "dense" else ("weight_spatial", "weight_point")
        return [t for t in (getattr(self, n) for n in names) if t is not None]

    def _forward_residue(self, x: Tensor, padding: tuple[int, int]) -> Tensor:
        g, p = self.groups, self._p
        bias = None if self._has_point else self.bias
        y = F.conv2d(x, self.weight_spatial, bias, self.stride, padding, self.dilation, g * p)
        if not self._has_point:
            return y
        return self._point_conv(x, padding) + y

    def _point_conv(self, x: Tensor, padding: tuple[int, int]) -> Tensor:
        """The 1 x 1 kernels (bias included), reading each K x K window's centre tap."""
        xc, pad1 = centre_input(x, self.kernel_size, self.dilation, padding)
        return F.conv2d(xc, self.weight_point, self.bias, self.stride, pad1, 1, self.groups)

    def extra_repr(self) -> str:
        order = ", residue order" if self.residue else ""
        if self.shuffle:
            order += ", shuffle"
        if self.pixels:
            order += ", fused pixel kernel (stride-1 NCHW)"
        if self.fused:
            order += ", fused CPU kernel"
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, {self.pattern.describe()}, mode={self.mode}{order}"
        )


# ------------------------------------------------------------------ channel order
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
        from ssconv.layers.ssconv import _channel_transpose, _is_channels_last

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
    import operator

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
    import operator

    if node.op == "call_function":
        return node.target in (operator.add, operator.iadd, torch.add)
    return node.op == "call_method" and node.target in ("add", "add_")


def optimize_channel_order(model: nn.Module) -> nn.Module:
    """Run chains of SSC layers in residue channel order, converting only where orders differ.

    Each frozen SSC layer normally permutes its input into residue order and its output back.
    Between two layers with the same ``(groups, period, channels)`` (through ReLU, pooling and
    residual adds) both permutations cancel; this pass removes them and keeps conversions
    (:class:`ChannelOrder`) only where orders really change. Outputs are unchanged (up to
    floating-point summation order). Works on a ``torch.fx``-traceable frozen model; others
    are returned unchanged with a warning.
    """
    import torch.fx as fx

    if any(
        isinstance(m, ChannelOrder) or (isinstance(m, SSConv2dInference) and m.residue)
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
            gm.add_submodule(name, ChannelOrder(source, target))
            with gm.graph.inserting_after(node):
                converters[key] = gm.graph.call_module(name, (node,))
            tags[converters[key]] = target
        return converters[key]

    for node in list(gm.graph.nodes):
        if node in tags or node.op in ("placeholder", "get_attr"):
            tags.setdefault(node, None)
            continue
        module = modules.get(node.target) if node.op == "call_module" else None
        args = [a for a in node.args if isinstance(a, fx.Node)]
        if isinstance(module, SSConv2dInference) and module.residue_tags() is not None:
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


# ----------------------------------------------------------------------- BN folding
def _fold_into_ssc(layer: SSConv2d, bn: nn.BatchNorm2d) -> SSConv2d:
    fused = copy.deepcopy(layer)
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
        if fused.weight_spatial is not None:
            if fused.weight_spatial.dim() == 1:  # checkerboard: flat taps in mask order
                per_tap = scale.view(-1, 1, 1, 1).expand(fused.tap_mask.shape)[fused.tap_mask]
                fused.weight_spatial.mul_(per_tap)
            else:
                fused.weight_spatial.mul_(scale.view(-1, 1, 1, 1))
        if fused.weight_point is not None:
            fused.weight_point.mul_(scale.view(-1, 1))
        bias = fused.bias if fused.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = (bias - bn.running_mean) * scale + bn.bias
        fused.bias = nn.Parameter(new_bias)
    return fused


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a conv into that conv.

    Uses ``torch.fx`` (SSC layers are leaves); a model that cannot be traced is returned
    unchanged with a warning. Works on a copy.
    """
    import torch.fx as fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

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
            fused = fuse_conv_bn_eval(conv, bn)
        elif isinstance(conv, SSConv2d):
            fused = _fold_into_ssc(conv, bn)
        else:
            continue
        replace_module(gm, prev.target, fused)
        modules[prev.target] = fused
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        folded += 1
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    log.info("folded %d BatchNorm layers", folded)
    return gm


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


# ---------------------------------------------------------------------------- export
@dataclass
class ExportReport:
    path: Path
    format: str
    op_types: list[str] = field(default_factory=list)
    max_abs_diff: float | None = None
    #: Batch sizes onnxruntime was checked at (two for a dynamic batch axis).
    checked_batches: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        diff = "" if self.max_abs_diff is None else f", max |diff| {self.max_abs_diff:.2e}"
        if self.checked_batches:
            diff += " at batch " + " and ".join(map(str, self.checked_batches))
        ops = f", ops: {', '.join(self.op_types)}" if self.op_types else ""
        return f"wrote {self.path} ({self.format}{diff}{ops})"


def _example(model: nn.Module, input_size, batch: int = 1) -> Tensor:
    size = tuple(input_size)
    if len(size) == 3:
        size = (batch, *size)
    p = next(iter(model.parameters()), None)
    if p is None:
        p = next(iter(model.buffers()), None)
    return torch.randn(size, device=p.device if p is not None else "cpu")


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size,
    *,
    opset: int = 18,
    check: bool = True,
    dynamo: bool | None = None,
    atol: float = 1e-4,
    batch: int = 1,
    dynamic_batch: bool = True,
) -> ExportReport:
    """Freeze ``model`` and export it to ONNX; with ``check``, compare onnxruntime's output.

    ``input_size`` is ``(C, H, W)`` (or a full ``(N, C, H, W)``); the example input holds
    ``batch`` images. With ``dynamic_batch`` (default) the graph's batch axis is symbolic
    (``"batch"``), and ``check`` runs onnxruntime at two batch sizes (``batch`` and
    ``batch + 2``). ``dynamo=None`` uses the dynamo exporter when ``onnxscript`` is installed,
    else the TorchScript-based one. Raises ``RuntimeError`` when onnxruntime disagrees beyond
    ``atol`` (relative to the output's scale when that exceeds 1: float32 sums over thousands
    of terms differ by more than 1e-4 in absolute terms between two correct runtimes).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frozen = freeze(model)
    x = _example(frozen, input_size, batch)
    # torch.export specializes a dimension of size 1: trace the dynamic graph at batch 2.
    x_trace = x if not dynamic_batch or x.shape[0] > 1 else x.repeat(2, 1, 1, 1)
    if dynamo is None:
        try:
            import onnxscript  # noqa: F401

            dynamo = True
        except ImportError:
            dynamo = False
    with torch.no_grad():
        kwargs = {
            "dynamo": dynamo,
            "opset_version": opset,
            "input_names": ["input"],
            "output_names": ["output"],
        }
        if dynamo:
            kwargs["external_data"] = False
            if dynamic_batch:
                kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
        elif dynamic_batch:
            kwargs["dynamic_axes"] = {"input": {0: "batch"}, "output": {0: "batch"}}
        # Stock operators only in the graph: the fused kernel is not an ONNX operator.
        with warnings.catch_warnings(), fused.disabled():
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter's notice
            # The TorchScript-based exporter warns (three times per model) that it cannot fold a
            # Slice whose step is not 1: the Slice just stays in the graph, checked below.
            warnings.filterwarnings(
                "ignore", message="Constant folding - Only steps=1", category=UserWarning
            )
            torch.onnx.export(frozen, (x_trace,), str(path), verbose=False, **kwargs)
    report = ExportReport(path, f"onnx opset {opset}")
    try:
        import onnx

        graph = onnx.load(str(path)).graph
        report.op_types = sorted({n.op_type for n in graph.node})
    except ImportError:
        pass
    if check:
        try:
            import onnxruntime as ort
        except ImportError:
            log.warning("onnxruntime is not installed: exported graph not checked")
            return report
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = [x]
        if dynamic_batch:
            inputs.append(_example(frozen, input_size, x.shape[0] + 2))
        report.max_abs_diff = 0.0
        for xi in inputs:
            with torch.no_grad(), fused.disabled():
                reference = frozen(xi)
            out = session.run(None, {session.get_inputs()[0].name: xi.cpu().numpy()})[0]
            diff = (torch.from_numpy(out) - reference.cpu()).abs().max().item()
            report.max_abs_diff = max(report.max_abs_diff, diff)
            report.checked_batches.append(int(xi.shape[0]))
            scale = max(1.0, reference.abs().max().item())
            if diff > atol * scale:
                raise RuntimeError(
                    f"ONNX export of {path} disagrees with PyTorch at batch {xi.shape[0]}: "
                    f"max |diff| {diff:.3g} > {atol} x output scale {scale:.3g}"
                )
    return report


def export_torchscript(model: nn.Module, path: str | Path, input_size) -> ExportReport:
    """Freeze ``model``, trace it with TorchScript and save it (``torch.jit.load`` reads it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frozen = freeze(model)
    x = _example(frozen, input_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with fused.disabled():  # the graph and its reference: stock operators
            traced = torch.jit.trace(frozen, (x,))
            torch.jit.save(traced, str(path))
            loaded = torch.jit.load(str(path))
            diff = (loaded(x) - frozen(x)).abs().max().item()
    return ExportReport(path, "torchscript", max_abs_diff=diff)
