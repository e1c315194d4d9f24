"""A faster training-mode BatchNorm for NCHW float32 tensors on CPU.

The pixel kernels train SSC layers in NCHW, where PyTorch's CPU BatchNorm is 2-3x slower than
in channels_last (as slow as a scalar-loop prototype of the per-channel reductions); in an SSC
ResNet-32 training step it took 31 % of the time (docs/benchmarks.md). :class:`BatchNorm2d` is
an ``nn.BatchNorm2d`` whose training forward and backward run the fused module's vectorised
kernels (``ssc_fused.cpp``, namespace ``bn``) where they apply, and ``nn.BatchNorm2d``'s own
code everywhere else (evaluation, other dtypes or layouts, CUDA, tracing, ``torch.compile``,
autocast, a missing kernel). The same parameters, buffers, ``state_dict`` and running-statistics
rule; the result equals ``nn.BatchNorm2d``'s to float32 rounding (tests/layers/test_batchnorm.py).

:func:`fast_batchnorm` swaps it in for every ``nn.BatchNorm2d`` of a model, dense or sparse
alike, so that a comparison between them stays fair.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssconv.kernels import fused
from ssconv.utils.modules import retype_modules

__all__ = ["BatchNorm2d", "fast_batchnorm"]


class _BatchNormTrain(torch.autograd.Function):
    """Batch statistics, normalisation and affine map of an NCHW float32 tensor; returns the
    output and the batch mean and biased variance (for the running statistics)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float):
        mod = fused._built()
        mean, var = mod.bn_stats(x)
        invstd = torch.rsqrt(var + eps)
        a = weight.detach() * invstd
        y = mod.bn_affine(x, a, bias.detach() - mean * a)
        ctx.save_for_backward(x, mean, invstd, weight)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @torch.autograd.function.once_differentiable  # a second derivative raises, never wrong
    def backward(ctx, dy: Tensor, _dmean, _dvar):
        x, mean, invstd, weight = ctx.saved_tensors
        mod = fused._built()
        dy = dy.contiguous()
        count = x.numel() // x.shape[1]
        sum_dy, sum_dy_xmu = mod.bn_backward_sums(dy, x, mean)
        dx = None
        if ctx.needs_input_grad[0]:
            a = weight.detach() * invstd
            b = -a * invstd * invstd * sum_dy_xmu / count
            k = -a * sum_dy / count - b * mean
            dx = mod.bn_backward_apply(dy, x, a, b, k)
        return dx, sum_dy_xmu * invstd, sum_dy, None


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with the fused module's kernels for training-mode calls on NCHW
    float32 CPU tensors (see the module docstring); anything else runs ``nn.BatchNorm2d``."""

    _fx_leaf = True  # ssconv.SSCTracer keeps it one call_module node, as nn.BatchNorm2d is

    def _fast(self, x: Tensor) -> bool:
        return (
            self.training
            and self.affine
            and x.dim() == 4
            and x.dtype == torch.float32
            and x.device.type == "cpu"
            and x.is_contiguous()
            and x.shape[0] * x.shape[2] * x.shape[3] > 1
            and self.weight.dtype == torch.float32
            and not torch.jit.is_scripting()
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
            and not torch.is_autocast_enabled("cpu")
            and fused.available()
        )

    def forward(self, x: Tensor) -> Tensor:
        if not self._fast(x):
            return super().forward(x)
        self._check_input_dim(x)
        y, mean, var = _BatchNormTrain.apply(x, self.weight, self.bias, self.eps)
        if self.track_running_stats and self.running_mean is not None:
            # nn.BatchNorm2d's rule: the unbiased variance, momentum None = cumulative average.
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                if self.momentum is None:
                    factor = 1.0 / float(self.num_batches_tracked)
                else:
                    factor = self.momentum
                count = x.numel() // x.shape[1]
                self.running_mean.lerp_(mean, factor)
                self.running_var.lerp_(var * (count / (count - 1)), factor)
        return y


def fast_batchnorm(model: nn.Module) -> int:
    """Make every ``nn.BatchNorm2d`` of ``model`` a :class:`BatchNorm2d` (in place: the same
    parameter and buffer tensors, so optimizers and ``state_dict`` keys are unaffected);
    returns how many were changed. Only modules whose type is exactly ``nn.BatchNorm2d``
    change; subclasses and other normalisation layers are left alone."""
    return retype_modules(model, nn.BatchNorm2d, BatchNorm2d)
