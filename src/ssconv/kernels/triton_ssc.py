"""Triton kernels for SSC layers (forward, input gradient, weight gradient), for GPUs.

Follows "Pushing the Efficiency Limit Using Structured Sparse Convolutions" (Verma et al.,
WACV 2023, arXiv:2210.12818), as formalized in ``docs/ssc.md``. The same packing idea as the
fused CPU kernel (:mod:`ssconv.kernels.fused`): output channels with the same support (the
``(input channel, tap)`` pairs their weights may be nonzero on: a residue class, split further
by checkerboard parity) form a class, and one launch per layer runs every class as an implicit
GEMM over its own support, spatial and 1 x 1 weights together:

* **forward**: a program computes ``BLOCK_M`` output pixels x ``BLOCK_N`` filters of one class
  (a *tile*), accumulating in float32 over the class's ``k`` entries, ``BLOCK_K`` at a time:
  the input values of those entries are gathered for the pixels (``(BLOCK_M, BLOCK_K)``,
  any strides: NCHW and channels_last read in place) and multiplied with the packed weights
  ``(BLOCK_K, BLOCK_N)`` on tensor cores (``tl.dot``), or, for tiles narrower than 16 filters,
  as broadcast FMAs, so that narrow classes are not padded to 16 lanes.
* **input gradient**: the same kernel on the transposed packing (classes of input channels over
  ``(output channel, tap)`` entries), one tile per class and *stride phase* ``(ih mod s_h,
  iw mod s_w)``: a tile holds only the taps that reach its phase, so strided layers multiply no
  zero either (a direct transposed convolution would, for ``1 - 1/s^2`` of its products).
* **weight gradient**: its own kernel: a program reduces ``BLOCK_K`` entries x ``BLOCK_N``
  filters of one tile over a split of the pixels (``x^T @ grad_out`` gathered the same way);
  the splits' partial sums are added in float32.

The MACs each launch executes per output pixel are ``entries x BLOCK_N`` of its tiles
(:attr:`TilePlan.executed_per_pixel`); :func:`choose_block_n` picks the lane width so that this
equals the effective MACs (the layer's nonzero weights) wherever the class widths allow, plus
the ragged ends of the ``BLOCK_M`` / ``BLOCK_K`` tiles, which are masked loads.

The kernels are registered as the custom ops ``ssconv::triton_conv2d`` (forward and input
gradient) and ``ssconv::triton_conv2d_wgrad`` with fake kernels and FLOP formulas, so that
``torch.compile``, :class:`~torch.utils.flop_counter.FlopCounterMode` and ``ssconv.profile``
see them; :func:`ssc_conv2d` wraps them in an autograd function. ``triton`` is imported only
when a kernel runs: the package imports without it. On CPU tensors the kernels run only in
Triton's interpreter (``TRITON_INTERPRET=1``, slow; the tests use it).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from ssconv.kernels import fused

__all__ = [
    "TritonUnavailableError",
    "TilePlan",
    "available",
    "interpreting",
    "check_device",
    "choose_block_n",
    "make_plan",
    "make_transposed_plan",
    "gather",
    "ssc_conv2d",
    "layer_forward",
    "BLOCK_N_CHOICES",
]

#: Lane widths (filters per tile). 16 and up use tensor cores (``tl.dot`` needs 16).
BLOCK_N_CHOICES = (128, 64, 32, 16, 8, 4, 2, 1)
# Assumed throughput of the broadcast-FMA tiles per executed MAC relative to tensor-core tiles,
# used only to choose the lane width (not measured on a GPU yet).
FMA_SPEED = 0.125
#: Splits of the pixels in the weight gradient (None: about two programs per SM).
WGRAD_SPLIT: int | None = None


class TritonUnavailableError(RuntimeError):
    """The Triton backend cannot run here (no triton, or a CPU tensor without the interpreter)."""


def available() -> bool:
    """Whether the ``triton`` package is installed (nothing is imported or compiled)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether Triton's CPU interpreter is on (``TRITON_INTERPRET=1``), as triton reads it."""
    if not available():
        return False
    from triton import knobs

    return bool(knobs.runtime.interpret)


