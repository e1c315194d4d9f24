"""A faster 2 x 2 max pooling for NCHW float32 tensors on CPU.

PyTorch's CPU max pooling in NCHW is a scalar loop over output pixels: on VGG-19's maps it was
4-60x slower than the vectorised kernel of the fused module (``ssc_fused.cpp``, namespace
``mp``) and 25x slower than PyTorch's own channels_last kernel, and in a frozen SSC VGG-19 it
took a quarter of the inference time (docs/benchmarks.md). The pixel kernels run in NCHW, so
VGG's pools do too. :class:`MaxPool2d` is an ``nn.MaxPool2d`` that runs that kernel for 2 x 2,
stride-2 windows without padding or dilation on NCHW float32 CPU tensors, inference and
training alike, and ``nn.MaxPool2d``'s own code everywhere else (other windows, dtypes,
layouts, CUDA, ``return_indices``, tracing, export, ``torch.compile``, a missing kernel). Values,
the position each gradient goes to (ties and NaN included) and therefore gradients equal
PyTorch's exactly (tests/layers/test_pooling.py). The argmax is kept as one byte per output
(PyTorch keeps eight).

:func:`fast_pooling` swaps it in for every ``nn.MaxPool2d`` of a model, dense or sparse alike, so
that a comparison between them stays fair; :func:`ssconv.deploy.freeze` does so by default.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssconv.kernels import fused

__all__ = ["MaxPool2d", "fast_pooling"]


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        mod = fused._built()
        keep = ctx.needs_input_grad[0]
        y, idx = mod.maxpool2x2(x, keep)
        if keep:
            ctx.save_for_backward(idx)
            ctx.size = (x.shape[2], x.shape[3])
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        (idx,) = ctx.saved_tensors
        return fused._built().maxpool2x2_backward(dy.contiguous(), idx, *ctx.size)


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` with the fused module's kernel for 2 x 2, stride-2 windows on NCHW
    float32 CPU tensors (see the module docstring); anything else runs ``nn.MaxPool2d``."""

    _fx_leaf = True  # ssconv.SSCTracer keeps it one call_module node, as nn.MaxPool2d is

    def _window_suits(self) -> bool:
        return (
            _pair(self.kernel_size) == (2, 2)
            and _pair(self.stride) == (2, 2)
            and _pair(self.padding) == (0, 0)
            and _pair(self.dilation) == (1, 1)
            and not self.return_indices
        )

    def _fast(self, x: Tensor) -> bool:
        if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return False
        # not a Tensor: a torch.fx Proxy, traced
        if not isinstance(x, Tensor) or x.dim() != 4 or not self._window_suits():
            return False
        h, w = x.shape[2], x.shape[3]
        if self.ceil_mode and (h % 2 or w % 2):
            return False  # ceil mode adds a partial window on odd sides
        return (
            h >= 2
            and w >= 2
            and x.dtype == torch.float32
            and x.device.type == "cpu"
            and x.is_contiguous()
            and not torch.is_autocast_enabled("cpu")
            and fused.available()
        )

    def forward(self, x: Tensor) -> Tensor:
        if not self._fast(x):
            return super().forward(x)
        return _MaxPool2x2.apply(x)


def fast_pooling(model: nn.Module) -> int:
    """Make every ``nn.MaxPool2d`` of ``model`` a :class:`MaxPool2d` (in place; pools have no
    parameters or buffers, so ``state_dict`` is unaffected); returns how many were changed.
    Only modules whose type is exactly ``nn.MaxPool2d`` change; the others (and pools of other
    windows, which keep PyTorch's code at run time) are left alone."""
    changed = 0
    for module in model.modules():
        if type(module) is nn.MaxPool2d:
            module.__class__ = MaxPool2d
            changed += 1
    return changed
