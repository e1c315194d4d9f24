"""End-to-end CPU/GPU speed of dense vs SSC vs pruned vs depthwise-separable models.

    python benchmarks/end_to_end.py [--device cpu] [--out benchmarks/results/cpu]
                                    [--tune] [--onnx] [--compile [MODE]] [--cuda-graphs]
                                    [--batch N] [--models ...] [--densities ...]
                                    [--nchw] [--threads N] [--variants ...]
                                    [--fast-batchnorm] [--[no-]fast-pooling]

Runs ``ssconv bench`` for VGG-19 and ResNet-32 (32 x 32, batch 64) and ResNet-50 (224 x 224,
batch 8, 1x1 convs converted) at densities 0.10 and 0.05 (ResNet-50: 0.20 and 0.10, see
DENSITIES), inference and one training step,
and writes one JSON per case; the Markdown tables go to stdout. Record them in
docs/benchmarks.md. ``--nchw --threads 2 --variants dense ssc dw_separable`` is the CPU target
grid of the speed issue (SSC trains in NCHW, the trainer's default).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ssconv.bench.models import VARIANTS, bench_variants, build_variants, format_bench
from ssconv.layers.batchnorm import fast_batchnorm
from ssconv.utils.malloc import tune_malloc

CASES = [
    # model, input size, batch, keep rules
    ("vgg19_bn", (3, 32, 32), 64, None),
    ("cifar_resnet32", (3, 32, 32), 64, None),
    ("resnet50", (3, 224, 224), 8, ("stem", "depthwise", "classifier")),
]
# Densities timed by default. ResNet-50's dense stem and classifier alone hold 8.1 % of its
# weights, so 0.05 cannot be met without pruning the classifier: it is timed at 0.2 (one of
# the paper's ImageNet densities) and 0.1 instead.
DENSITIES = {"vgg19_bn": (0.1, 0.05), "cifar_resnet32": (0.1, 0.05), "resnet50": (0.2, 0.1)}


def main(argv=None) -> int:
    tune_malloc()  # as the ssconv command does (ssconv.utils.malloc)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="benchmarks/results/cpu")
    p.add_argument(
        "--densities", type=float, nargs="+", default=None, help="default: DENSITIES per model"
    )
    p.add_argument("--models", nargs="+", default=[c[0] for c in CASES])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--tune", action="store_true")
    p.add_argument("--onnx", action="store_true")
    p.add_argument(
        "--compile", nargs="?", const="default", default=None, help="torch.compile mode too"
    )
    p.add_argument("--cuda-graphs", action="store_true", help="CUDA graphs too (CUDA only)")
    p.add_argument("--batch", type=int, default=None, help="default: each case's batch")
    p.add_argument("--no-train", action="store_true")
    p.add_argument("--nchw", action="store_true", help="NCHW instead of channels_last")
    p.add_argument(
        "--fast-batchnorm",
        action="store_true",
        help="every variant's BatchNorm2d on ssconv's NCHW kernels (fast_batchnorm: true)",
    )
    p.add_argument(
        "--fast-pooling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="every variant's 2 x 2 max pools on ssconv's NCHW kernel, frozen and in training "
        "(--no-fast-pooling: PyTorch's in both; default: ssconv's in the frozen models only)",
    )
    p.add_argument(
        "--channels-last-chains",
        action="store_true",
        help="training steps with ssconv.deploy.chain_channels_last (channels_last_chains: true)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), help=f"default: {' '.join(VARIANTS)}"
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for model, size, batch, keep in CASES:
        if model not in args.models:
            continue
        for density in args.densities or DENSITIES[model]:
            variants = build_variants(model, density, keep=keep, variants=args.variants)
            if args.fast_batchnorm:
                for v in variants:
                    fast_batchnorm(v.model)
            batch_used = args.batch or batch
            result = bench_variants(
                variants,
                size,
                batch=batch_used,
                device=args.device,
                train=not args.no_train,
                onnx=args.onnx,
                repeats=args.repeats,
                tune=args.tune,
                channels_last=not args.nchw,
                compile=args.compile or False,
                cuda_graphs=args.cuda_graphs,
                fast_pooling=args.fast_pooling,
                channels_last_chains=args.channels_last_chains,
            )
            result.update(model=model, target_density=density, keep=keep)
            suffix = "_tuned" if args.tune else ""
            suffix += f"_b{batch_used}" if args.batch else ""
            suffix += "_nchw" if args.nchw else ""
            suffix += "_fastbn" if args.fast_batchnorm else ""
            if args.fast_pooling is not None:
                suffix += "_fastpool" if args.fast_pooling else "_torchpool"
            suffix += "_chains" if args.channels_last_chains else ""
            name = f"{model}_d{density}{suffix}.json"
            (out / name).write_text(json.dumps(result, indent=2))
            print(f"\n### {model}, density {density}, batch {batch_used}\n")
            print(format_bench(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
