"""``ssconv datasets``: list the dataset names ``ssconv train --dataset`` accepts."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "datasets",
        help="list dataset names",
        description="List the dataset names and forms --dataset accepts.",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ssconv.data import dataset_usage

    for name, usage in dataset_usage().items():
        print(f"{name:18s} {usage}")
    return 0
