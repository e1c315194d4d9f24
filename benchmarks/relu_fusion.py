"""Frozen SSC layers with and without the ReLU fused into the kernels' store, in one process.

    python benchmarks/relu_fusion.py [--threads 2] [--repeats 31] [--models vgg19_bn ...]

Per layer: an SSC layer (2 groups) followed by a ReLU, frozen with
``ssconv.deploy.freeze(relu_fusion=False)`` and with the default (the ReLU applied as the
kernel stores its output, :func:`ssconv.deploy.fuse_relu`), timed interleaved, NCHW, batch 64,
at VGG-19's sizes (the pixel kernel at 32 x 32 and 16 x 16, the channel-lane kernel at 8 x 8
and 4 x 4). Then whole frozen SSC models at density 0.1, the same two ways. Prints the
medians and the ratios (unfused over fused: above 1, the fusion is faster); speed is never
asserted in tests.
"""

from __future__ import annotations

import argparse

import torch

from ssconv import SSConv2d
from ssconv.bench.models import build_variants
from ssconv.deploy import freeze
from ssconv.utils.malloc import tune_malloc
from ssconv.utils.timing import machine_info, measure

LAYERS = ((64, 32, 8), (128, 16, 8), (256, 8, 4), (512, 4, 4))  # channels, side, period


def _ab(a, b, x, repeats: int) -> tuple[float, float]:
    with torch.inference_mode():
        s = measure({"unfused": lambda: a(x), "fused": lambda: b(x)}, repeats=repeats)
    return s["unfused"].median * 1e3, s["fused"].median * 1e3


def main(argv=None) -> int:
    tune_malloc()  # as the ssconv command does (ssconv.utils.malloc)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=31)
    p.add_argument("--models", nargs="*", default=["vgg19_bn", "cifar_resnet32"])
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine_info()
    print(f"{args.threads} threads, NCHW, batch 64, {info['processor']}, {info['date']}\n")
    print("| case | unfused ms | fused ms | unfused / fused |\n|---|---|---|---|")
    for channels, side, period in LAYERS:
        torch.manual_seed(0)
        conv = SSConv2d(channels, channels, 3, padding=1, groups=2, period=period)
        model = torch.nn.Sequential(conv, torch.nn.ReLU()).eval()
        x = torch.randn(64, channels, side, side)
        a, b = _ab(freeze(model, relu_fusion=False), freeze(model), x, args.repeats)
        label = f"layer {channels} -> {channels} @{side}, G=2 P={period}"
        print(f"| {label} | {a:.2f} | {b:.2f} | {a / b:.3f}x |", flush=True)
    for name in args.models:
        torch.manual_seed(0)
        model = build_variants(name, 0.1, variants=["ssc"])[0].model.eval()
        x = torch.randn(64, 3, 32, 32)
        a, b = _ab(freeze(model, relu_fusion=False), freeze(model), x, args.repeats)
        print(f"| {name} at 0.1, frozen | {a:.1f} | {b:.1f} | {a / b:.3f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
