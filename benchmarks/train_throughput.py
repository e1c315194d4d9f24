"""Training throughput (images/s) of the models the trainer builds, side by side in one process.

    python benchmarks/train_throughput.py [--model cifar_resnet20] [--dataset fashion_mnist]
        [--densities 0.1 0.05] [--methods dense ssc magnitude dw_separable] [--batch 128]
        [--threads 2] [--repeats 9] [--stock] [--stock-strided] [--channels-last]
        [--fast-batchnorm] [--json out.json]

A method may carry a layer-density distribution after a colon (``ssc_thin_point:erk`` is the
preset with ``distribution: erk``, as a config would set it).

Every model is built exactly as ``ssconv train`` builds it (``ssconv.train.methods``, the
regime's init rule), and one SGD step (forward, backward, Nesterov momentum update) on a fixed
random batch of the dataset's shape is timed, interleaved with the other models (medians and
interquartile spread). ``--stock`` adds the SSC models with the fused training kernels switched
off (``backend="decomposed"/"masked"`` as the stock ``auto`` rule picks them), so the kernels'
own gain is measured in the same process; ``--stock-strided`` switches off only the strided
layers' (their kernels since 2026-12-03). ``--fast-batchnorm`` adds every model again with its
BatchNorm2d layers on ssconv's NCHW kernels (``fast_batchnorm: true``), compared with dense
under the same BatchNorm. Speed is never asserted in tests; record the output in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys

import torch
from torch import nn

from ssconv import SSConv2d
from ssconv.data import dataset_info
from ssconv.layers.batchnorm import fast_batchnorm
from ssconv.train.config import TrainConfig
from ssconv.train.methods import build_model
from ssconv.utils.malloc import tune_malloc
from ssconv.utils.timing import machine_info, measure


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


class _Stock:
    """Run a model's SSC layers (``strided_only``: its strided ones) on the stock choice of
    ``auto`` (no fused training kernels)."""

    def __init__(self, model: nn.Module, strided_only: bool = False):
        self.layers = [
            m
            for m in model.modules()
            if isinstance(m, SSConv2d) and (not strided_only or tuple(m.stride) != (1, 1))
        ]
        self.choice = [m._stock_backend() for m in self.layers]

    def wrap(self, fn):
        def run() -> None:
            saved = [m.backend for m in self.layers]
            for m, b in zip(self.layers, self.choice):
                m.backend = b
            try:
                fn()
            finally:
                for m, b in zip(self.layers, saved):
                    m.backend = b

        return run


def main(argv=None) -> int:
    tune_malloc()  # as the ssconv command does (ssconv.utils.malloc)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="cifar_resnet20")
    p.add_argument("--dataset", default="fashion_mnist", help="only its shape is used")
    p.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.05])
    p.add_argument(
        "--methods",
        nargs="+",
        default=["dense", "ssc", "magnitude", "dw_separable"],
        help="methods of ssconv train, each optionally METHOD:DISTRIBUTION (ssc_thin_point:erk)",
    )
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--stock", action="store_true", help="also time SSC on stock kernels")
    p.add_argument(
        "--stock-strided",
        action="store_true",
        help="also time SSC with only its strided layers on stock kernels",
    )
    p.add_argument("--channels-last", action="store_true")
    p.add_argument(
        "--fast-batchnorm",
        action="store_true",
        help="also time every model with ssconv's BatchNorm kernels (fast_batchnorm: true)",
    )
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = dataset_info(args.dataset)
    c, h, w = info.input_size
    torch.manual_seed(0)
    x = torch.randn(args.batch, c, h, w)
    y = torch.randint(0, info.num_classes, (args.batch,))
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=fmt)
    candidates = {}
    for spec in args.methods:
        method, _, distribution = spec.partition(":")
        for density in [None] if method == "dense" else args.densities:
            keys = dict(dataset=args.dataset, model=args.model, method=method, init_scale="dense")
            if density is not None:
                keys["density"] = density
            if distribution:
                keys["distribution"] = distribution
            model, _ = build_model(TrainConfig.from_dict(keys), info.num_classes, c, (c, h, w))
            model.to(memory_format=fmt)
            name = spec if density is None else f"{spec}@{density:g}"
            candidates[name] = _step(model, x, y)
            if args.stock and any(isinstance(m, SSConv2d) for m in model.modules()):
                candidates[f"{name} (stock)"] = _Stock(model).wrap(_step(model, x, y))
            if args.stock_strided and any(isinstance(m, SSConv2d) for m in model.modules()):
                stock = _Stock(model, strided_only=True)
                candidates[f"{name} (strided stock)"] = stock.wrap(_step(model, x, y))
            if args.fast_batchnorm:
                fast = copy.deepcopy(model)
                fast_batchnorm(fast)
                candidates[f"{name} (fast BN)"] = _step(fast, x, y)
    stats = measure(candidates, repeats=args.repeats, warmup=2)
    dense = stats["dense"].median if "dense" in stats else None
    machine = machine_info("cpu")
    print(
        f"{args.model} on {args.dataset} shapes, batch {args.batch}, {machine['threads']} threads, "
        f"{'channels_last' if args.channels_last else 'NCHW'}, {machine['processor']}, "
        f"torch {machine['torch']}, {machine['date']}\n"
    )
    print("| model | ms / step | spread | images/s | vs dense (the same BatchNorm) |")
    print("|---|---|---|---|---|")
    rows = []
    fast_dense = stats["dense (fast BN)"].median if "dense (fast BN)" in stats else None
    for name, s in stats.items():
        ref = fast_dense if name.endswith("(fast BN)") and fast_dense else dense
        ratio = ref / s.median if ref else float("nan")
        print(
            f"| {name} | {s.median * 1e3:.0f} | ±{s.spread * 50:.0f} % | "
            f"{args.batch / s.median:.0f} | {ratio:.2f}x |"
        )
        rows.append({"name": name, **s.to_dict(), "images_per_s": args.batch / s.median})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine, "args": vars(args), "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
