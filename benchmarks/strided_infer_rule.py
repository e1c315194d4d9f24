"""Strided SSC layers in inference: the pixel kernels against the channel-lane kernel, in one
process.

    python benchmarks/strided_infer_rule.py [--threads 2] [--repeats 15] [--batch 64]

Times ResNet-32's strided 3 x 3 layers (16 -> 32 @32/s2, 32 -> 64 @16/s2) in the seven
settings of the layer benchmark, NCHW, without gradients, under ``auto`` twice: with the
inference threshold ``AUTO_PIXELS_STRIDED_INFER_MIN_WIDTH`` as it is (8 output pixels: the
pixel kernels) and raised to training's ``AUTO_FUSED_STRIDED_MIN_WIDTH`` (14: the channel-lane
kernel at 8 output pixels), beside one dense convolution, all interleaved so that the
machine's drift cancels out of the ratios. Speed is never asserted in tests.
"""

from __future__ import annotations

import argparse
import copy
import json

import torch
from torch import nn

from ssconv.bench.layers import DEFAULT_SETTINGS, RESNET32_SHAPES, grid_layers
from ssconv.layers import dispatch
from ssconv.utils.malloc import tune_malloc
from ssconv.utils.timing import machine_info, measure


def main(argv=None) -> int:
    tune_malloc()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rule = dispatch.AUTO_PIXELS_STRIDED_INFER_MIN_WIDTH
    rows = []
    for shape in [s for s in RESNET32_SHAPES if s.stride != 1]:
        x = torch.randn(args.batch, shape.in_channels, shape.size, shape.size)
        dense = nn.Conv2d(shape.in_channels, shape.out_channels, 3, shape.stride, 1, bias=False)
        layers = {k: m.eval() for k, m in grid_layers(shape, DEFAULT_SETTINGS).items()}

        def call(layer, width, x=x):
            def run():
                dispatch.AUTO_PIXELS_STRIDED_INFER_MIN_WIDTH = width
                try:
                    return layer(x)
                finally:
                    dispatch.AUTO_PIXELS_STRIDED_INFER_MIN_WIDTH = rule

            return run

        candidates = {"dense": lambda dense=dense, x=x: dense(x)}
        for key, layer in layers.items():
            # Two copies: each caches the packed weights of the kernel it runs.
            candidates[(key, "rule")] = call(layer, rule)
            candidates[(key, "training's")] = call(
                copy.deepcopy(layer), dispatch.AUTO_FUSED_STRIDED_MIN_WIDTH
            )
        with torch.inference_mode():
            stats = measure(candidates, repeats=args.repeats)
        t_dense = stats["dense"].median
        for key, layer in layers.items():
            with torch.inference_mode():
                path = layer.call_path(x)
            a, b = stats[(key, "rule")].median, stats[(key, "training's")].median
            rows.append(
                {
                    "shape": shape.label(),
                    "setting": list(key),
                    "density": layer.density,
                    "path": path,
                    "rule_ms": a * 1e3,
                    "training_rule_ms": b * 1e3,
                    "rule_eff": t_dense / a * layer.density,
                    "training_rule_eff": t_dense / b * layer.density,
                }
            )
    info = machine_info()
    print(f"strided layers, batch {args.batch}, NCHW, {args.threads} threads, {info['date']}\n")
    print(
        "| layer | G, P, pw, spatial | path now | ms now | ms at 14 | gain | eff. now | eff. 14 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        g, per, pw, sp = r["setting"]
        print(
            f"| {r['shape']} | {g}, {per}, {'y' if pw else 'n'}, {sp} | {r['path']} "
            f"| {r['rule_ms']:.2f} | {r['training_rule_ms']:.2f} "
            f"| {r['training_rule_ms'] / r['rule_ms']:.2f}x | {r['rule_eff']:.2f} "
            f"| {r['training_rule_eff']:.2f} |"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "args": vars(args), "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
