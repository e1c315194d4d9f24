"""``ssconv models [PATTERN]``: list the registered models."""

from __future__ import annotations

import argparse

from ssconv.cli.common import CLIError
from ssconv.models import list_models, model_info


def register(sub) -> None:
    p = sub.add_parser(
        "models",
        help="list registered models",
        description="List registered models whose name contains PATTERN (e.g. `ssconv models "
        "resnet`), or matches it as a shell pattern when it has * ? or [ (e.g. 'vgg*'). Every "
        "command that takes a model also takes timm:NAME (any timm model, needs timm) and "
        "tv:NAME / torchvision:NAME (a torchvision classification model).",
    )
    p.add_argument(
        "pattern",
        nargs="?",
        default="*",
        help="substring or shell pattern, e.g. resnet or 'vgg*' (default: all models)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    pattern = args.pattern if any(c in args.pattern for c in "*?[") else f"*{args.pattern}*"
    names = list_models(pattern)
    if not names:
        raise CLIError(
            f"no registered model matches {args.pattern!r}; `ssconv models` lists them all"
        )
    for name in names:
        info = model_info(name)
        size = "x".join(map(str, info.input_size))
        print(f"{name:18s} {info.family:13s} input {size:10s} {info.description}")
    return 0
