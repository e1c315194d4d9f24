"""The frozen twin of :class:`~ssconv.SSConv2d`: precomputed kernels, standard operators only.

A frozen SSC layer (:class:`SSConv2dInference`) holds its grouped K x K and 1 x 1 kernels as
buffers and runs only standard operators: reshape / transpose (or index gathers) for the
channel order, a grouped convolution, a 1 x 1 convolution and an add (or, where one dense
convolution is faster, that single convolution), so that exported graphs contain nothing but
``Conv``, ``Add``, ``Reshape`` / ``Transpose`` / ``Gather`` and the model's own operators.
:func:`ssconv.deploy.freeze` builds them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssconv.kernels import fused, graph_ops
from ssconv.layers.channel_order import read_through, residue_permutation
from ssconv.layers.dispatch import (
    _is_channels_last,
    graph_key,
    pixel_rows_suit,
    pixels_take_channels_last,
)
from ssconv.layers.pooling import pooled_width
from ssconv.layers.ssconv import SSConv2d, centre_input, pad_arguments, shuffle_channels

__all__ = ["SSConv2dInference"]


_LAYOUTS = {None: None, "channels_last": True, "nchw": False}


class SSConv2dInference(nn.Module):
    """A frozen :class:`SSConv2d`: precomputed kernels, standard operators only.

    Args:
        layer: the trained layer.
        mode: ``"decomposed"`` (grouped K x K + 1 x 1, executes about the effective MACs) or
            ``"dense"`` (the folded dense weight, one convolution).
    """

    _fx_leaf = True  # one call_module node under SSCTracer
    # torch.relu of the output, fused into the kernels' store where they run (set by
    # ssconv.deploy.fuse_relu for layers whose output only a ReLU reads, which it removes;
    # the other paths apply it after). Class-level default: layers pickled before it load.
    fused_relu: bool = False

    def __init__(self, layer: SSConv2d, mode: str = "decomposed") -> None:
        super().__init__()
        if mode not in ("decomposed", "dense"):
            raise ValueError(f"mode must be 'decomposed' or 'dense', got {mode!r}")
        self.mode = mode
        # In "residue" channel order the layer reads its input and writes its output with the
        # channels of each group ordered by residue (see residue_tag); set by
        # optimize_channel_order so that a chain of such layers needs no transposes.
        self.residue = False
        # In "gathered" form (use_gathered_input, what freeze(target="onnxruntime") picks for
        # shuffled layers) the shuffle and both residue reorders run as two index gathers.
        self.gathered = False
        # Groups of the 1 x 1 convolution: the layer's point_groups (1 where the gathered form
        # holds the 1 x 1 part dense).
        self.point_groups = layer.point_groups
        self.in_channels, self.out_channels = layer.in_channels, layer.out_channels
        self.kernel_size = layer.kernel_size
        self.stride, self.padding, self.dilation = layer.stride, layer.padding, layer.dilation
        self.groups, self.padding_mode = layer.groups, layer.padding_mode
        self.pattern = layer.pattern
        self.dense_groups = layer.dense_groups
        self._pad4 = pad_arguments(self.padding)
        # The layer's static structure, from the same pattern (never its private copies).
        d = self.pattern.decomposition()
        self._p, self._a, self._m = d.period, d.spatial_per_filter, d.outputs_per_residue
        self._has_spatial, self._has_point = d.has_spatial, d.has_point
        self._identity_perm, self._pad_rows = d.identity_perm, d.pad_rows
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
                    wp = layer.point_group_matrix().detach()
                    wp = wp.view(self.out_channels, -1, 1, 1).clone()
                self.register_buffer("weight_spatial", ws)
                self.register_buffer("weight_point", wp)
            # Whether eager float32 CPU calls run the fused kernel (where the layer itself would
            # in inference); everything else (export, tracing, other devices) runs the stock
            # operators above. Its packed weights are derived from the buffers on first use
            # (and again after they change, e.g. by load_state_dict); they are not saved.
            self.fused = layer.resolved_backend(inference=True) == "fused"
            # NCHW calls wide enough for it run the pixel kernel instead, as the
            # layer itself does (SSConv2d._infers_on_pixels; the width is checked per call).
            self.pixels = (
                layer.backend in ("auto", "fused")
                and d.has_spatial
                and not (layer.backend == "auto" and d.identity_perm)
                and layer.trains_fused(None)
            )
            self._out_pos = layer.out_pos.detach().cpu().clone()
        # The memory layout of outputs of the fused kernel (which works in channels_last):
        # None, the input's (as F.conv2d); "channels_last" where every consumer of the output
        # is another frozen SSC layer that runs that kernel at the size it gets (then it reads
        # the output without a copy; checked per call, see chain_consumers); "nchw" at the end
        # of such a chain. Set by ssconv.deploy.chain_channels_last.
        self.output_layout: str | None = None
        # (layer, pools) for each consumer: the frozen SSC layers the output reaches and the
        # (kernel, stride, padding, dilation, ceil_mode) width changes of the pools on the way.
        self.chain_consumers: list[tuple[SSConv2dInference, tuple]] = []

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
            or self.point_groups != self.groups
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
        self._permute_to_residue()
        self.residue = True

    def _permute_to_residue(self) -> None:
        """Permute the 1 x 1 weights and the bias to residue order (inputs and outputs)."""
        out_perm = residue_permutation(self.groups, self._p, self.out_channels)
        if self.weight_point is not None:
            cin_g = self.in_channels // self.groups
            local = residue_permutation(1, self._p, cin_g)
            self.weight_point = self.weight_point[out_perm][:, local].contiguous()
        if self.bias is not None:
            self.bias = self.bias[out_perm].contiguous()

    def gathered_input_applies(self) -> bool:
        """Whether :meth:`use_gathered_input` applies: a decomposed, shuffled layer with
        spatial kernels in residue classes (period > 1, no padded classes)."""
        return (
            self.mode == "decomposed"
            and self.shuffle
            and self._has_spatial
            and not self._identity_perm
            and not self._pad_rows
            and not self.residue
            and self.point_groups == self.groups
        )

    @torch.no_grad()
    def use_gathered_input(self, *, dense_point: bool = False) -> None:
        """Run the channel shuffle and both residue reorders as two index gathers.

        The stock form of a shuffled layer reorders its channels three times (the shuffle,
        the residue order of the spatial part's input, and its output back), each a Reshape /
        Transpose / Reshape when exported. Here one gather reads the input in shuffled residue
        order for both parts (the within-group residue permutation moves into the 1 x 1
        weights), and one gather puts the output back in canonical order: two ``Gather``
        nodes in ONNX. Inputs and outputs keep the canonical channel order, so the layer stays
        a drop-in. This form runs stock operators only (the fused CPU kernels read the
        canonical weights): :func:`ssconv.deploy.freeze` uses it for ``target="onnxruntime"``,
        where :func:`ssconv.deploy.optimize_channel_order` then leaves out the output gather
        wherever the next gathered layer can absorb it (:meth:`chain_gathers`).

        ``dense_point``: hold the 1 x 1 part as one ungrouped 1 x 1 convolution (zeros across
        groups). It executes ``groups`` times the 1 x 1 part's MACs, but onnxruntime fuses an
        ungrouped convolution with the add and the ReLU after it, which in narrow layers is
        faster (docs/benchmarks.md, "onnxruntime"); :func:`ssconv.deploy.freeze` uses it there.
        """
        if self.gathered:
            return
        if not self.gathered_input_applies():
            raise ValueError(
                "use_gathered_input needs a decomposed, shuffled layer with residue classes "
                "(period > 1, no padded classes, not in residue order)"
            )
        g, p = self.groups, self._p
        device = self.in_index.device
        in_perm = residue_permutation(g, p, self.in_channels).to(device)
        out_perm = residue_permutation(g, p, self.out_channels).to(device)
        self.register_buffer("in_gather", self.in_index[in_perm].clone(), persistent=False)
        self.register_buffer("out_gather", torch.argsort(out_perm), persistent=False)
        self._permute_to_residue()
        if dense_point and self.weight_point is not None and self.groups > 1:
            full = fused.full_weight(self.weight_point, self.groups)
            self.weight_point = full.view(self.out_channels, self.in_channels, 1, 1).contiguous()
            self.point_groups = 1
        self.gathered = True
        self.fused = self.pixels = False

    @torch.no_grad()
    def chain_gathers(self, source: tuple | None) -> tuple:
        """Read the input in channel order ``source`` (the input gather absorbs it) and write
        the output in residue order (no output gather); returns the output's order tag, a
        permutation tag (see :func:`ssconv.layers.channel_order.order_index`).
        :func:`ssconv.deploy.optimize_channel_order` calls it on chains of layers."""
        if not self.gathered or self.out_gather is None:
            raise ValueError("chain_gathers needs a gathered layer not chained yet")
        out = ("perm", tuple(torch.argsort(self.out_gather.cpu()).tolist()))
        self.in_gather = read_through(source, self.in_gather)
        self.out_gather = None
        return out

    def forward(self, x: Tensor) -> Tensor:
        padding = self.padding
        if self.padding_mode != "zeros":
            x = F.pad(x, self._pad4, mode=self.padding_mode)
            padding = (0, 0)
        if graph_ops.compiling() and self._compiles_fused(x, padding):
            # Traced by torch.compile: the pixel kernel as one graph op (the packed-weight
            # cache below stays out of the graph; the op packs the dense weight per call).
            key = graph_key(self, x.shape[-1], padding)
            if key >= 0:
                y = graph_ops.ssc_conv2d(x, self.dense_weight(), self.bias, key)
                return torch.relu(y) if self.fused_relu else y
        # can_run first: it is False while tracing, where the width is not a Python int.
        if self.pixels and fused.can_run(x, self._weights()) and self._pixels_suit(x, padding):
            return fused.pixel_conv2d(
                x,
                self._pixel_packed(),
                self.kernel_size,
                self.stride,
                padding,
                self.dilation,
                relu=self.fused_relu,
            )
        if self.fused and fused.can_run(x, self._weights()):
            y = fused.fused_conv2d(
                x,
                self._fused_packed(),
                self.kernel_size,
                self.stride,
                padding,
                self.dilation,
                channels_last=True,  # the kernel's own layout: no copy yet
                relu=self.fused_relu,
            )
            keep = _LAYOUTS[self.output_layout]
            if keep is None:
                keep = _is_channels_last(x)
            elif keep:
                keep = self._consumers_take_channels_last(y.shape[-1])
            return y if keep else y.contiguous()
        y = self._forward_stock(x, padding)
        return torch.relu(y) if self.fused_relu else y

    def _forward_stock(self, x: Tensor, padding: tuple[int, int]) -> Tensor:
        """The standard operators' forward (no fused ReLU)."""
        if self.gathered:
            y = self._forward_residue(x.index_select(1, self.in_gather), padding)
            return y if self.out_gather is None else y.index_select(1, self.out_gather)
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

    def _consumers_take_channels_last(self, width: int) -> bool:
        """Whether every consumer in ``chain_consumers`` runs the fused kernel on this
        output (``width`` pixels wide, through its pools), and so reads channels_last without
        a copy; a consumer that would run the pixel kernel on NCHW wants NCHW."""
        for layer, pools in self.chain_consumers:
            w = pooled_width(width, pools)
            if w <= 0 or (layer.pixels and layer._pixels_suit_nchw(w)):
                return False
        return bool(self.chain_consumers)

    def _pixels_suit_nchw(self, width: int) -> bool:
        """:meth:`_pixels_suit` for an NCHW input ``width`` pixels wide."""
        padding = (0, 0) if self.padding_mode != "zeros" else self.padding
        return self._rows_suit(width, padding)

    def _rows_suit(self, width: int, padding: tuple[int, int]) -> bool:
        """The pixel kernel's rule for inputs ``width`` pixels wide (:func:`pixel_rows_suit`,
        inference thresholds)."""
        channels = min(self.in_channels, self.out_channels)
        return pixel_rows_suit(
            self.kernel_size, padding, self.dilation, channels, width, self.stride, inference=True
        )

    @torch.no_grad()
    def dense_weight(self) -> Tensor:
        """The equivalent dense weight ``(C_out, C_in/G, kh, kw)`` in the layer's channel order
        (over its logical inputs: a shuffled layer reads input channel ``in_index[q]``)."""
        if self.mode == "dense":
            return self.weight
        if self.gathered:
            raise ValueError("dense_weight: not kept in the gathered form (use_gathered_input)")
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
            point = fused.full_weight(self.weight_point, self.point_groups)[:, :, 0]
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
        return self._rows_suit(x.shape[-1], padding)

    def _compiles_fused(self, x: Tensor, padding: tuple[int, int]) -> bool:
        """Whether this traced call may run the pixel kernel as a graph op (float32 CPU, as
        the eager rule; the width is checked by :meth:`_graph_program_key`)."""
        if not self.pixels or x.dim() != 4 or x.device.type != "cpu":
            return False
        if x.dtype != torch.float32 or fused._cpu_autocast():
            return False
        if _is_channels_last(x) and not pixels_take_channels_last(self):
            return False
        return all(t.device.type == "cpu" and t.dtype == x.dtype for t in self._weights())

    def _graph_program_key(self, input_width: int, padding: tuple[int, int]) -> int:
        """The :mod:`ssconv.kernels.graph_ops` key of the pixel kernel on inputs
        ``input_width`` pixels wide, -1 where the eager rule would not run it."""
        if not self._rows_suit(input_width, padding):
            return -1
        if not fused.available():
            return -1
        return graph_ops.register(
            self.dense_mask(),
            self.groups,
            self.kernel_size,
            self.stride,
            padding,
            self.dilation,
            in_order=self.in_index.cpu() if self.shuffle else None,
        )

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
        return F.conv2d(xc, self.weight_point, self.bias, self.stride, pad1, 1, self.point_groups)

    def extra_repr(self) -> str:
        order = ", residue order" if self.residue else ""
        if self.shuffle:
            order += ", shuffle (gathered)" if self.gathered else ", shuffle"
        if self.pixels:
            order += ", fused pixel kernel (NCHW)"
        if self.fused:
            order += ", fused CPU kernel"
        if self.output_layout is not None:
            order += f", {self.output_layout} output"
        if self.fused_relu:
            order += ", ReLU fused"
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, {self.pattern.describe()}, mode={self.mode}{order}"
        )
