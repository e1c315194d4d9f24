"""``ssconv models [PATTERN]``: list the registered models."""

from __future__ import annotations

import argparse

from ssconv.models import list_models, model_info


def register(sub) -> None:
    p = sub.add_parser(
        "models",
        help="list registered models",
        description="List registered models matching a shell pattern.",
    )
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'vgg*'")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for name in list_models(args.pattern):
        info = model_info(name)
        size = "x".join(map(str, info.input_size))
        print(f"{name:18s} {info.family:13s} input {size:10s} {info.description}")
    return 0
