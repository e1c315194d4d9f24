"""``ssconv summary MODEL``: per-layer structure, parameters and MACs."""

from __future__ import annotations

import argparse

from ssconv import profile
from ssconv.cli.common import add_model_args, add_ssc_args, emit_json, model_from_args


def register(sub) -> None:
    p = sub.add_parser(
        "summary",
        help="per-layer table of a model (dense or SSC): settings, params, density, MACs",
        description="Build a model (optionally converted to SSC at a budget) and print its "
        "per-layer table: shape, SSC settings, params, density, effective and executed MACs.",
    )
    add_model_args(p)
    add_ssc_args(p)
    p.add_argument("--batch", type=int, default=1, help="batch size for the MAC counts")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model, input_size, report = model_from_args(args)
    result = profile(model, (args.batch, *input_size))
    if args.json:
        out = {"model": args.model, **result.to_dict()}
        out["target_density"] = report.target_density if report else None
        out["achieved_density"] = result.density
        if report is not None:
            out["conversion"] = report.to_dict()
        emit_json(out)
        return 0
    if report is not None:
        print(report.table())
        print()
    print(result.table())
    return 0
