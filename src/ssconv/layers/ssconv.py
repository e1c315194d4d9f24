"""``SSConv2d``: a drop-in replacement for ``nn.Conv2d`` with a fixed SSC sparsity pattern.

Follows "Pushing the Efficiency Limit Using Structured Sparse Convolutions" (Verma et al.,
WACV 2023, arXiv:2210.12818); the pattern itself is computed in :mod:`ssconv.layers.pattern`.

Storage holds only the pattern's weights:

* ``weight_spatial``: ``(C_out, A, kh, kw)`` for ``spatial="full"``; for ``"checkerboard"`` the
  used taps only, flattened, ``(n_taps,)``. Kernel ``[o, a]`` sits on local input
  ``i' = a * period + (o' mod period)``.
* ``weight_point``: ``(C_out, C_in/G - A)``, the 1 x 1 weights of the non-spatial in-group pairs in
  increasing input order (absent when there are none); with ``point_groups`` ``G1 > G``,
  ``(C_out, C_in/G1 - C_in/(G1 P))``, those inside each filter's point group.
* ``bias``: ``(C_out,)`` as in ``nn.Conv2d``.

Execution backends (same outputs and gradients):

* ``"masked"``: the reference. Scatters the weights into the dense grouped weight and runs one
  dense convolution (dense MACs).
* ``"decomposed"``: the fast path. Permuting input channels by ``i' mod P`` and output channels
  by ``o' mod P`` turns the spatial pairs into a grouped K x K convolution with ``G * P`` groups;
  the point pairs are a grouped 1 x 1 convolution with ``G`` groups (``point_groups`` where
  set). Both are stock kernels.
* ``"fused"``: native CPU kernels (:mod:`ssconv.kernels.fused`, compiled on first use where a
  C++ compiler is present). Inference: one kernel reads each K x K window once and accumulates
  the spatial and 1 x 1 weights together (float32). Training: forward, input gradient and
  weight gradient on kernels that execute only the pattern's weights, vectorised over pixels
  so that narrow residue classes waste nothing (float32, and float64 for gradcheck; a strided
  layer's input gradient runs as one stride-1 call per output phase). Under ``torch.compile``
  the same kernels run as one graph op per layer with its autograd formula
  (:mod:`ssconv.kernels.graph_ops`). Other devices, tracing and ``torch.export`` run the
  ``"auto"`` choice of stock kernels instead.
* ``"triton"``: Triton kernels for GPUs (:mod:`ssconv.kernels.triton_ssc`): forward, input
  gradient and weight gradient as implicit GEMMs over each class of equal support, one launch
  per layer, spatial and 1 x 1 weights together (float32 accumulation; float32, bfloat16 and
  float16; NCHW and channels_last). CUDA tensors; CPU tensors only in Triton's interpreter
  (``TRITON_INTERPRET=1``, for tests), else it raises ``TritonUnavailableError``. Tested
  under the interpreter, not yet measured on a GPU: ``"auto"`` never picks it.
* ``"auto"`` (default): on CPU, gradient-needing float32 calls use the fused training kernels
  where they are built and the layer's output rows are wide enough
  (:meth:`SSConv2d.trains_fused`); inference (no gradients, float32) uses the fused kernel
  where the layer is wide enough; otherwise the decomposed path where the layer is sparse
  enough to gain from it, the dense one else (see :meth:`SSConv2d.resolved_backend`).
"""

from __future__ import annotations

import math

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from ssconv.kernels import fused, graph_ops
from ssconv.layers import dispatch
from ssconv.layers.dispatch import (  # noqa: F401  (re-exported: the rules' old home)
    AUTO_DENSE_ABOVE,
    AUTO_DEPTHWISE_INFERENCE_MIN_CHANNELS,
    AUTO_FUSED_MAX_WASTE,
    AUTO_FUSED_MIN_CHANNELS,
    AUTO_FUSED_TRAIN_MIN_WIDTH,
    AUTO_FUSED_TRAIN_NARROW,
    AUTO_FUSED_TRAIN_NARROW_MIN_WIDTH,
    AUTO_MIN_CHANNELS,
    AUTO_MIN_GROUP_WIDTH,
    PIXELS_CHANNELS_LAST_MAX,
    STOCK_BACKENDS,
    _is_channels_last,
    pixel_rows_suit,
    pixels_take_channels_last,
)
from ssconv.layers.pattern import KernelType, SSCPattern
from ssconv.layers.pooling import pooled_width

__all__ = [
    "SSConv2d",
    "SSCTracer",
    "symbolic_trace",
    "BACKENDS",
    "INIT_SCALES",
    "DEFAULT_INIT_SCALE",
    "init_variance",
]

#: Initialization scales (``init_scale``): Kaiming-normal (ReLU gain) with the variance
#: ``2 / fan``, where ``fan`` is each filter's nonzero fan-in (``"effective"``), the fan-in of
#: the dense layer it stands for (``"dense"``: as pruning at initialization masks a dense
#: init), or their geometric mean (``"balanced"``). See ssconv.sparsity.init.
INIT_SCALES = ("effective", "dense", "balanced")
#: The default of ``convert``, ``SSCFactory`` and training (``TrainConfig.init_scale``) for
#: layers trained from scratch, chosen by the design study in docs/ssc.md. ``SSConv2d`` itself
#: defaults to ``"effective"`` (the specification's rule, right with or without BatchNorm).
DEFAULT_INIT_SCALE = "dense"
_INIT_EXPONENT = {"effective": 0.0, "dense": 1.0, "balanced": 0.5}


def init_variance(nonzero_fan_in: float, dense_fan_in: float, init_scale: str) -> float:
    """Weight variance of the rule ``init_scale``: ``2 / (nonzero^(1-a) * dense^a)``."""
    if init_scale not in _INIT_EXPONENT:
        raise ValueError(f"init_scale must be one of {INIT_SCALES}, got {init_scale!r}")
    a = _INIT_EXPONENT[init_scale]
    return 2.0 / (nonzero_fan_in ** (1.0 - a) * dense_fan_in**a)


BACKENDS = ("auto", "masked", "decomposed", "split", "fused", "triton")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


