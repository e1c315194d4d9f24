"""Per-layer speed of SSC against dense ``nn.Conv2d``: the efficiency table.

For each 3x3 layer shape and SSC setting, measures side by side (interleaved, one process) the
dense convolution, the masked reference and the fast backends, and reports

    efficiency = (dense time / SSC time) / (dense MACs / SSC effective MACs)

i.e. the fraction of the ideal speed-up (the MAC ratio) that is realized. A masked dense conv
scores about ``density``; 1.0 means the speed-up equals the MAC reduction.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
from torch import nn

from ssconv.layers import dispatch
from ssconv.layers.inference import SSConv2dInference
from ssconv.layers.pattern import SSCPattern
from ssconv.layers.ssconv import STOCK_BACKENDS, SSConv2d
from ssconv.utils.timing import measure

__all__ = [
    "LayerShape",
    "RESNET32_SHAPES",
    "VGG19_SHAPES",
    "DEFAULT_SETTINGS",
    "grid_layers",
    "run_layer_bench",
    "run_layer_train_bench",
    "format_markdown",
    "format_train_markdown",
]


@dataclass(frozen=True)
class LayerShape:
    net: str
    in_channels: int
    out_channels: int
    size: int  # input height = width
    stride: int = 1

    def label(self) -> str:
        s = f"/s{self.stride}" if self.stride > 1 else ""
        return f"{self.net} {self.in_channels}->{self.out_channels} @{self.size}{s}"


# The distinct 3x3 conv shapes (the 3-channel stems excluded: they stay dense).
RESNET32_SHAPES = [
    LayerShape("resnet32", 16, 16, 32),
    LayerShape("resnet32", 16, 32, 32, 2),
    LayerShape("resnet32", 32, 32, 16),
    LayerShape("resnet32", 32, 64, 16, 2),
    LayerShape("resnet32", 64, 64, 8),
]
VGG19_SHAPES = [
    LayerShape("vgg19", 64, 64, 32),
    LayerShape("vgg19", 64, 128, 16),
    LayerShape("vgg19", 128, 128, 16),
    LayerShape("vgg19", 128, 256, 8),
    LayerShape("vgg19", 256, 256, 8),
    LayerShape("vgg19", 256, 512, 4),
    LayerShape("vgg19", 512, 512, 4),
    LayerShape("vgg19", 512, 512, 2),
]
# (groups, period, pointwise, spatial): HetConv-style, sparser HetConv, no-pointwise,
# grouped HetConv, checkerboard, and the densest of them (P = 2).
DEFAULT_SETTINGS = [
    (1, 2, True, "full"),
    (1, 4, True, "full"),
    (1, 8, True, "full"),
    (1, 16, True, "full"),
    (1, 4, False, "full"),
    (2, 4, True, "full"),
    (1, 4, True, "checkerboard"),
]
# The stock backends without the masked dense reference (never a production path).
FAST_BACKENDS = tuple(b for b in STOCK_BACKENDS if b != "masked")


def fast_backends(device: str) -> tuple[str, ...]:
    """The fast backends to time: the stock ones, the fused kernel on CPU where it builds and
    the Triton kernels on CUDA where triton is installed."""
    if torch.device(device).type == "cpu":
        from ssconv.kernels import fused

        if fused.available():
            return (*FAST_BACKENDS, "fused")
    if torch.device(device).type == "cuda":
        from ssconv.kernels import triton_ssc

        if triton_ssc.available():
            return (*FAST_BACKENDS, "triton")
    return FAST_BACKENDS


def grid_layers(
    shape: LayerShape, settings: list[tuple[int, int, bool, str]] = DEFAULT_SETTINGS
) -> dict[tuple[int, int, bool, str], SSConv2d]:
    """The 3 x 3 SSC layers of ``shape`` for each (groups, period, pointwise, spatial) setting
    the pattern admits (the others are skipped), bias-free, padding 1, keyed by setting."""
    layers = {}
    for g, p, pw, sp in settings:
        try:
            SSCPattern(shape.in_channels, shape.out_channels, 3, g, p, pw, sp)
        except ValueError:
            continue
        layers[(g, p, pw, sp)] = SSConv2d(
            shape.in_channels,
            shape.out_channels,
            3,
            shape.stride,
            1,
            groups=g,
            bias=False,
            period=p,
            pointwise=pw,
            spatial=sp,
        )
    return layers


def run_layer_bench(
    shapes: list[LayerShape],
    settings: list[tuple[int, int, bool, str]] = DEFAULT_SETTINGS,
    *,
    batch: int = 64,
    repeats: int = 11,
    device: str = "cpu",
    channels_last: bool = True,
    progress=None,
) -> list[dict]:
    """One row per (shape, setting) with times (ms), MACs and efficiencies."""
    rows = []
    backends = ("masked", *fast_backends(device))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for shape in shapes:
        x = torch.randn(batch, shape.in_channels, shape.size, shape.size, device=device)
        x = x.contiguous(memory_format=fmt)
        dense = nn.Conv2d(shape.in_channels, shape.out_channels, 3, shape.stride, 1, bias=False).to(
            device
        )
        layers = {k: layer.to(device) for k, layer in grid_layers(shape, settings).items()}
        candidates = {"dense": lambda dense=dense, x=x: dense(x)}
        for key, layer in layers.items():
            for backend in backends:

                def call(layer=layer, backend=backend, x=x):
                    layer.backend = backend
                    return layer(x)

                candidates[(key, backend)] = call

            def auto_call(layer=layer, x=x):  # what the layer really runs by default
                layer.backend = "auto"
                return layer(x)

            candidates[(key, "auto")] = auto_call
            # The frozen layer inside a chain that keeps residue channel order (no transposes;
            # the input content does not matter for timing).
            frozen = SSConv2dInference(layer, "decomposed")
            if frozen.residue_tags() is not None:
                frozen.use_residue_order()
            candidates[(key, "in_chain")] = lambda frozen=frozen, x=x: frozen(x)
        with torch.inference_mode():
            stats = measure(candidates, repeats=repeats, device=device)
        t_dense = stats["dense"].median
        for key, layer in layers.items():
            ratio = 1.0 / layer.density
            times = {b: stats[(key, b)].median for b in backends}
            layer.backend = "auto"
            # The path an auto call takes: the pixel kernel (stride-1 layers it suits, checked
            # per call) or the backend resolved_backend names.
            auto = "pixels" if layer._infers_on_pixels(x) else layer.resolved_backend(True)
            best = min(times, key=times.get)
            eff = {b: (t_dense / t) / ratio for b, t in times.items()}
            t_auto = stats[(key, "auto")].median
            t_chain = stats[(key, "in_chain")].median
            chain_eff = (t_dense / min(t_chain, times[best])) / ratio
            g, p, pw, sp = key
            rows.append(
                {
                    "shape": shape.label(),
                    "net": shape.net,
                    "groups": g,
                    "period": p,
                    "pointwise": pw,
                    "spatial": sp,
                    "density": layer.density,
                    "mac_ratio": ratio,
                    "dense_ms": t_dense * 1e3,
                    "dense_spread": stats["dense"].spread,
                    **{f"{b}_ms": times[b] * 1e3 for b in times},
                    **{f"{b}_eff": eff[b] for b in eff},
                    "auto_backend": auto,
                    "auto_ms": t_auto * 1e3,
                    "auto_eff": (t_dense / t_auto) / ratio,
                    "best_backend": best,
                    "best_eff": eff[best],
                    "in_chain_ms": t_chain * 1e3,
                    "in_chain_eff": chain_eff,
                }
            )
        if progress is not None:
            progress(shape)
    return rows


def _train_kernels(layer: SSConv2d, width: int) -> str:
    """What ``auto`` trains ``layer`` on at ``width`` pixels: ``"fused"`` (the pixel
    kernels), ``"fused-channels"`` (the channel-lane kernels) or the stock backend."""
    kernel = dispatch.train_kernel(layer, width)
    if kernel is None:
        return layer._stock_backend()
    return "fused" if kernel == "pixels" else "fused-channels"


def run_layer_train_bench(
    shapes: list[LayerShape],
    settings: list[tuple[int, int, bool, str]] = DEFAULT_SETTINGS,
    *,
    batch: int = 64,
    repeats: int = 7,
    channels_last: bool = False,
    progress=None,
) -> list[dict]:
    """Forward + backward (input and weight gradients) on CPU: dense ``nn.Conv2d``, SSC as
    ``auto`` runs it (the fused training kernels where :meth:`SSConv2d.trains_fused`), and SSC
    on the stock choice; one row per (shape, setting), efficiencies as in inference."""
    rows = []
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for shape in shapes:
        x = torch.randn(batch, shape.in_channels, shape.size, shape.size)
        x = x.contiguous(memory_format=fmt).requires_grad_(True)
        dense = nn.Conv2d(shape.in_channels, shape.out_channels, 3, shape.stride, 1, bias=False)

        def step(layer, backend=None, x=x):
            def call():
                if backend is not None:
                    layer.backend = backend
                y = layer(x)
                y.backward(torch.ones_like(y))
                x.grad = None
                for p in layer.parameters():
                    p.grad = None

            return call

        candidates = {"dense": step(dense)}
        layers = grid_layers(shape, settings)
        for key, layer in layers.items():
            candidates[(key, "auto")] = step(layer, "auto")
            candidates[(key, "stock")] = step(layer, layer._stock_backend())
        stats = measure(candidates, repeats=repeats, warmup=2)
        t_dense = stats["dense"].median
        for key, layer in layers.items():
            layer.backend = "auto"
            ratio = 1.0 / layer.density
            t_auto, t_stock = stats[(key, "auto")].median, stats[(key, "stock")].median
            g, p, pw, sp = key
            rows.append(
                {
                    "shape": shape.label(),
                    "groups": g,
                    "period": p,
                    "pointwise": pw,
                    "spatial": sp,
                    "density": layer.density,
                    "mac_ratio": ratio,
                    "dense_ms": t_dense * 1e3,
                    "auto_ms": t_auto * 1e3,
                    "auto_kernels": _train_kernels(layer, shape.size),
                    "stock_ms": t_stock * 1e3,
                    "stock_backend": layer._stock_backend(),
                    "auto_eff": (t_dense / t_auto) / ratio,
                    "stock_eff": (t_dense / t_stock) / ratio,
                    "auto_spread": stats[(key, "auto")].spread,
                }
            )
        if progress is not None:
            progress(shape)
    return rows


def format_train_markdown(rows: list[dict]) -> str:
    head = (
        "| layer | G | P | pw | spatial | density | dense ms | auto ms (kernels) | stock ms "
        "(backend) | eff. auto | eff. stock |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['groups']} | {r['period']} | {'y' if r['pointwise'] else 'n'} "
            f"| {r['spatial']} | {r['density']:.3f} | {r['dense_ms']:.1f} | {r['auto_ms']:.1f} "
            f"({r['auto_kernels']}) | {r['stock_ms']:.1f} ({r['stock_backend']}) "
            f"| {r['auto_eff']:.2f} | {r['stock_eff']:.2f} |"
        )
    return "\n".join(lines)


def summarize(rows: list[dict], max_density: float = 0.35) -> dict:
    sel = [r for r in rows if r["density"] <= max_density + 1e-9]
    keys = [
        "stock_eff",
        "masked_eff",
        "decomposed_eff",
        "split_eff",
        "fused_eff",
        "triton_eff",
        "auto_eff",
        "best_eff",
        "in_chain_eff",
    ]
    return {
        "rows": len(sel),
        "max_density": max_density,
        **{
            f"median_{k}": statistics.median(r[k] for r in sel)
            for k in keys
            if sel and all(k in r for r in sel)
        },
    }


def format_markdown(rows: list[dict]) -> str:
    def opt(r: dict, key: str) -> str:
        return f"{r[key]:.2f}" if key in r else "-"

    head = (
        "| layer | G | P | pw | spatial | density | dense ms | masked ms | decomposed ms | "
        "split ms | fused ms | triton ms | in-chain ms | eff. masked | eff. decomposed | "
        "eff. split | eff. fused | eff. triton | auto | eff. best | eff. in chain |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['groups']} | {r['period']} | {'y' if r['pointwise'] else 'n'} "
            f"| {r['spatial']} | {r['density']:.3f} | {r['dense_ms']:.2f} | {r['masked_ms']:.2f} "
            f"| {r['decomposed_ms']:.2f} | {r['split_ms']:.2f} | {opt(r, 'fused_ms')} "
            f"| {opt(r, 'triton_ms')} | {r['in_chain_ms']:.2f} "
            f"| {r['masked_eff']:.2f} | {r['decomposed_eff']:.2f} | {r['split_eff']:.2f} "
            f"| {opt(r, 'fused_eff')} | {opt(r, 'triton_eff')} "
            f"| {r['auto_backend']} {r['auto_eff']:.2f} | {r['best_eff']:.2f} "
            f"({r['best_backend']}) | {r['in_chain_eff']:.2f} |"
        )
    return "\n".join(lines)
