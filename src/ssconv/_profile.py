"""Counting parameters and multiply-accumulates (MACs) of a model, per layer and in total.

Two MAC figures are reported separately, as the project's specification requires:

* **effective** MACs: the nonzero weights of each convolution / linear layer times the output
  positions they are applied at (for SSC layers the spec's formula, for pruned layers the
  unmasked weights, for dense layers the whole weight);
* **executed** MACs: what the kernels that really run compute, measured with
  :class:`torch.utils.flop_counter.FlopCounterMode` (half its FLOP count), e.g. a masked dense
  convolution executes the dense count whatever its mask.

Model density follows the pruning-at-initialization convention: nonzero weights of the
convolution and linear layers over their dense count; biases and normalization parameters are
reported but not counted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ssconv.layers.linear import SSCLinear
from ssconv.layers.ssconv import SSConv2d
from ssconv.sparsity.counting import counted_layers, weight_mask
from ssconv.utils.text import format_count, text_table

__all__ = ["LayerProfile", "ProfileResult", "profile"]


@dataclass
class LayerProfile:
    """One convolution or linear layer of a profiled model."""

    name: str
    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    settings: str
    params: int  # nonzero weights (no bias)
    dense_params: int  # weights of the dense layer of the same shape
    bias_params: int
    effective_macs: int
    executed_macs: int
    dense_macs: int  # MACs of the dense layer of the same shape
    path: str = ""  # SSC layers: the kernels this call ran (SSConv2d.call_path)

    @property
    def density(self) -> float:
        return self.params / self.dense_params if self.dense_params else 1.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["in_shape"], d["out_shape"] = list(self.in_shape), list(self.out_shape)
        d["density"] = self.density
        return d


@dataclass
class ProfileResult:
    """Per-layer and total counts; ``str()`` gives a table, :meth:`to_dict` a JSON-ready dict."""

    input_size: tuple[int, ...]
    layers: list[LayerProfile]
    total_params: int  # every parameter tensor element, as stored (biases, norms included)
    executed_macs: int  # whole forward, every counted op (convolutions, matmuls)
    other_params: int = field(default=0)  # parameters outside conv/linear weights

    @property
    def weight_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def dense_weight_params(self) -> int:
        return sum(layer.dense_params for layer in self.layers)

    @property
    def density(self) -> float:
        dense = self.dense_weight_params
        return self.weight_params / dense if dense else 1.0

    @property
    def effective_macs(self) -> int:
        return sum(layer.effective_macs for layer in self.layers)

    @property
    def dense_macs(self) -> int:
        """MACs of the same layers with dense weights (the reference for MAC ratios)."""
        return sum(layer.dense_macs for layer in self.layers)

    def to_dict(self) -> dict:
        return {
            "input_size": list(self.input_size),
            "layers": [layer.to_dict() for layer in self.layers],
            "totals": {
                "params": self.total_params,
                "weight_params": self.weight_params,
                "dense_weight_params": self.dense_weight_params,
                "density": self.density,
                "effective_macs": self.effective_macs,
                "executed_macs": self.executed_macs,
                "dense_macs": self.dense_macs,
            },
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def table(self) -> str:
        """A fixed-width table, one row per layer plus totals."""
        headers = [
            "layer",
            "type",
            "out shape",
            "settings",
            "params",
            "density",
            "eff MACs",
            "exec MACs",
            "runs on",
        ]
        rows = [
            [
                layer.name,
                layer.kind,
                "x".join(str(s) for s in layer.out_shape[1:]),
                layer.settings,
                format_count(layer.params),
                f"{layer.density:.3f}",
                format_count(layer.effective_macs),
                format_count(layer.executed_macs),
                layer.path,
            ]
            for layer in self.layers
        ]
        total = [
            "total (conv+linear)",
            "",
            "",
            "",
            format_count(self.weight_params),
            f"{self.density:.3f}",
            format_count(self.effective_macs),
            format_count(self.executed_macs),
            "",
        ]
        lines = text_table(headers, rows, right={4, 5, 6, 7}, footer=total)
        lines.append(
            f"nonzero conv+linear weights (the params column): {self.weight_params:,}; stored "
            f"parameter elements (every tensor as stored: masked zeros, biases and norms "
            f"included): {self.total_params:,}; input {tuple(self.input_size)}; executed MACs "
            f"measured with FlopCounterMode"
        )
        above = [
            layer
            for layer in self.layers
            if layer.path and layer.executed_macs > layer.effective_macs
        ]
        if above:
            names = ", ".join(f"{layer.name} ({layer.path})" for layer in above)
            kinds = dict.fromkeys(layer.path for layer in above)
            why = "; ".join(f"{k} = {_WHY_ABOVE[k]}" for k in kinds if k in _WHY_ABOVE)
            lines.append(
                f"{len(above)} SSC layer(s) execute more than their effective MACs on the "
                f"kernels the `auto` backend picks for this input (rules set by measured speed, "
                f"docs/benchmarks.md): {names}" + (f"; {why}" if why else "") + ". "
                "A layer's `backend` attribute picks other kernels "
                '(e.g. layer.backend = "decomposed").'
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


#: Why a path can execute zeros (the footnote of :meth:`ProfileResult.table`).
_WHY_ABOVE = {
    "masked": "one dense convolution with the pattern's zeros",
    "fused": "register blocks of 16 filters that run the union of their filters' inputs and taps",
    "decomposed": "full K x K kernels where checkerboard taps are zero",
    "split": "full K x K kernels where checkerboard taps are zero",
}


def _settings(module: nn.Module) -> str:
    describe = getattr(module, "ssconv_describe", None)
    if callable(describe):
        return describe()
    if isinstance(module, SSConv2d):
        kh, kw = module.kernel_size
        return f"{kh}x{kw} {module.pattern.describe()}"
    if isinstance(module, nn.Linear):
        return "linear"
    k = "x".join(str(s) for s in module.kernel_size)
    desc = f"{k} dense"
    if module.groups > 1:
        desc = f"{k} G={module.groups}"
        if module.groups == module.in_channels:
            desc += " depthwise"
    if weight_mask(module) is not None:
        desc += " masked"
    return desc


@torch.no_grad()
def profile(
    model: nn.Module,
    input_size: Sequence[int] | None = None,
    *,
    example_input: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> ProfileResult:
    """Profile ``model`` on one forward pass.

    Args:
        model: any ``nn.Module``; SSC, pruned, grouped, depthwise and dense layers are counted
            exactly.
        input_size: ``(C, H, W)`` (batch 1, so MACs are per image) or ``(N, C, H, W)``.
        example_input: a tensor to use instead of zeros of ``input_size``.
        device: where to run; defaults to the model's device.

    The model is run in eval mode (restored afterwards) under ``torch.no_grad``.
    """
    if example_input is None:
        if input_size is None:
            raise ValueError("profile needs input_size, e.g. (3, 32, 32), or example_input")
        size = tuple(int(s) for s in input_size)
        if len(size) == 3:
            size = (1, *size)
        if len(size) < 2 or any(s < 1 for s in size):
            raise ValueError(f"input_size must be (C, H, W) or (N, C, H, W), got {input_size!r}")
        if device is None:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else "cpu"
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        example_input = torch.zeros(size, device=device, dtype=dtype)
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    paths: dict[str, str] = {}
    handles = []
    layers_to_count = list(counted_layers(model))
    for name, module, _ in layers_to_count:
        if isinstance(module, SSConv2d):

            def pre_hook(mod, args, name=name):
                paths.setdefault(name, mod.call_path(args[0]))

            handles.append(module.register_forward_pre_hook(pre_hook))

        def hook(mod, args, output, name=name):
            shapes.setdefault(name, (tuple(args[0].shape), tuple(output.shape)))

        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            model(example_input)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    flops = counter.get_flop_counts()
    root = type(model).__name__
    layers: list[LayerProfile] = []
    counted_ids: set[int] = set()
    for name, module, counts in layers_to_count:
        if name not in shapes:
            continue
        counted_ids.update(id(p) for p in module.parameters())
        nonzero, dense = counts
        in_shape, out_shape = shapes[name]
        if isinstance(module, (nn.Linear, SSCLinear)):
            positions = out_shape[0] if len(out_shape) == 1 else _prod(out_shape[:-1])
        else:
            positions = out_shape[0] * _prod(out_shape[2:])
        key = f"{root}.{name}" if name else "Global"
        executed = sum(flops.get(key, {}).values()) // 2
        bias = getattr(module, "bias", None)
        layers.append(
            LayerProfile(
                name=name or root,
                kind=type(module).__name__.removeprefix("Parametrized"),
                in_shape=in_shape,
                out_shape=out_shape,
                settings=_settings(module),
                params=nonzero,
                dense_params=dense,
                bias_params=bias.numel() if isinstance(bias, torch.Tensor) else 0,
                effective_macs=nonzero * positions,
                executed_macs=executed,
                dense_macs=dense * positions,
                path=paths.get(name, ""),
            )
        )
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    return ProfileResult(
        input_size=tuple(example_input.shape),
        layers=layers,
        total_params=total,
        executed_macs=counter.get_total_flops() // 2,
        other_params=sum(p.numel() for p in params if id(p) not in counted_ids),
    )


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out