def check_device(x: Tensor) -> None:
    """Raise :class:`TritonUnavailableError` where the kernels cannot run on ``x``."""
    if not available():
        raise TritonUnavailableError(
            "backend='triton' needs the triton package, which is not installed "
            "(pip install triton; it ships with torch's CUDA wheels on Linux), or use another "
            "backend"
        )
    if x.device.type in ("cuda", "meta"):
        return
    if x.device.type == "cpu" and interpreting():
        return
    raise TritonUnavailableError(
        f"backend='triton' runs Triton kernels on CUDA tensors, got a {x.device.type} input: move "
        "the model and its input to a CUDA device or choose another backend (e.g. 'auto'); "
        "on CPU tensors the kernels run only in Triton's slow interpreter, for testing "
        "(environment variable TRITON_INTERPRET=1)"
    )


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class TilePlan:
    """The tile table of one layer's forward or input gradient (see ``_triton_kernels``).

    ``src`` maps every packed weight ``(entry, lane)`` to its flat index in the grouped weight
    ``(C_out, C_in/G, kh, kw)`` (``numel``, a zero, for padding lanes), as the fused kernel's
    plan does: :func:`gather` packs a weight with one differentiable index.
    """

    ent_ch: Tensor  # (E,) int32: the entry's source channel
    ent_tap: Tensor  # (E,) int32: its tap kh * kw_size + kw
    t_koff: Tensor  # (T,) int32: the tile's first entry
    t_klen: Tensor  # (T,) int32: its entries
    t_ph: Tensor  # (T,) int32: its stride phase (row), input gradient only
    t_pw: Tensor  # (T,) int32: its stride phase (column)
    out_idx: Tensor  # (T * BN,) int32: destination channel of each lane, -1 for padding
    src: Tensor  # (E, BN) int64
    lane_src: Tensor  # (T * BN,) int64: destination channel of each lane, C for padding
    block_n: int
    kmax: int  # the most entries of a tile (at least 1)
    channels: int  # destination channels (C_out of the forward, C_in of the input gradient)
    executed_per_pixel: int  # E * BN, summed over the stride phases
    effective_per_pixel: int  # the nonzero weights the tiles hold (no padding lanes)

    def kernel_args(self) -> tuple[Tensor, ...]:
        return (
            self.ent_ch,
            self.ent_tap,
            self.t_koff,
            self.t_klen,
            self.t_ph,
            self.t_pw,
            self.out_idx,
        )

    def to(self, device) -> TilePlan:
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return replace(self, **moved)


def choose_block_n(widths: list[int], lengths: list[int], choices=BLOCK_N_CHOICES) -> int:
    """The lane width with the lowest estimated time for classes of ``widths`` rows and
    ``lengths`` entries: executed MACs (padding lanes included) over the tile's assumed
    throughput (:data:`FMA_SPEED` below 16 lanes); ties go to the wider tile."""

    def cost(bn: int) -> float:
        executed = sum(k * bn * _cdiv(w, bn) for w, k in zip(widths, lengths))
        return executed / (1.0 if bn >= 16 else FMA_SPEED)

    return min(choices, key=lambda bn: (cost(bn), -bn))


def _classes(fm: Tensor) -> list[Tensor]:
    """Rows of ``fm`` ``(R, C, taps)`` grouped by equal support, in order of their first row."""
    rows = fm.shape[0]
    _, inverse = torch.unique(fm.reshape(rows, -1), dim=0, return_inverse=True)
    groups: dict[int, list[int]] = {}
    for r, c in enumerate(inverse.tolist()):
        groups.setdefault(c, []).append(r)
    return [torch.tensor(g, dtype=torch.long) for g in groups.values()]  # insertion = first row


