"""The fused CPU kernels as three opaque torch ops with a registered autograd formula, so that
``torch.compile`` keeps them in its graphs (inductor then fuses the BatchNorm, ReLU and
additions around them, in the forward and in the backward).

Eager calls use :func:`ssconv.kernels.fused.fused_conv2d_train` (an autograd function over the
kernels' own ops, which :class:`~torch.utils.flop_counter.FlopCounterMode` sees one by one).
Under ``torch.compile`` a layer's plans cannot be graph inputs (dataclasses of index tensors,
one list of them per strided layer), so each layer's plans are registered once, eagerly, in a
process-wide table, and the ops take the layer's weight, its bias and the table's ``key``:

- ``ssconv::ssc_conv2d(x, weight, bias, key)``: the forward (``weight``: the grouped dense
  equivalent ``(C_out, C_in/G, kh, kw)``, zero off the pattern);
- ``ssconv::ssc_conv2d_input_grad(grad_out, weight, x, key)``: the input gradient;
- ``ssconv::ssc_conv2d_weight_grad(x, grad_out, key)``: the weight gradient, in ``weight``'s
  shape (zero off the pattern).

Entries are keyed by content (mask, groups, geometry, channel order), so the table grows
with the number of distinct layer configurations, not of layers or models.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from ssconv.kernels import fused

__all__ = ["Program", "compiling", "register", "program", "ssc_conv2d"]


@dataclass(frozen=True)
class Program:
    """What the ops need of one layer configuration: the forward plan, the input gradient's
    plan(s) and both geometries."""

    plan: fused.Plan
    plan_t: fused.Plan | fused.PhasePlans
    geometry: tuple[int, ...]  # kh, kw, sh, sw, ph, pw, dh, dw
    geometry_t: tuple[int, ...] | None  # stride-1 layers: the transposed convolution's
    weight_shape: tuple[int, int, int, int]


_lock = threading.Lock()
_programs: list[Program] = []
_by_content: dict[tuple, int] = {}


def register(
    mask: Tensor,
    groups: int,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    in_order: Tensor | None = None,
    plans: tuple[fused.Plan, fused.Plan | fused.PhasePlans] | None = None,
) -> int:
    """The table key of a layer configuration (registered on first sight; eager only).

    ``plans``: the layer's pixel-kernel plans where it has them already (as
    ``SSConv2d._train_plans``), else they are made here. Raises ``ValueError`` where the fused
    training kernels do not apply (stride-1 padding beyond ``dilation * (kernel - 1)``).
    """
    mask = mask.detach().cpu().bool()
    order = None if in_order is None else in_order.detach().cpu().long()
    content = (
        tuple(mask.shape),
        mask.flatten().numpy().tobytes(),
        int(groups),
        tuple(kernel_size),
        tuple(stride),
        tuple(padding),
        tuple(dilation),
        None if order is None else order.numpy().tobytes(),
    )
    with _lock:
        key = _by_content.get(content)
        if key is not None:
            return key
        strided = tuple(stride) != (1, 1)
        geometry_t = (
            None if strided else fused.transposed_geometry(kernel_size, stride, padding, dilation)
        )
        if not strided and geometry_t is None:
            raise ValueError(
                f"the fused SSC kernels need padding <= dilation * (kernel - 1) at stride 1; "
                f"got padding {tuple(padding)}"
            )
        if plans is None:
            plans = (
                fused.make_plan(mask, groups, kernel="pixels", in_order=order),
                fused.input_grad_plan(mask, groups, stride, padding, dilation, in_order=order),
            )
        geometry = (*kernel_size, *stride, *padding, *dilation)
        prog = Program(
            plans[0],
            plans[1],
            tuple(geometry),
            None if geometry_t is None else tuple(geometry_t),
            tuple(mask.shape),
        )
        _programs.append(prog)
        key = _by_content[content] = len(_programs) - 1
        return key


def program(key: int) -> Program:
    """The registered configuration ``key`` (:func:`register`)."""
    try:
        return _programs[key]
    except IndexError:
        raise KeyError(
            f"no SSC kernel program {key} in this process: programs are registered by "
            "ssconv.kernels.graph_ops.register (SSConv2d does it on its first call)"
        ) from None


def compiling() -> bool:
    """Whether the caller is being traced by ``torch.compile`` (not by ``torch.export``,
    whose programs must hold standard operators only: a key means nothing in another
    process)."""
    return torch.compiler.is_compiling() and not torch.compiler.is_exporting()


def _output_shape(x: Tensor, prog: Program) -> tuple[int, int, int, int]:
    kh, kw, sh, sw, ph, pw, dh, dw = prog.geometry
    ho = fused._out_size(x.shape[2], kh, sh, ph, dh)
    wo = fused._out_size(x.shape[3], kw, sw, pw, dw)
    return (x.shape[0], prog.weight_shape[0], ho, wo)


def _empty_like_format(shape, ref: Tensor) -> Tensor:
    out = ref.new_empty(shape)
    cl = ref.is_contiguous(memory_format=torch.channels_last) and not ref.is_contiguous()
    return out.contiguous(memory_format=torch.channels_last) if cl else out


# ------------------------------------------------------------------ forward
@torch.library.custom_op("ssconv::ssc_conv2d", mutates_args=())
def _conv_op(x: Tensor, weight: Tensor, bias: Tensor | None, key: int) -> Tensor:
    prog = program(key)
    _check_input(x, prog)
    w = fused.gather(weight, prog.plan).contiguous()
    bias_l = fused.lane_values(bias, prog.plan, w).contiguous()
    y = fused._run_forward(x.contiguous(), w, bias_l, prog.plan, list(prog.geometry))
    return fused._like(y, x)


@_conv_op.register_fake
def _(x, weight, bias, key):
    prog = program(key)
    _check_input(x, prog)
    return _empty_like_format(_output_shape(x, prog), x)


# ------------------------------------------------------------------ backward
@torch.library.custom_op("ssconv::ssc_conv2d_input_grad", mutates_args=())
def _input_grad_op(grad_out: Tensor, weight: Tensor, x: Tensor, key: int) -> Tensor:
    prog = program(key)
    strided = isinstance(prog.plan_t, fused.PhasePlans)
    wt = weight if strided else fused.gather(weight, prog.plan_t).contiguous()
    geometry_t = None if strided else list(prog.geometry_t)
    return fused.input_grad(grad_out.contiguous(), wt, prog.plan_t, geometry_t, x)


@_input_grad_op.register_fake
def _(grad_out, weight, x, key):
    return _empty_like_format(x.shape, x)


@torch.library.custom_op("ssconv::ssc_conv2d_weight_grad", mutates_args=())
def _weight_grad_op(x: Tensor, grad_out: Tensor, key: int) -> Tensor:
    prog = program(key)
    plan = prog.plan
    packed = fused.run_weight_grad(x.contiguous(), grad_out.contiguous(), plan, list(prog.geometry))
    numel = math.prod(prog.weight_shape)
    # The packed gradient back to the grouped weight's layout (gather's transpose); the
    # padding entries (index numel) land in a dropped slot.
    flat = packed.new_zeros(numel + 1)
    flat.index_add_(0, plan.src.reshape(-1), packed.reshape(-1))
    return flat[:numel].view(prog.weight_shape)


@_weight_grad_op.register_fake
def _(x, grad_out, key):
    return x.new_empty(program(key).weight_shape)


def _setup_context(ctx, inputs, output):
    x, weight, bias, key = inputs
    ctx.save_for_backward(x, weight)
    ctx.key = key
    ctx.has_bias = bias is not None


def _backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    gx = gw = gb = None
    if ctx.needs_input_grad[0]:
        gx = _input_grad_op(grad_out, weight, x, ctx.key)
    if ctx.needs_input_grad[1]:
        gw = _weight_grad_op(x, grad_out, ctx.key)
    if ctx.has_bias and ctx.needs_input_grad[2]:
        gb = grad_out.sum((0, 2, 3))
    return gx, gw, gb, None


_conv_op.register_autograd(_backward, setup_context=_setup_context)


# Executed MACs, as the kernels' own ops count them (FlopCounterMode sees these ops, not the
# kernel calls inside them): the forward plan's entries x lanes per output pixel, the input
# gradient's per input pixel (the phases of a strided layer together hold every weight once:
# their entries over the output pixels).
def _conv_flops(x_shape, w_shape, b_shape, key, out_shape=None, **kwargs) -> int:
    n, _, ho, wo = out_shape
    return 2 * program(key).plan.executed_per_pixel * n * ho * wo


def _input_grad_flops(g_shape, w_shape, x_shape, key, out_shape=None, **kwargs) -> int:
    plan_t = program(key).plan_t
    n, _, ho, wo = g_shape
    if isinstance(plan_t, fused.PhasePlans):
        per = sum(p.executed_per_pixel for p in plan_t.plans if p is not None)
        return 2 * per * n * ho * wo
    return 2 * plan_t.executed_per_pixel * n * x_shape[2] * x_shape[3]


def _weight_grad_flops(x_shape, g_shape, key, out_shape=None, **kwargs) -> int:
    n, _, ho, wo = g_shape
    return 2 * program(key).plan.executed_per_pixel * n * ho * wo


register_flop_formula(torch.ops.ssconv.ssc_conv2d)(_conv_flops)
register_flop_formula(torch.ops.ssconv.ssc_conv2d_input_grad)(_input_grad_flops)
register_flop_formula(torch.ops.ssconv.ssc_conv2d_weight_grad)(_weight_grad_flops)


def ssc_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, key: int) -> Tensor:
    """``F.conv2d`` of the registered configuration ``key`` on the fused kernels, as one op
    that ``torch.compile`` keeps in its graph (eager calls work too). No double backward."""
    return _conv_op(x, weight, bias, key)


def _check_input(x: Tensor, prog: Program) -> None:
    # In the op and its fake, not in ssc_conv2d: dynamo traces that one, and its view of the
    # table is the one of the trace's start (registrations made during the trace are missed).
    if x.dim() != 4 or x.shape[1] != prog.plan.in_channels:
        raise RuntimeError(
            f"fused SSC conv: expected input of shape (N, {prog.plan.in_channels}, H, W), got "
            f"{tuple(x.shape)}"
        )