class SSConv2d(nn.Module):
    """2-D convolution whose filters carry a fixed Structured Sparse Convolution pattern.

    The signature follows :class:`torch.nn.Conv2d`; the keyword-only ``period``, ``pointwise``
    and ``spatial`` arguments fix the pattern (see ``docs/ssc.md``):

    * ``groups`` ``G``: channel groups; pairs across groups are empty.
    * ``period`` ``P``: inside a group, the pair ``(o', i')`` has a K x K kernel when
      ``(i' - o') mod P == 0``; ``None`` means no spatial kernel (a 1 x 1 convolution).
    * ``pointwise``: the other in-group pairs get a 1 x 1 weight (``True``) or nothing.
    * ``spatial``: ``"full"`` K x K kernels or ``"checkerboard"`` kernels.
    * ``point_groups`` ``G1``: channel groups of the 1 x 1 part (``None``: ``groups``); a
      multiple of ``groups``, so that a filter's 1 x 1 weights cover only the ``C_in / G1``
      inputs of its point group (a thinner 1 x 1 part; the spatial pairs are unchanged).

    * ``shuffle``: with ``groups > 1``, the layer reads its input in ShuffleNet's shuffled
      channel order: group ``h`` reads input channels ``h, h + G, h + 2G, ...`` (one from each
      block of ``C_in / G``), so that stacked grouped layers do not split the network into
      ``G`` independent sub-networks (the design study of ``docs/ssc.md``). The weights are
      stored in the layer's own (logical) input order; :attr:`in_index` maps logical input
      ``q`` to the input channel it reads. The fused kernels read through the permutation at
      no cost; the stock backends shuffle the channels once (a copy of the input, no MACs).

    Special cases: ``period=1`` is ``nn.Conv2d(..., groups=G)`` (standard, groupwise,
    depthwise); ``period=None`` is a (grouped) pointwise convolution; ``groups=1, period=P,
    pointwise=True`` is HetConv with part ``P``.

    Args:
        backend: ``"auto"``, ``"masked"`` (reference), ``"decomposed"`` (fast path),
            ``"split"`` (fast path with one dense conv per residue class, for narrow groups),
            ``"fused"`` (native CPU kernels) or ``"triton"`` (Triton kernels on CUDA; never
            chosen by ``"auto"`` until measured on a GPU). See the module docstring.
        dense_groups: the ``groups`` of the dense layer this one stands for (set by
            :meth:`from_conv2d`); only used by model-level density accounting
            (:attr:`dense_weight_count`). A divisor of ``groups``.
    """

    __constants__ = [
        "stride",
        "padding",
        "dilation",
        "groups",
        "padding_mode",
        "in_channels",
        "out_channels",
        "kernel_size",
    ]

    bias: Tensor | None
    weight_point: Tensor | None
    # The memory layout of training outputs of the channel-lane kernels (which work in
    # channels_last): None, the input's (as F.conv2d); "channels_last" where every consumer of
    # the output, through BatchNorm, activations and pools, is another SSConv2d that trains on
    # those kernels at the size it gets (checked per call, see chain_consumers); "nchw" at the
    # end of such a chain. Set by ssconv.deploy.chain_channels_last; calls without gradients
    # ignore it. Class-level defaults, so that layers pickled before it existed load.
    output_layout: str | None = None
    # (layer, pools) for each consumer: the layers the output reaches and the (kernel, stride,
    # padding, dilation, ceil_mode) width changes of the pools on the way.
    chain_consumers: tuple = ()

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
        *,
        period: int | None = 1,
        pointwise: bool = True,
        spatial: str = "full",
        backend: str = "auto",
        dense_groups: int = 1,
        init_scale: str = "effective",
        shuffle: bool = False,
        point_groups: int | None = None,
    ) -> None:
        super().__init__()
        if device is None:  # the ambient default, e.g. of a `with torch.device("meta")` block
            device = torch.empty(0).device
        # The pattern's index tensors are computed on the CPU (nonzero and item have no meta
        # kernels) and moved to ``device`` with the parameters.
        with torch.device("cpu"):
            factory = {"device": device, "dtype": dtype}
            pattern = SSCPattern(
                in_channels,
                out_channels,
                kernel_size,
                groups,
                period,
                pointwise,
                spatial,
                point_groups,
            )
            self.pattern = pattern
            self.in_channels = in_channels
            self.out_channels = out_channels
            self.kernel_size = pattern.kernel_size
            self.stride = _pair(stride, "stride")
            self.dilation = _pair(dilation, "dilation")
            if any(s < 1 for s in self.stride):
                raise ValueError(f"stride must be positive, got {stride!r}")
            if any(d < 1 for d in self.dilation):
                raise ValueError(f"dilation must be positive, got {dilation!r}")
            if isinstance(padding, str):
                if padding == "valid":
                    self.padding = (0, 0)
                elif padding == "same":
                    if self.stride != (1, 1):
                        raise ValueError("padding='same' is not supported for strided convolutions")
                    self.padding = tuple(
                        d * (k - 1) // 2 for d, k in zip(self.dilation, self.kernel_size)
                    )
                else:
                    raise ValueError(
                        "padding must be an int, a pair of ints, 'same' or 'valid', "
                        f"got {padding!r}"
                    )
            else:
                self.padding = _pair(padding, "padding")
                if any(p < 0 for p in self.padding):
                    raise ValueError(f"padding must be non-negative, got {padding!r}")
            if padding_mode not in PADDING_MODES:
                raise ValueError(
                    f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}"
                )
            self.padding_mode = padding_mode
            self._reversed_padding_repeated_twice = pad_arguments(self.padding)
            self.groups = groups
            if dense_groups < 1 or groups % dense_groups:
                raise ValueError(f"dense_groups={dense_groups} must divide groups={groups}")
            self.dense_groups = dense_groups
            init_variance(1, 1, init_scale)  # validates
            self.init_scale = init_scale
            self.period = period
            self.pointwise = pointwise
            self.spatial = spatial
            #: Channel groups of the 1 x 1 part (``groups`` unless set finer).
            self.point_groups = pattern.point_groups
            if not isinstance(shuffle, bool):
                raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
            #: Whether the input is read in shuffled channel order (only with groups > 1).
            self.shuffle = shuffle and groups > 1
            self.backend = backend  # validated by the property setter

            # Static structure, used by forward (plain Python values: TorchScript-friendly);
            # the frozen twin (layers/inference.py) reads the same decomposition.
            d = pattern.decomposition()
            self._has_spatial, self._has_point = d.has_spatial, d.has_point
            self._p, self._a, self._m = d.period, d.spatial_per_filter, d.outputs_per_residue
            self._identity_perm, self._pad_rows = d.identity_perm, d.pad_rows
            self._checkerboard = d.checkerboard

            kh, kw = self.kernel_size
            if pattern.has_spatial:
                if self._checkerboard:
                    shape: tuple[int, ...] = (pattern.num_spatial_weights,)
                else:
                    shape = (out_channels, self._a, kh, kw)
                self.weight_spatial = nn.Parameter(torch.empty(shape, **factory))
            else:
                self.register_parameter("weight_spatial", None)
            if pattern.has_point:
                self.weight_point = nn.Parameter(
                    torch.empty(out_channels, pattern.point_per_filter, **factory)
                )
            else:
                self.register_parameter("weight_point", None)
            if bias:
                self.bias = nn.Parameter(torch.empty(out_channels, **factory))
            else:
                self.register_parameter("bias", None)
            self._register_index_buffers(device)
            self.reset_parameters()
            if self.shuffle:
                self._register_load_state_dict_pre_hook(_legacy_shuffle_keys)

    # ------------------------------------------------------------------ setup
    def _register_index_buffers(self, device) -> None:
        """Precompute the (small) index tensors of the decomposition; not saved in state_dict."""
        pat = self.pattern
        p, a_cnt, m = self._p, self._a, self._m
        cin_g, cout_g, groups = pat.in_per_group, pat.out_per_group, self.groups
        long = {"dtype": torch.long, "device": device}

        # Input permutation: new position g*cin_g + s*A + a reads old channel g*cin_g + a*P + s.
        g = torch.arange(groups).view(-1, 1, 1)
        s = torch.arange(p).view(1, -1, 1)
        a = torch.arange(max(a_cnt, 1)).view(1, 1, -1)[..., :a_cnt]
        perm_in = (g * cin_g + a * p + s).reshape(-1)
        # Grouped-conv rows: row g*P*m + s*m + b holds filter g*cout_g + b*P + s (or a zero pad).
        b = torch.arange(m).view(1, 1, -1)
        o_local = b * p + s
        rows = torch.where(o_local < cout_g, g * cout_g + o_local, self.out_channels)
        rows = rows.reshape(-1)
        # Output gather: channel o is row pos[o] of the grouped-conv output.
        o = torch.arange(self.out_channels)
        o_loc = o % cout_g
        pos = (o // cout_g) * p * m + (o_loc % p) * m + o_loc // p
        # Point weights: slot r of input block a of filter o reads column index[o, r] of the
        # stored (A, P-1) weights plus one zero column (the spatial slot r == o' mod P).
        r = torch.arange(p).view(1, -1)
        res = (o_loc % p).view(-1, 1)
        point_index = torch.where(r == res, p - 1, r - (r > res).long())

        self.register_buffer("perm_in", perm_in.to(**long), persistent=False)
        self.register_buffer("grouped_rows", rows.to(**long), persistent=False)
        self.register_buffer("out_pos", pos.to(**long), persistent=False)
        self.register_buffer("point_index", point_index.to(**long), persistent=False)
        # One-hot of o' mod P (C_out, P), used to scatter spatial kernels into the dense weight.
        onehot = (r == res).to(torch.get_default_dtype())
        self.register_buffer("spatial_onehot", onehot.to(device), persistent=False)
        tap_mask = pat.spatial_tap_mask if self._checkerboard else torch.zeros(0, dtype=torch.bool)
        self.register_buffer("tap_mask", tap_mask.to(device), persistent=False)
        # Flat positions of the used taps: index_copy's backward is a cheap index_select
        # (masked_scatter's backward is a scatter_add that costs tens of ms on CPU).
        tap_index = tap_mask.flatten().nonzero().flatten()
        self.register_buffer("tap_index", tap_index.to(**long), persistent=False)
        # Input channel read by logical input q = h * (C_in / G) + j: channel j * G + h.
        c_in = self.in_channels
        if self.shuffle:
            in_index = torch.arange(c_in).view(c_in // groups, groups).t().reshape(-1)
        else:
            in_index = torch.arange(c_in)
        self.register_buffer("in_index", in_index.to(**long), persistent=False)
        # With point_groups G1 > G: the column (local input, of C_in/G) of each stored 1 x 1
        # weight, and the same inside its point group (of C_in/G1); scatter's backward is a
        # gather.
        point_cols = point_local_cols = None
        if pat.has_point and pat.point_groups != groups:
            # The POINT pairs in increasing input order: every filter has point_per_filter.
            is_point = pat.type_map() == KernelType.POINT  # (C_out, C_in), logical inputs
            cols = is_point.nonzero()[:, 1].view(self.out_channels, -1) % cin_g
            point_cols = cols.to(**long)
            point_local_cols = (cols % pat.in_per_point_group).to(**long)
        self.register_buffer("point_cols", point_cols, persistent=False)
        self.register_buffer("point_local_cols", point_local_cols, persistent=False)

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {value!r}")
        self._backend = value

    def reset_parameters(self) -> None:
        """Kaiming-normal (ReLU gain) by :attr:`init_scale`: over the effective fan-in of each
        filter (``"effective"``, spec section 3), the dense layer's fan-in (``"dense"``) or
        their geometric mean (``"balanced"``)."""
        fan_in = self.effective_fan_in
        std = math.sqrt(init_variance(fan_in, self.dense_fan_in, self.init_scale))
        with torch.no_grad():
            for w in (self.weight_spatial, self.weight_point):
                if w is not None:
                    w.normal_(0.0, std)
            if self.bias is not None:
                bound = 1.0 / math.sqrt(fan_in)
                self.bias.uniform_(-bound, bound)

    # ------------------------------------------------------------- counting
    @property
    def effective_fan_in(self) -> float:
        """Average number of nonzero weights per filter."""
        return self.pattern.num_params / self.out_channels

    @property
    def dense_fan_in(self) -> int:
        """Fan-in of the dense layer this one stands for (``C_in / dense_groups * kh * kw``)."""
        kh, kw = self.kernel_size
        return (self.in_channels // self.dense_groups) * kh * kw

    @property
    def num_params(self) -> int:
        """Nonzero weights (bias excluded), the spec's parameter formula."""
        return self.pattern.num_params

    @property
    def density(self) -> float:
        """Nonzero weights over the dense ``C_out * C_in * kh * kw``."""
        return self.pattern.density

    @property
    def dense_weight_count(self) -> int:
        """Weights of the dense layer this one stands for (``C_in / dense_groups`` inputs)."""
        kh, kw = self.kernel_size
        return self.out_channels * (self.in_channels // self.dense_groups) * kh * kw

    def _param_device(self) -> torch.device:
        w = self.weight_spatial if self.weight_spatial is not None else self.weight_point
        return w.device

    def resolved_backend(self, inference: bool = False) -> str:
        """The backend that ``forward`` runs.

        ``inference=False`` (calls that need gradients): ``"masked"`` (one dense conv),
        ``"decomposed"`` or ``"split"``. ``inference=True`` (a float32 CPU call without
        gradients, not traced or compiled): ``"fused"`` where the fused kernel applies, else
        the same. Asking with ``inference=True`` builds the kernel if it is not built yet.
        The rules are :mod:`ssconv.layers.dispatch`'s.
        """
        return dispatch.resolve(self, inference)

    def call_path(self, x: Tensor) -> str:
        """The kernels an eager ``forward(x)`` runs, without running them (what ``ssconv
        summary`` shows): ``"triton"``; on CPU with gradients ``"fused_train"`` (the native
        training kernels); without them ``"pixels"`` (the pixel-vectorised kernel) or
        ``"fused"`` (the channel-lane kernel); else a stock backend, ``"masked"`` (one dense
        convolution with zeros), ``"decomposed"`` or ``"split"``. Inside ``torch.compile`` the
        fused kernels run as one graph op instead."""
        if self._backend == "triton":
            return "triton"
        inference = self._is_inference_call(x)
        if not inference and self._train_kernel(x) is not None:
            return "fused_train"
        if inference and self._infers_on_pixels(x):
            return "pixels"
        return self.resolved_backend(inference)

    def fused_waste(self) -> float:
        """Executed over effective MACs of the fused kernel for this layer (1.0 = no waste)."""
        waste = self.__dict__.get("_fused_waste")
        if waste is None:
            executed = fused.planned_executed(self.pattern.dense_mask(), self.groups)
            waste = self.__dict__["_fused_waste"] = executed / self.pattern.num_params
        return waste

    def _stock_backend(self) -> str:
        return dispatch.stock_backend(self)

    # ------------------------------------------------------------- weights
    def spatial_kernels(self) -> Tensor:
        """(C_out, A, kh, kw): each filter's spatial kernels, zeros at unused checkerboard taps."""
        assert self.weight_spatial is not None
        return self._spatial_kernels(self.weight_spatial)

    def _spatial_kernels(self, w: Tensor) -> Tensor:
        if self._checkerboard:
            flat = w.new_zeros(self.tap_mask.numel()).index_copy(0, self.tap_index, w)
            return flat.view(self.tap_mask.shape)
        return w

    def point_matrix(self) -> Tensor:
        """(C_out, C_in/G): 1 x 1 weights in input order, zeros on the spatial pairs (and
        outside each filter's point group)."""
        assert self.weight_point is not None
        return self._point_matrix(self.weight_point)

    def _point_matrix(self, w: Tensor) -> Tensor:
        if self.point_cols is not None:
            cin_g = self.in_channels // self.groups
            return w.new_zeros(self.out_channels, cin_g).scatter(1, self.point_cols, w)
        if self.period is None:
            return w
        c_out, p, a_cnt = self.out_channels, self._p, self._a
        src = torch.cat([w.view(c_out, a_cnt, p - 1), w.new_zeros(c_out, a_cnt, 1)], dim=2)
        index = self.point_index.unsqueeze(1).expand(c_out, a_cnt, p)
        return torch.gather(src, 2, index).reshape(c_out, a_cnt * p)

    def point_group_matrix(self) -> Tensor:
        """(C_out, C_in/G1): the weight of the grouped 1 x 1 convolution of the point part
        (``G1 = point_groups``; :meth:`point_matrix` when it equals ``groups``)."""
        w = self.weight_point
        assert w is not None
        if self.point_local_cols is None:
            return self.point_matrix()
        w1 = self.in_channels // self.point_groups
        return w.new_zeros(self.out_channels, w1).scatter(1, self.point_local_cols, w)

    def to_dense(self) -> Tensor:
        """The equivalent ``nn.Conv2d`` weight, ``(C_out, C_in/G, kh, kw)`` (differentiable),
        over the layer's logical inputs (the input channels :attr:`in_index` names; with
        ``shuffle`` use :meth:`to_conv2d` for a convolution of the input as it comes)."""
        return self._dense(self.weight_spatial, self.weight_point)

    def _dense(self, weight_spatial: Tensor | None, weight_point: Tensor | None) -> Tensor:
        """:meth:`to_dense` of the given parameter values (the layer's own, or stand-ins)."""
        kh, kw = self.kernel_size
        c_out, cin_g = self.out_channels, self.in_channels // self.groups
        dense: Tensor | None = None
        if self._has_spatial:
            assert weight_spatial is not None
            k = self._spatial_kernels(weight_spatial)
            if self._p == 1:
                dense = k
            else:
                onehot = self.spatial_onehot.to(k.dtype).view(c_out, 1, self._p, 1, 1)
                dense = (k.unsqueeze(2) * onehot).reshape(c_out, cin_g, kh, kw)
        if self._has_point:
            ch, cw = kh // 2, kw // 2
            assert weight_point is not None
            pw = self._point_matrix(weight_point).view(c_out, cin_g, 1, 1)
            pw = F.pad(pw, [cw, kw - 1 - cw, ch, kh - 1 - ch])
            dense = pw if dense is None else dense + pw
        assert dense is not None
        return dense

    def grouped_spatial_weight(self) -> Tensor:
        """(G * P * m, A, kh, kw): the weight of the grouped K x K convolution (permuted order)."""
        k = self.spatial_kernels()
        if self._identity_perm:
            return k
        if self._pad_rows:
            k = torch.cat([k, k.new_zeros(1, k.shape[1], k.shape[2], k.shape[3])], dim=0)
        return k.index_select(0, self.grouped_rows)

    # ------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, torch.fx.Proxy):
            raise TypeError(
                "SSConv2d picks its kernels from the input's device, dtype and layout, which "
                "torch.fx cannot trace: trace it as a leaf module, with "
                "ssconv.symbolic_trace(model) or ssconv.SSCTracer, or (torchvision's feature "
                "extractor) tracer_kwargs={'leaf_modules': [ssconv.SSConv2d]}"
            )
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = (0, 0)
        else:
            padding = self.padding
        if self._backend == "triton":
            # Imported on first use: its torch.compiler.disable wrappers load torch._dynamo
            # (seconds), which `import ssconv` must not pay.
            from ssconv.kernels import triton_ssc

            return triton_ssc.layer_forward(self, x, padding)
        if graph_ops.compiling() and dispatch.compiles_fused(self, x):
            # Traced by torch.compile: the kernels as one graph op with its autograd formula
            # (the eager paths below keep their packed-weight caches out of the graph).
            key = dispatch.graph_key(self, x.shape[-1], padding)
            if key >= 0:
                return graph_ops.ssc_conv2d(x, self.to_dense(), self.bias, key)
        backend = self.call_path(x)
        if backend == "fused_train":
            return self._forward_fused_train(x, padding, self._train_kernel(x) or "pixels")
        if backend == "pixels":
            return self._forward_pixels(x, padding)
        if backend == "fused":
            return self._forward_fused(x, padding)
        if self.shuffle:
            x = shuffle_channels(x, self.groups, self.in_channels)
        if backend == "masked":
            return F.conv2d(
                x, self.to_dense(), self.bias, self.stride, padding, self.dilation, self.groups
            )
        return self._forward_decomposed(x, padding)

    def _forward_decomposed(self, x: Tensor, padding: tuple[int, int]) -> Tensor:
        if not self._has_spatial:
            return self._point_conv(x, padding, self.bias)
        if self._identity_perm:
            # period == 1: the layer is a plain (grouped) convolution.
            return F.conv2d(
                x,
                self.spatial_kernels(),
                self.bias,
                self.stride,
                padding,
                self.dilation,
                self.groups,
            )
        g, p, a_cnt, m = self.groups, self._p, self._a, self._m
        cout_g = self.out_channels // g
        w = self.grouped_spatial_weight()  # (G*P*m, A, kh, kw), rows ordered (g, s, b)
        if (
            self._backend == "split"
            and self._has_point
            and not self._pad_rows
            and _is_channels_last(x)
        ):
            # One dense convolution per residue class, each on a contiguous NHWC block: faster
            # than one grouped call for narrow groups on oneDNN.
            out = self._point_conv(x, padding, self.bias)
            xs = _split_residues(x, g, a_cnt, p)  # (G*P, N, H, W, A)
            ws = w.view(g * p, m, a_cnt, w.shape[2], w.shape[3])
            n, _, h, wd = out.shape
            o6 = out.permute(0, 2, 3, 1).view(n, h, wd, g, m, p)
            for k in range(g * p):
                yk = F.conv2d(
                    xs[k].permute(0, 3, 1, 2), ws[k], None, self.stride, padding, self.dilation
                )
                o6[:, :, :, k // p, :, k % p].add_(yk.permute(0, 2, 3, 1))
            return out
        cl = _is_channels_last(x)
        xs = _channel_transpose(x, g, a_cnt, p, cl)  # channels (g, a, s) -> (g, s, a)
        y = F.conv2d(xs, w, None, self.stride, padding, self.dilation, g * p)
        if self._has_point:
            out = self._point_conv(x, padding, self.bias)
            return _add_residue_major(out, y, g, p, m, cout_g)
        out = _channel_transpose(y, g, p, m, _is_channels_last(y))  # (g, s, b) -> (g, b, s)
        if self._pad_rows:
            out = _drop_pad_channels(out, g, m * p, cout_g)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out

    def _is_inference_call(self, x: Tensor) -> bool:
        """Whether the fused kernel may run this call: float32 CPU, no gradients, eager."""
        return fused.can_run(x, list(self.parameters()))

    def _forward_fused(self, x: Tensor, padding: tuple[int, int]) -> Tensor:
        packed = fused.cached_pack(
            self,
            fused.weights_key([self.weight_spatial, self.weight_point, self.bias]),
            lambda: fused.pack(
                self.to_dense(),
                self.pattern.dense_mask(),
                self.bias,
                self.groups,
                in_order=self._in_order(),
            ),
        )
        return fused.fused_conv2d(x, packed, self.kernel_size, self.stride, padding, self.dilation)

    def trains_fused(self, input_width: int | None = None) -> bool:
        """Whether gradient-needing float32 CPU calls (on inputs ``input_width`` pixels wide)
        run on the fused training kernels.

        They do for ``backend="fused"``, and for ``"auto"`` on CPU where the kernel is built,
        for layers with a spatial part (at stride 1, padding at most ``dilation * (k - 1)``)
        whose output rows are wide enough for the pixel-vectorised kernels (the
        AUTO_FUSED_TRAIN_* and AUTO_FUSED_STRIDED_MIN_WIDTH rules of
        :mod:`ssconv.layers.dispatch`; ``input_width=None`` skips that check), or short rows
        of wide layers, which train on the channel-lane kernels (the AUTO_CHANNELS_TRAIN_*
        rule; :func:`ssconv.layers.dispatch.train_kernel` says which). Other devices and
        dtypes, tracing and ``torch.export`` use the stock choice of
        :meth:`resolved_backend`; ``torch.compile`` follows the pixel kernels' rule with the
        kernels as graph ops. Builds the kernel if it is not built yet.
        """
        return dispatch.train_kernel(self, input_width) is not None

    def _infers_on_pixels(self, x: Tensor) -> bool:
        return dispatch.infers_on_pixels(self, x)

    def _forward_pixels(self, x: Tensor, padding: tuple[int, int]) -> Tensor:
        plan = self._train_plans()[0]
        packed = fused.cached_pack(
            self,
            fused.weights_key([self.weight_spatial, self.weight_point, self.bias]),
            lambda: fused.pack_pixels(self.to_dense(), self.bias, plan),
            slot="_fused_pixel_cache",
        )
        return fused.pixel_conv2d(x, packed, self.kernel_size, self.stride, padding, self.dilation)

    def _train_kernel(self, x: Tensor) -> str | None:
        """The fused kernels this gradient-needing call trains on (None: stock kernels)."""
        return dispatch.train_kernel_call(self, x)

    def _train_plans(
        self, kernel: str = "pixels"
    ) -> tuple[fused.Plan, fused.Plan | fused.PhasePlans]:
        """The ``kernel``'s block layouts of the forward and of the input gradient (fixed by
        the pattern and the geometry; kept outside the module's state)."""
        cache = self.__dict__.setdefault("_fused_train_plans", {})
        plans = cache.get(kernel)
        if plans is None:
            # Built as normal tensors even when the first call is under torch.inference_mode()
            # (an evaluation before training, Lightning's sanity check): the training kernels
            # index with them, and autograd refuses to save inference tensors for backward.
            with torch.inference_mode(False):
                mask, order = self.pattern.dense_mask(), self._in_order()
                padding = self.padding if self.padding_mode == "zeros" else (0, 0)
                plans = (
                    fused.make_plan(mask, self.groups, kernel=kernel, in_order=order),
                    fused.input_grad_plan(
                        mask,
                        self.groups,
                        self.stride,
                        padding,
                        self.dilation,
                        in_order=order,
                        kernel=kernel,
                    ),
                )
            cache[kernel] = plans
        return plans

    def _graph_program_key(self, input_width: int, padding: tuple[int, int]) -> int:
        """The :mod:`ssconv.kernels.graph_ops` key of this layer's kernels (-1 where they do
        not run on inputs ``input_width`` pixels wide: :func:`dispatch.trains_fused`)."""
        if not dispatch.trains_fused(self, input_width):
            return -1
        return graph_ops.register(
            self.pattern.dense_mask(),
            self.groups,
            self.kernel_size,
            self.stride,
            padding,
            self.dilation,
            in_order=self._in_order(),
            plans=self._train_plans(),
        )

    def _in_order(self) -> Tensor | None:
        """The input permutation the fused kernels read through (None: the identity)."""
        return self.in_index.cpu() if self.shuffle else None

    def _forward_fused_train(self, x: Tensor, padding: tuple[int, int], kernel: str) -> Tensor:
        plan, plan_t = self._train_plans(kernel)
        maps = self._param_maps(kernel)
        geometry = (self.kernel_size, self.stride, padding, self.dilation)
        cl = None
        if kernel == "channels" and self.output_layout is not None:
            width = fused._out_size(
                x.shape[-1], self.kernel_size[1], 1, padding[1], self.dilation[1]
            )
            cl = self.output_layout == "channels_last" and self._consumers_take_channels_last(width)
        if maps is None:
            w = self.to_dense()
            return fused.fused_conv2d_train(x, w, self.bias, plan, plan_t, *geometry, cl)
        params = [p for p in (self.weight_spatial, self.weight_point) if p is not None]
        return fused.fused_conv2d_train_params(
            x, params, maps, self.bias, plan, plan_t, *geometry, cl
        )

    def _consumers_take_channels_last(self, width: int) -> bool:
        """Whether every consumer in ``chain_consumers`` trains on the channel-lane kernels on
        this output (``width`` pixels wide, through its pools), and so reads channels_last
        without a copy."""
        for layer, pools in self.chain_consumers:
            w = pooled_width(width, pools)
            if w <= 0 or dispatch.train_kernel(layer, w) != "channels":
                return False
        return bool(self.chain_consumers)

    def _param_maps(self, kernel: str = "pixels") -> fused.ParamMaps | None:
        """Where the parameters go in the ``kernel``'s packed training weights (fixed by the
        pattern; kept outside the module's state). Packing through them costs one gather per
        step instead of :meth:`to_dense`'s chain of indexing ops and its autograd graph."""
        cache = self.__dict__.setdefault("_fused_param_maps", {})
        if kernel not in cache:
            with torch.inference_mode(False):
                names = [
                    n for n in ("weight_spatial", "weight_point") if getattr(self, n) is not None
                ]
                shapes = [tuple(getattr(self, n).shape) for n in names]

                def dense_of(*ws: Tensor) -> Tensor:
                    given = dict(zip(names, ws))
                    return self._dense(given.get("weight_spatial"), given.get("weight_point"))

                cache[kernel] = fused.param_maps(dense_of, shapes, *self._train_plans(kernel))
        return cache[kernel]

    def _point_conv(self, x: Tensor, padding: tuple[int, int], bias: Tensor | None) -> Tensor:
        """The point pairs: a 1 x 1 convolution that reads each K x K window's centre tap."""
        xc, pad1 = self._centre_input(x, padding)
        w = self.point_group_matrix().view(self.out_channels, -1, 1, 1)
        return F.conv2d(xc, w, bias, self.stride, pad1, 1, self.point_groups)

    def _centre_input(self, x: Tensor, padding: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
        return centre_input(x, self.kernel_size, self.dilation, padding)

    # ---------------------------------------------------------- conversion
    def full_mask(self) -> Tensor:
        """``(C_out, C_in, kh, kw)`` bool: the weights that can be nonzero, over the input
        channels as they come (zeros across groups; the shuffle applied)."""
        return self._full(self.pattern.dense_mask().float()).bool()

    def _full(self, grouped: Tensor) -> Tensor:
        """A grouped ``(C_out, C_in/G, kh, kw)`` weight over logical inputs as the ungrouped
        ``(C_out, C_in, kh, kw)`` weight over the input channels as they come."""
        kh, kw = self.kernel_size
        full = fused.full_weight(grouped, self.groups)  # (C_out, C_in, taps), logical inputs
        out = torch.zeros_like(full).index_copy(1, self.in_index.to(full.device), full)
        return out.view(self.out_channels, self.in_channels, kh, kw)

    def to_conv2d(self) -> nn.Conv2d:
        """An ``nn.Conv2d`` with the dense equivalent weight: same ``groups``, or, for a
        shuffled layer, ``groups=1`` with the shuffle folded into the weight."""
        w = self.weight_spatial if self.weight_spatial is not None else self.weight_point
        assert w is not None
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            1 if self.shuffle else self.groups,
            self.bias is not None,
            self.padding_mode,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            dense = self.to_dense()
            conv.weight.copy_(self._full(dense) if self.shuffle else dense)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    @classmethod
    def from_conv2d(
        cls,
        conv: nn.Conv2d,
        *,
        period: int | None = 1,
        pointwise: bool = True,
        spatial: str = "full",
        groups: int | None = None,
        backend: str = "auto",
        copy_weights: bool = False,
        init_scale: str = "effective",
        shuffle: bool = False,
        point_groups: int | None = None,
    ) -> SSConv2d:
        """Build an SSC layer with the geometry of ``conv``.

        ``groups`` defaults to ``conv.groups`` (it may be a multiple of it). With
        ``copy_weights=True`` the weights of ``conv`` on the pattern's taps are copied (the
        others are dropped); otherwise the layer is freshly initialized by ``init_scale``.
        ``shuffle`` (see the class) needs an ungrouped ``conv`` (``conv.groups == 1``): a
        shuffled layer reads across the blocks a grouped conv keeps apart.
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be an nn.Conv2d, got {type(conv).__name__}")
        groups = conv.groups if groups is None else groups
        if groups % conv.groups:
            raise ValueError(
                f"groups={groups} must be a multiple of the source conv's groups={conv.groups}"
            )
        if shuffle and conv.groups > 1:
            raise ValueError(
                f"shuffle=True needs an ungrouped conv (groups=1), got groups={conv.groups}: a "
                "shuffled layer would read across the conv's own groups; pass shuffle=False"
            )
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            groups,
            conv.bias is not None,
            conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            period=period,
            pointwise=pointwise,
            spatial=spatial,
            backend=backend,
            dense_groups=conv.groups,
            init_scale=init_scale,
            shuffle=shuffle,
            point_groups=point_groups,
        )
        if copy_weights:
            layer.load_conv_weight(conv.weight.detach())
            if conv.bias is not None:
                with torch.no_grad():
                    layer.bias.copy_(conv.bias)
        return layer

    @torch.no_grad()
    def load_conv_weight(self, weight: Tensor) -> None:
        """Copy the weight ``(C_out, C_in/dense_groups, kh, kw)`` of the dense conv this layer
        stands for (as ``from_conv2d(copy_weights=True)`` does): its values on the pattern's
        taps, read through the shuffle where there is one."""
        expected = (self.out_channels, self.in_channels // self.dense_groups, *self.kernel_size)
        if tuple(weight.shape) != expected:
            raise ValueError(f"weight must have shape {expected}, got {tuple(weight.shape)}")
        if self.shuffle:
            if self.dense_groups != 1:
                raise ValueError("a shuffled layer cannot load the weight of a grouped conv")
            weight = weight.index_select(1, self.in_index.to(weight.device))
        self.load_dense_weight(_regroup(weight, self.dense_groups, self.groups))

    @torch.no_grad()
    def load_dense_weight(self, weight: Tensor) -> None:
        """Copy a dense ``(C_out, C_in/G, kh, kw)`` weight's values on the pattern's taps
        (over the layer's logical inputs, as :meth:`to_dense` returns it)."""
        expected = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        if tuple(weight.shape) != expected:
            raise ValueError(f"weight must have shape {expected}, got {tuple(weight.shape)}")
        c_out = expected[0]
        if self.weight_spatial is not None:
            p, a_cnt = self._p, self._a
            blocks = weight.reshape(c_out, a_cnt, p, *self.kernel_size)
            res = (torch.arange(c_out, device=weight.device) % (c_out // self.groups)) % p
            k = blocks[torch.arange(c_out, device=weight.device), :, res]  # (C_out, A, kh, kw)
            if self._checkerboard:
                self.weight_spatial.copy_(k[self.tap_mask])
            else:
                self.weight_spatial.copy_(k)
        if self.weight_point is not None:
            ch, cw = self.kernel_size[0] // 2, self.kernel_size[1] // 2
            centre = weight[:, :, ch, cw]  # (C_out, C_in/G)
            if self.point_cols is not None:
                self.weight_point.copy_(centre.gather(1, self.point_cols.to(weight.device)))
            elif self.period is None:
                self.weight_point.copy_(centre)
            else:
                p, a_cnt = self._p, self._a
                keep = self.spatial_onehot.view(c_out, 1, p).expand(c_out, a_cnt, p) == 0
                self.weight_point.copy_(centre.reshape(c_out, a_cnt, p)[keep].view(c_out, -1))

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        s += f", stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        s += f", period={self.period}, pointwise={self.pointwise}, spatial={self.spatial}"
        if self.point_groups != self.groups:
            s += f", point_groups={self.point_groups}"
        if self.shuffle:
            s += ", shuffle=True"
        if self._backend != "auto":
            s += f", backend={self._backend}"
        if self.init_scale != "effective":
            s += f", init_scale={self.init_scale}"
        s += f", density={self.density:.3g}"
        return s


class SSCTracer(torch.fx.Tracer):
    """A ``torch.fx`` tracer that keeps :class:`SSConv2d` layers (and the frozen ones of
    :mod:`ssconv.layers.inference`, :class:`ssconv.SSCLinear` and timm's ``Conv2dSame``,
    whose padding is computed from the input's size) as leaf modules: one ``call_module`` node
    each."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (
            isinstance(m, SSConv2d)
            or getattr(m, "_fx_leaf", False)
            or (isinstance(m, nn.Conv2d) and type(m).__name__ == "Conv2dSame")
            or (super().is_leaf_module(m, module_qualified_name))
        )


def symbolic_trace(model: nn.Module) -> torch.fx.GraphModule:
    """``torch.fx.symbolic_trace`` with SSC layers as leaves (see :class:`SSCTracer`)."""
    graph = SSCTracer().trace(model)
    name = model.__class__.__name__
    return torch.fx.GraphModule(model, graph, name)


def pad_arguments(padding: tuple[int, int]) -> list[int]:
    """``padding`` (pad_h, pad_w) as ``F.pad`` takes it: (left, right, top, bottom)."""
    return [padding[1], padding[1], padding[0], padding[0]]


def _legacy_shuffle_keys(state_dict, prefix, *args) -> None:
    """Load state_dicts of the first design-study runs, where the shuffle was a module in
    front of the layer: ``nn.Sequential(ChannelShuffle, SSConv2d)`` stored ``<name>.1.<p>``."""
    for name in ("weight_spatial", "weight_point", "bias"):
        old = f"{prefix}1.{name}"
        if old in state_dict and f"{prefix}{name}" not in state_dict:
            state_dict[f"{prefix}{name}"] = state_dict.pop(old)


def _regroup(weight: Tensor, from_groups: int, to_groups: int) -> Tensor:
    """Restrict a grouped weight ``(C_out, C_in/from, ...)`` to a finer grouping ``to``."""
    if from_groups == to_groups:
        return weight
    c_out, cin_from = weight.shape[0], weight.shape[1]
    k = to_groups // from_groups
    cin_to = cin_from // k
    cout_to = c_out // to_groups
    # Output group of channel o under the finer grouping, and its column block in the coarse one.
    o = torch.arange(c_out, device=weight.device)
    block = (o // cout_to) % k
    cols = block.view(-1, 1) * cin_to + torch.arange(cin_to, device=weight.device).view(1, -1)
    index = cols.view(c_out, cin_to, 1, 1).expand(c_out, cin_to, *weight.shape[2:])
    return torch.gather(weight, 1, index)


def shuffle_channels(x: Tensor, groups: int, channels: int) -> Tensor:
    """ShuffleNet's channel shuffle, ``x[:, in_index]`` of a shuffled layer, in ``x``'s own
    memory format: channels ``(j, h) -> (h, j)`` for ``j < C / groups, h < groups`` (a
    transpose, whose gradient is a transpose too; an index gather's is a slower scatter)."""
    # ``channels`` is a Python int (not x.shape[1]): exported graphs keep static shapes.
    return _channel_transpose(x, 1, channels // groups, groups, _is_channels_last(x))


def centre_input(
    x: Tensor, kernel_size: tuple[int, int], dilation: tuple[int, int], padding: tuple[int, int]
) -> tuple[Tensor, tuple[int, int]]:
    """Crop (or zero-pad) ``x`` so that a 1 x 1 conv reads the K x K windows' centres.

    Returns the input to give the 1 x 1 convolution and the padding to give it.
    """
    off_h = dilation[0] * (kernel_size[0] // 2) - padding[0]
    off_w = dilation[1] * (kernel_size[1] // 2) - padding[1]
    if off_h > 0 or off_w > 0:
        h, w = x.shape[2], x.shape[3]
        ch, cw = max(off_h, 0), max(off_w, 0)
        x = x[:, :, ch : h - ch, cw : w - cw]
    return x, (max(-off_h, 0), max(-off_w, 0))


def _channel_transpose(x: Tensor, groups: int, a: int, b: int, channels_last: bool) -> Tensor:
    """Reorder channels ``(g, i, j) -> (g, j, i)`` for ``i < a, j < b``, keeping the layout."""
    n, c, h, w = x.shape
    if channels_last:
        t = x.permute(0, 2, 3, 1).reshape(n, h, w, groups, a, b).transpose(4, 5)
        return t.reshape(n, h, w, c).permute(0, 3, 1, 2)
    return x.reshape(n, groups, a, b, h, w).transpose(2, 3).reshape(n, c, h, w)


def _split_residues(x: Tensor, groups: int, a: int, p: int) -> Tensor:
    """(N, C, H, W) with channels (g, a, s) -> (G*P, N, H, W, A), one NHWC block per (g, s)."""
    n, c, h, w = x.shape
    t = x.permute(0, 2, 3, 1).reshape(n, h, w, groups, a, p)
    return t.permute(3, 5, 0, 1, 2, 4).reshape(groups * p, n, h, w, a)


def _add_residue_major(out: Tensor, y: Tensor, groups: int, p: int, m: int, keep: int) -> Tensor:
    """``out + y`` where ``y``'s channels are ordered (g, s, b), ``out``'s (g, o' = b * P + s).

    Rows of ``y`` with ``b * P + s >= keep`` are padding and dropped. Adds in place into
    ``out`` (a fresh convolution output) without materializing the reordered ``y`` when the
    layouts allow it.
    """
    n, c, h, w = out.shape
    if m * p == keep:
        if _is_channels_last(out):
            yv = y.permute(0, 2, 3, 1).reshape(n, h, w, groups, p, m).transpose(4, 5)
            out.permute(0, 2, 3, 1).view(n, h, w, groups, m, p).add_(yv)
            return out
        if out.is_contiguous():
            yv = y.reshape(n, groups, p, m, h, w).transpose(2, 3)
            out.view(n, groups, m, p, h, w).add_(yv)
            return out
    yy = _channel_transpose(y, groups, p, m, _is_channels_last(y))
    if m * p != keep:
        yy = _drop_pad_channels(yy, groups, m * p, keep)
    return out + yy


def _drop_pad_channels(x: Tensor, groups: int, padded: int, keep: int) -> Tensor:
    n, _, h, w = x.shape
    return x.reshape(n, groups, padded, h, w)[:, :, :keep].reshape(n, groups * keep, h, w)