def _tiles(
    fm: Tensor, fidx: Tensor, numel: int, phases: list[tuple[int, int, Tensor]], block_n
) -> TilePlan:
    """The tile table of ``fm`` ``(R, C, taps)`` (rows: destination channels, columns: source
    channels) and ``fidx`` (each position's flat weight index), one tile per class, lane block
    and phase ``(rh, rw, taps_ok)``."""
    rows, chans, taps = fm.shape
    classes = _classes(fm)
    supports = [fm[c[0]] for c in classes]  # (C, taps)
    if block_n is None:
        widths = [c.numel() for c in classes]
        lengths = [int(s.sum()) for s in supports]
        block_n = choose_block_n(widths, lengths)
    if block_n not in BLOCK_N_CHOICES:
        raise ValueError(f"block_n must be one of {BLOCK_N_CHOICES}, got {block_n!r}")
    ent_ch, ent_tap, koff, klen, t_ph, t_pw, out_idx, src = [], [], [], [], [], [], [], []
    e = effective = 0
    for members, support in zip(classes, supports):
        for rh, rw, tap_ok in phases:
            tap_i, ch_i = (support & tap_ok.view(1, taps)).t().nonzero(as_tuple=True)
            k = tap_i.numel()
            for b0 in range(0, members.numel(), block_n):
                blk = members[b0 : b0 + block_n]
                pad = block_n - blk.numel()
                s = fidx[blk][:, ch_i, tap_i].t()  # (k, lanes)
                src.append(torch.cat([s, s.new_full((k, pad), numel)], 1))
                out_idx.append(torch.cat([blk, blk.new_full((pad,), -1)]))
                ent_ch.append(ch_i)
                ent_tap.append(tap_i)
                koff.append(e)
                klen.append(k)
                t_ph.append(rh)
                t_pw.append(rw)
                e += k
                effective += k * blk.numel()
    int32 = {"dtype": torch.int32}
    lanes = torch.cat(out_idx)
    return TilePlan(
        ent_ch=torch.cat(ent_ch).to(**int32),
        ent_tap=torch.cat(ent_tap).to(**int32),
        t_koff=torch.tensor(koff, **int32),
        t_klen=torch.tensor(klen, **int32),
        t_ph=torch.tensor(t_ph, **int32),
        t_pw=torch.tensor(t_pw, **int32),
        out_idx=lanes.to(**int32),
        src=torch.cat(src).contiguous(),
        lane_src=torch.where(lanes < 0, rows, lanes),
        block_n=block_n,
        kmax=max([1, *klen]),
        channels=rows,
        executed_per_pixel=e * block_n,
        effective_per_pixel=effective,
    )


@torch.compiler.disable
@torch.no_grad()
def make_plan(
    mask: Tensor, groups: int, in_order: Tensor | None = None, block_n: int | None = None
) -> TilePlan:
    """The forward's tile table of a structural ``mask`` ``(C_out, C_in/G, kh, kw)``
    (``in_order``: the input channel each logical input reads, a channel shuffle; None: the
    identity). ``block_n=None`` picks the lane width (:func:`choose_block_n`)."""
    mask = mask.cpu().bool()
    fm, fidx = fused._index_layout(mask, groups, False, in_order)  # (C_out, C_in, taps)
    taps = fm.shape[2]
    return _tiles(fm, fidx, mask.numel(), [(0, 0, torch.ones(taps, dtype=torch.bool))], block_n)


@torch.compiler.disable
@torch.no_grad()
def make_transposed_plan(
    mask: Tensor,
    groups: int,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    in_order: Tensor | None = None,
    block_n: int | None = None,
) -> TilePlan:
    """The input gradient's tile table: rows are input channels, entries ``(output channel,
    tap)``, one set of tiles per stride phase holding the taps that reach it (input row ``ih``
    reads output row ``(ih + p - kh * d) / s`` where that division is exact)."""
    mask = mask.cpu().bool()
    fm, fidx = fused._index_layout(mask, groups, False, in_order)
    fm_t = fm.transpose(0, 1).contiguous()  # (C_in, C_out, taps)
    fidx_t = fidx.transpose(0, 1).contiguous()
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    u = torch.arange(kh).view(kh, 1)
    v = torch.arange(kw).view(1, kw)
    phases = []
    for rh in range(sh):
        for rw in range(sw):
            ok = ((rh + ph - u * dh) % sh == 0) & ((rw + pw - v * dw) % sw == 0)
            phases.append((rh, rw, ok.reshape(-1)))
    return _tiles(fm_t, fidx_t, mask.numel(), phases, block_n)


