"""A faster 2 x 2 max pooling for NCHW float32 tensors on CPU.

PyTorch's CPU max pooling in NCHW is a scalar loop over output pixels: on VGG-19's maps it was
4-60x slower than the vectorised kernels of the fused module (``ssc_fused.cpp``, namespace
``mp``) and 25x slower than PyTorch's own channels_last kernel, and in a frozen SSC VGG-19 it
took a quarter of the inference time (docs/benchmarks.md). The pixel kernels run in NCHW, so
the pools around them do too. :class:`MaxPool2d` is an ``nn.MaxPool2d`` that runs those kernels
on NCHW float32 CPU tensors: 2 x 2, stride-2 windows without padding or dilation (VGG's) in
inference and training alike, any other window (ResNet's 3 x 3, stride-2 stem pool) in calls
that need no gradient; and ``nn.MaxPool2d``'s own code everywhere else (dtypes, layouts, CUDA,
``return_indices``, other windows in training, tracing, export, ``torch.compile``, a missing
kernel). Values, the position each gradient goes to (ties and NaN included) and therefore
gradients equal PyTorch's exactly (tests/layers/test_pooling.py). The argmax is kept as one
byte per output (PyTorch keeps eight).

:func:`fast_pooling` swaps it in for every ``nn.MaxPool2d`` of a model, dense or sparse alike, so
that a comparison between them stays fair; :func:`ssconv.deploy.freeze` does so by default.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssconv.kernels import fused
from ssconv.utils.modules import retype_modules

__all__ = ["MaxPool2d", "fast_pooling", "pool_output_size", "pooled_width"]


def pool_output_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size along one side (``pooling_output_shape``)."""
    span = size + 2 * p - d * (k - 1) - 1
    n = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (n - 1) * s >= size + p:
        n -= 1  # the last window must start inside the input or the left padding
    return n


def pooled_width(width: int, pools) -> int:
    """``width`` after each ``(kernel, stride, padding, dilation, ceil_mode)`` pool of
    ``pools`` in turn (the width changes a channels_last chain records between two layers)."""
    for k, s, p, d, ceil in pools:
        width = pool_output_size(width, k, s, p, d, ceil)
    return width


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
    @torch.autograd.function.once_differentiable  # a second derivative raises, never wrong
    def backward(ctx, dy: Tensor):
        (idx,) = ctx.saved_tensors
        return fused._built().maxpool2x2_backward(dy.contiguous(), idx, *ctx.size)


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` with the fused module's kernels for NCHW float32 CPU tensors (see the
    module docstring); anything else runs ``nn.MaxPool2d``."""

    _fx_leaf = True  # ssconv.SSCTracer keeps it one call_module node, as nn.MaxPool2d is

    def _window(self) -> tuple[tuple, ...]:
        return tuple(_pair(v) for v in (self.kernel_size, self.stride, self.padding, self.dilation))

    def _kernel(self, x: Tensor) -> str | None:
        """``"2x2"`` (values and argmax: training and inference), ``"infer"`` (any window, values
        only: calls that need no gradient) or None (PyTorch's code)."""
        if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return None
        # not a Tensor: a torch.fx Proxy, traced
        if not isinstance(x, Tensor) or x.dim() != 4 or self.return_indices:
            return None
        if not (
            x.dtype == torch.float32
            and x.device.type == "cpu"
            and x.is_contiguous()
            and x.shape[0] * x.shape[1] > 0
            and not torch.is_autocast_enabled("cpu")
        ):
            return None
        h, w = x.shape[2], x.shape[3]
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self._window()
        even = h % 2 == 0 and w % 2 == 0  # ceil mode adds a partial window on odd sides
        plain_2x2 = (kh, kw, sh, sw, ph, pw, dh, dw) == (2, 2, 2, 2, 0, 0, 1, 1)
        if plain_2x2 and h >= 2 and w >= 2 and (even or not self.ceil_mode):
            return "2x2" if fused.available() else None
        if torch.is_grad_enabled() and x.requires_grad:
            return None
        ho, wo = self._output_size(h, w)
        if ho <= 0 or wo <= 0 or 2 * ph > kh or 2 * pw > kw:
            return None  # PyTorch's errors
        return "infer" if fused.available() else None

    def _output_size(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self._window()
        return (
            pool_output_size(h, kh, sh, ph, dh, self.ceil_mode),
            pool_output_size(w, kw, sw, pw, dw, self.ceil_mode),
        )

    def forward(self, x: Tensor) -> Tensor:
        kernel = self._kernel(x)
        if kernel == "2x2":
            return _MaxPool2x2.apply(x)
        if kernel == "infer":
            (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self._window()
            ho, wo = self._output_size(x.shape[2], x.shape[3])
            return fused._built().maxpool_infer(x, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo)
        return super().forward(x)


def fast_pooling(model: nn.Module) -> int:
    """Make every ``nn.MaxPool2d`` of ``model`` a :class:`MaxPool2d` (in place; pools have no
    parameters or buffers, so ``state_dict`` is unaffected); returns how many were changed.
    Only modules whose type is exactly ``nn.MaxPool2d`` change (pools of windows other than
    2 x 2 / stride 2 then run the kernel only in calls without gradients); subclasses and
    other pooling layers are left alone."""
    return retype_modules(model, nn.MaxPool2d, MaxPool2d)
