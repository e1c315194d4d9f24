"""Training steps with PyTorch's BatchNorm against ssconv's NCHW BatchNorm kernels, in one process.

    python benchmarks/bn_speed.py [--model cifar_resnet32] [--density 0.1] [--threads 2]
                                  [--batch 64] [--repeats 9] [--variants dense ssc ...]

Each variant (dense, SSC, ... as ``ssconv bench`` builds them) is timed for one SGD step in NCHW
(the trainer's layout) twice: as built, and after :func:`ssconv.layers.batchnorm.fast_batchnorm`
(every ``nn.BatchNorm2d`` on the fused module's kernels), all candidates interleaved. Prints the
step times and each variant's speed-up over dense with the same BatchNorm; speed is never
asserted in tests.
"""

from __future__ import annotations

import argparse
import copy
import json

import torch

from ssconv.bench.models import build_variants, train_step
from ssconv.layers.batchnorm import fast_batchnorm
from ssconv.utils.malloc import tune_malloc
from ssconv.utils.timing import machine_info, measure


def _step(model, x, y):
    model.train()
    return train_step(model, x, y)


def main(argv=None) -> int:
    tune_malloc()  # as the ssconv command does (ssconv.utils.malloc)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="cifar_resnet32")
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32, help="input height = width")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--variants", nargs="+", default=["dense", "ssc"])
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    variants = build_variants(args.model, args.density, variants=tuple(args.variants))
    x = torch.randn(args.batch, 3, args.size, args.size)
    cands = {}
    for v in variants:
        fast = copy.deepcopy(v.model)
        n = fast_batchnorm(fast)
        n_out = v.model(x[:1]).shape[1]
        y = torch.randint(0, n_out, (args.batch,))
        cands[(v.name, "torch")] = _step(v.model, x, y)
        cands[(v.name, "ssconv")] = _step(fast, x, y)
        print(f"{v.name}: {n} BatchNorm2d layers", flush=True)
    stats = measure(cands, repeats=args.repeats)
    t = {k: s.median * 1e3 for k, s in stats.items()}
    dense = variants[0].name
    print(
        "\n| variant | step ms, PyTorch BN | step ms, ssconv BN | BN change "
        f"| vs {dense}, PyTorch BN | vs {dense}, ssconv BN |\n|---|---|---|---|---|---|"
    )
    rows = []
    for v in variants:
        a, b = t[(v.name, "torch")], t[(v.name, "ssconv")]
        ra, rb = t[(dense, "torch")] / a, t[(dense, "ssconv")] / b
        rows.append(
            {
                "variant": v.name,
                "torch_ms": a,
                "ssconv_ms": b,
                "vs_dense_torch": ra,
                "vs_dense_ssconv": rb,
                "spread_torch": stats[(v.name, "torch")].spread,
                "spread_ssconv": stats[(v.name, "ssconv")].spread,
            }
        )
        print(f"| {v.name} | {a:.1f} | {b:.1f} | {a / b:.2f}x | {ra:.2f}x | {rb:.2f}x |")
    info = machine_info()
    print(
        f"\n{args.model} at {args.density}, batch {args.batch}, NCHW, {info['threads']} "
        f"threads, {info['processor']}, torch {info['torch']}, {info['date']}; medians of "
        "interleaved repeats"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "args": vars(args), "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