def gather(weight: Tensor, plan: TilePlan) -> Tensor:
    """``weight`` ``(C_out, C_in/G, kh, kw)`` in the plan's packed layout ``(E, BN)``
    (differentiable)."""
    flat = torch.cat([weight.reshape(-1), weight.new_zeros(1)])
    return flat[plan.src]


def _lane_bias(bias: Tensor | None, plan: TilePlan, like: Tensor) -> Tensor:
    """Per-lane float32 bias (zeros on padding lanes); differentiable."""
    if bias is None:
        return like.new_zeros(plan.out_idx.numel(), dtype=torch.float32)
    return torch.cat([bias.reshape(-1), bias.new_zeros(1)])[plan.lane_src].float()


def _out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _memory_format(x: Tensor) -> torch.memory_format:
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def _precision(x: Tensor) -> str:
    """``tl.dot``'s input precision: float32 inputs follow ``torch.backends.cudnn.allow_tf32``
    (what ``F.conv2d`` does on CUDA); half inputs ignore it."""
    if x.dtype == torch.float32 and not (x.is_cuda and torch.backends.cudnn.allow_tf32):
        return "ieee"
    return "tf32"


def _upcast(x: Tensor) -> bool:
    """Whether tensor-core tiles multiply in float32: bfloat16 on the interpreter, whose
    ``tl.dot`` reads bfloat16 as raw integers (numpy has no bfloat16)."""
    return x.dtype == torch.bfloat16 and not x.is_cuda


# ------------------------------------------------------------------ custom ops
@torch.library.custom_op("ssconv::triton_conv2d", mutates_args=())
def _conv_op(
    src: Tensor,
    w: Tensor,
    bias: Tensor,
    ent_ch: Tensor,
    ent_tap: Tensor,
    t_koff: Tensor,
    t_klen: Tensor,
    t_ph: Tensor,
    t_pw: Tensor,
    out_idx: Tensor,
    out_channels: int,
    out_size: list[int],
    geometry: list[int],
    transposed: bool,
    has_bias: bool,
    kmax: int,
) -> Tensor:
    check_device(src)  # here, not in the caller: the op's body is never traced
    from ssconv.kernels._triton_kernels import build

    conv, _ = build()
    n = src.shape[0]
    h_dst, w_dst = out_size
    kh, kw, sh, sw, ph, pw, dh, dw = geometry
    dst = torch.empty(
        (n, out_channels, h_dst, w_dst),
        device=src.device,
        dtype=src.dtype,
        memory_format=_memory_format(src),
    )
    hm, wm = (_cdiv(h_dst, sh), _cdiv(w_dst, sw)) if transposed else (h_dst, w_dst)
    m = n * hm * wm
    tiles = t_koff.numel()
    if m == 0 or tiles == 0:
        return dst.zero_()
    block_n = w.shape[1]

    def grid(meta):
        return (_cdiv(m, meta["BLOCK_M"]), tiles)

    conv[grid](
        src,
        w,
        bias,
        dst,
        ent_ch,
        ent_tap,
        t_koff,
        t_klen,
        t_ph,
        t_pw,
        out_idx,
        m,
        hm,
        wm,
        src.shape[2],
        src.shape[3],
        h_dst,
        w_dst,
        *src.stride(),
        *dst.stride(),
        sh,
        sw,
        ph,
        pw,
        dh,
        dw,
        kw,
        kmax,
        TRANSPOSED=transposed,
        HAS_BIAS=has_bias,
        USE_DOT=block_n >= 16,
        UPCAST=_upcast(src),
        PRECISION=_precision(src),
        BLOCK_N=block_n,
    )
    return dst


@_conv_op.register_fake
def _(src, w, bias, *args):
    out_channels, out_size = args[7], args[8]
    return src.new_empty((src.shape[0], out_channels, *out_size)).contiguous(
        memory_format=_memory_format(src)
    )


