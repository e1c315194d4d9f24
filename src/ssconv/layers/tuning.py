"""Per-layer backend choice by measurement (``ssconv.autotune``).

The static ``auto`` rule of :class:`~ssconv.SSConv2d` is deterministic and cheap but cannot
know the machine. :func:`autotune` times every exact backend of every SSC layer on the layer's
real input shape (forward, or forward + backward for training) and sets each layer's
``backend`` to the fastest (on CPU the fused kernels are a candidate where they build, for
inference and for training). The choice is explicit afterwards (saved nowhere, reproducible by
setting ``layer.backend``), so a resumed run does not change kernels silently; results are
cached per layer signature inside the process, so identical layers are measured once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from ssconv.layers.ssconv import STOCK_BACKENDS, SSConv2d
from ssconv.utils.timing import measure

__all__ = ["autotune", "TUNABLE_BACKENDS"]

log = logging.getLogger(__name__)

TUNABLE_BACKENDS = STOCK_BACKENDS
_CACHE: dict[tuple, str] = {}


def _signature(layer: SSConv2d, shape, dtype, device, channels_last: bool, training: bool):
    return (
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
        layer.groups,
        layer.period,
        layer.pointwise,
        layer.spatial,
        layer.bias is not None,
        tuple(shape),
        str(dtype),
        str(device),
        channels_last,
        training,
        torch.get_num_threads(),
    )


def autotune(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    training: bool = False,
    backends: Sequence[str] = TUNABLE_BACKENDS,
    repeats: int = 7,
) -> dict[str, str]:
    """Set each SSC layer of ``model`` to its fastest backend; returns ``{name: backend}``."""
    inputs: dict[str, torch.Tensor] = {}
    handles = []
    for name, layer in model.named_modules():
        if isinstance(layer, SSConv2d):

            def hook(mod, args, name=name):
                inputs.setdefault(name, args[0].detach())

            handles.append(layer.register_forward_pre_hook(hook))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example_input)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if "fused" not in backends and torch.device(example_input.device).type == "cpu":
        from ssconv.kernels import fused

        if fused.available():
            backends = (*backends, "fused")
    chosen: dict[str, str] = {}
    for name, layer in model.named_modules():
        if not isinstance(layer, SSConv2d) or name not in inputs:
            continue
        x = inputs[name]
        cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        key = _signature(layer, x.shape, x.dtype, x.device, cl, training)
        if key not in _CACHE:
            _CACHE[key] = _measure(layer, x, backends, training, repeats)
        layer.backend = chosen[name] = _CACHE[key]
    log.info("autotune: %s", chosen)
    return chosen


def _measure(layer: SSConv2d, x: torch.Tensor, backends, training: bool, repeats: int) -> str:
    original = layer.backend
    x = torch.randn_like(x).requires_grad_(training)

    def run(backend: str):
        def call():
            layer.backend = backend
            if training:
                layer(x).sum().backward()
            else:
                with torch.no_grad():
                    layer(x)

        return call

    try:
        stats = measure({b: run(b) for b in backends}, repeats=repeats, warmup=2, device=x.device)
    finally:
        layer.backend = original
        layer.zero_grad(set_to_none=True)
    return min(stats, key=lambda b: stats[b].median)
