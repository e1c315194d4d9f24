"""``ssconv demo``: the README's main job on an embedded default."""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from ssconv.models import convert, create_model
from ssconv.profile import profile


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="build an SSC model, print its per-layer table, run one training step",
        description="Build CIFAR ResNet-20 converted to SSC at a density, print its per-layer "
        "pattern / params / MACs table and run one forward/backward pass.",
    )
    p.add_argument("--model", default="cifar_resnet20")
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    report = convert(create_model(args.model), density=args.density, warn_coverage=False)
    model = report.model
    print(profile(model, (3, 32, 32)).table())
    x = torch.randn(args.batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch_size,))
    start = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    elapsed = time.perf_counter() - start
    print(
        f"\none forward/backward of {args.model} at density {report.density:.4f} "
        f"(target {args.density}) on a batch of {args.batch_size}: loss {loss.item():.4f}, "
        f"{elapsed * 1e3:.0f} ms"
    )
    return 0