def _conv_flops(src_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    # w is (entries, lanes): entries x lanes MACs per grid pixel, 2 FLOPs each. The input
    # gradient's grid is one stride phase (its tiles partition the entries by phase).
    geometry, transposed = args[10], args[11]
    sh, sw = (geometry[2], geometry[3]) if transposed else (1, 1)
    pixels = out_shape[0] * _cdiv(out_shape[2], sh) * _cdiv(out_shape[3], sw)
    return 2 * w_shape[0] * w_shape[1] * pixels


@torch.library.custom_op("ssconv::triton_conv2d_wgrad", mutates_args=())
def _wgrad_op(
    x: Tensor,
    grad_out: Tensor,
    ent_ch: Tensor,
    ent_tap: Tensor,
    t_koff: Tensor,
    t_klen: Tensor,
    out_idx: Tensor,
    geometry: list[int],
    block_n: int,
    kmax: int,
    split: int,
) -> Tensor:
    check_device(x)
    from ssconv.kernels._triton_kernels import build

    _, wgrad = build()
    kh, kw, sh, sw, ph, pw, dh, dw = geometry
    n, _, ho, wo = grad_out.shape
    m = n * ho * wo
    entries, tiles = ent_ch.numel(), t_koff.numel()
    part = torch.empty((split, entries, block_n), device=x.device, dtype=torch.float32)
    if m == 0 or entries == 0:
        return part.zero_().sum(0)

    def grid(meta):
        return (_cdiv(kmax, meta["BLOCK_K"]), tiles, split)

    wgrad[grid](
        x,
        grad_out,
        part,
        ent_ch,
        ent_tap,
        t_koff,
        t_klen,
        out_idx,
        m,
        ho,
        wo,
        x.shape[2],
        x.shape[3],
        *x.stride(),
        *grad_out.stride(),
        sh,
        sw,
        ph,
        pw,
        dh,
        dw,
        kw,
        entries,
        split,
        kmax,
        USE_DOT=block_n >= 16,
        UPCAST=_upcast(x),
        PRECISION=_precision(x),
        BLOCK_N=block_n,
    )
    return part[0] if split == 1 else part.sum(0)


@_wgrad_op.register_fake
def _(x, grad_out, ent_ch, *args):
    block_n = args[5]
    return x.new_empty((ent_ch.shape[0], block_n), dtype=torch.float32)


def _wgrad_flops(x_shape, g_shape, ent_shape, *args, out_shape=None, **kwargs) -> int:
    # entries x lanes MACs per output pixel, as the forward.
    return 2 * out_shape[0] * out_shape[1] * g_shape[0] * g_shape[2] * g_shape[3]


register_flop_formula(torch.ops.ssconv.triton_conv2d)(_conv_flops)
register_flop_formula(torch.ops.ssconv.triton_conv2d_wgrad)(_wgrad_flops)


def _wgrad_split(x: Tensor, plan: TilePlan, pixels: int) -> int:
    """Splits of the pixels so that the weight gradient fills the GPU (about two programs
    per SM, each over at least 1024 pixels); 1 on the interpreter."""
    if WGRAD_SPLIT is not None:
        return WGRAD_SPLIT
    if not x.is_cuda:
        return 1
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    programs = max(1, _cdiv(int(plan.executed_per_pixel // plan.block_n), 32))
    return max(1, min(_cdiv(2 * sms, programs), pixels // 1024))


# ------------------------------------------------------------------ autograd
class _TritonConv(torch.autograd.Function):
    """Forward, input gradient and weight gradient on the Triton kernels (no double backward).

    Arguments: ``x, w, bias_l, wt``, the forward plan's 7 index tensors, the transposed plan's
    7, the forward plan's ``lane_src``, and a tuple of Python ints ``meta``.
    """

    @staticmethod
    def forward(ctx, x, w, bias_l, wt, *rest):
        idx, idx_t, lane_src, meta = rest[:7], rest[7:14], rest[14], rest[15]
        c_in, c_out, ho, wo, kmax, kmax_t, has_bias, geometry, split = meta
        y = _conv_op(
            x, w, bias_l, *idx, c_out, [ho, wo], list(geometry), False, bool(has_bias), kmax
        )
        ctx.save_for_backward(x, wt, lane_src, *idx, *idx_t)
        ctx.meta = meta
        ctx.block_n = w.shape[1]
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        x, wt, lane_src, *idx = ctx.saved_tensors
        idx, idx_t = idx[:7], idx[7:]
        c_in, c_out, ho, wo, kmax, kmax_t, has_bias, geometry, split = ctx.meta
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            zero = gy.new_zeros(1, dtype=torch.float32)
            size = [x.shape[2], x.shape[3]]
            gx = _conv_op(gy, wt, zero, *idx_t, c_in, size, list(geometry), True, False, kmax_t)
        if ctx.needs_input_grad[1]:
            ent_ch, ent_tap, t_koff, t_klen, _, _, out_idx = idx
            gw = _wgrad_op(
                x,
                gy,
                ent_ch,
                ent_tap,
                t_koff,
                t_klen,
                out_idx,
                list(geometry),
                ctx.block_n,
                kmax,
                split,
            ).to(x.dtype)
        if ctx.needs_input_grad[2]:
            sums = gy.sum((0, 2, 3), dtype=torch.float32)
            gb = torch.cat([sums, sums.new_zeros(1)])[lane_src]
        return (gx, gw, gb) + (None,) * (len(ctx.needs_input_grad) - 3)


def ssc_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    plan: TilePlan,
    plan_t: TilePlan,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, dilation, groups)`` on the Triton kernels,
    with gradients, for a weight ``(C_out, C_in/G, kh, kw)`` that is zero off the plans' mask
    (``plan = make_plan(mask, groups)``, ``plan_t = make_transposed_plan(mask, groups, ...)``,
    on ``x``'s device). The output has ``x``'s memory format and dtype (float32 accumulation;
    under autocast, the autocast dtype).
    Raises :class:`TritonUnavailableError` where the kernels cannot run (:func:`check_device`).
    """
    if x.dim() != 4 or x.shape[1] != plan_t.channels:
        raise RuntimeError(
            f"triton SSC conv: expected input of shape (N, {plan_t.channels}, H, W), got "
            f"{tuple(x.shape)}"
        )
    if torch.is_autocast_enabled(x.device.type):
        # As F.conv2d under autocast: inputs and weights in the autocast dtype.
        x = x.to(torch.get_autocast_dtype(x.device.type))
    geometry = [*kernel_size, *stride, *padding, *dilation]
    ho = _out_size(x.shape[2], kernel_size[0], stride[0], padding[0], dilation[0])
    wo = _out_size(x.shape[3], kernel_size[1], stride[1], padding[1], dilation[1])
    w = gather(weight, plan).to(x.dtype)
    bias_l = _lane_bias(bias, plan, w)
    has_bias = bias is not None
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (has_bias and bias.requires_grad)
    )
    if not needs_grad:
        return _conv_op(
            x, w, bias_l, *plan.kernel_args(), plan.channels, [ho, wo], geometry, False,
            has_bias, plan.kmax,
        )  # fmt: skip
    with torch.no_grad():
        wt = gather(weight.detach(), plan_t).to(x.dtype)
    split = _wgrad_split(x, plan, x.shape[0] * ho * wo)
    meta = (
        plan_t.channels,
        plan.channels,
        ho,
        wo,
        plan.kmax,
        plan_t.kmax,
        int(has_bias),
        tuple(geometry),
        split,
    )
    return _TritonConv.apply(
        x,
        w,
        bias_l,
        wt,
        *plan.kernel_args(),
        *plan_t.kernel_args(),
        plan.lane_src,
        meta,
    )


def layer_forward(layer, x: Tensor, padding: tuple[int, int]) -> Tensor:
    """An :class:`~ssconv.layers.ssconv.SSConv2d`'s convolution (``padding``: after its
    ``padding_mode`` padding) on the Triton kernels; the plans are cached on the layer, per
    device and padding, outside its state."""
    plans = layer.__dict__.setdefault("_triton_plans", {})
    key = (str(x.device), tuple(padding))
    if key not in plans:
        mask, order = layer.pattern.dense_mask(), layer._in_order()
        geometry = (layer.kernel_size, layer.stride, tuple(padding), layer.dilation)
        plans[key] = (
            make_plan(mask, layer.groups, order).to(x.device),
            make_transposed_plan(mask, layer.groups, *geometry, in_order=order).to(x.device),
        )
    plan, plan_t = plans[key]
    return ssc_conv2d(
        x,
        layer.to_dense(),
        layer.bias,
        plan,
        plan_t,
        layer.kernel_size,
        layer.stride,
        padding,
        layer.dilation,
    )
