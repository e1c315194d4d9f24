"""Options shared by several subcommands, and the error type they report."""

from __future__ import annotations

import argparse
import json
import sys

from ssconv.models import convert, create_model, model_info
from ssconv.models.budget import AUTO

__all__ = ["CLIError", "add_model_args", "add_ssc_args", "build_model", "period_arg", "emit_json"]


class CLIError(Exception):
    """A user error: printed as ``ssconv: error: ...`` with exit code 2."""


def period_arg(value: str):
    v = value.strip().lower()
    if v == "auto":
        return AUTO
    if v == "none":
        return None
    try:
        p = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--period must be a positive int, 'none' or 'auto', got {value!r}"
        ) from None
    if p < 1:
        raise argparse.ArgumentTypeError(f"--period must be positive, got {p}")
    return p


def density_arg(value: str) -> float:
    try:
        d = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--density must be a number, got {value!r}") from None
    if not 0 < d <= 1:
        raise argparse.ArgumentTypeError(f"--density must be in (0, 1], got {d}")
    return d


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model name (see `ssconv models`)")
    parser.add_argument("--num-classes", type=int, default=None, help="classifier outputs")
    parser.add_argument("--in-channels", type=int, default=3, help="image channels (1 = grey)")
    parser.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="image size for counting MACs (default: the model's own, e.g. 32 32)",
    )


def add_ssc_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("SSC conversion (omit all to keep the model dense)")
    g.add_argument(
        "--density",
        type=density_arg,
        default=None,
        help="target model density; the solver picks per-layer settings",
    )
    g.add_argument("--groups", type=int, default=None, help="SSC groups (fixed)")
    g.add_argument(
        "--period",
        type=period_arg,
        default=None,
        help="SSC period P (int, 'none' = no spatial kernel, 'auto')",
    )
    g.add_argument(
        "--pointwise",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="1x1 weights on the non-spatial pairs",
    )
    g.add_argument(
        "--spatial",
        choices=["full", "checkerboard"],
        default=None,
        help="taps of the spatial kernels",
    )
    g.add_argument(
        "--distribution",
        choices=["uniform", "erk"],
        default="uniform",
        help="layer-wise densities for --density",
    )
    g.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="PATTERN",
        help="keep convs whose name matches PATTERN dense (repeatable)",
    )
    g.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATTERN",
        help="convert convs matching PATTERN even if a default rule keeps them",
    )


def ssc_requested(args: argparse.Namespace) -> bool:
    return any(
        getattr(args, k, None) is not None
        for k in ("density", "groups", "period", "pointwise", "spatial")
    )


def build_model(args: argparse.Namespace):
    """(model, input_size (C, H, W), conversion report or None) from the parsed options."""
    try:
        info = model_info(args.model)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    model = create_model(args.model, num_classes=args.num_classes, in_channels=args.in_channels)
    hw = tuple(args.input_size) if args.input_size else info.input_size[1:]
    input_size = (args.in_channels, *hw)
    report = None
    if ssc_requested(args):
        settings = {
            k: getattr(args, k)
            for k in ("groups", "period", "pointwise", "spatial")
            if getattr(args, k) is not None
        }
        try:
            report = convert(
                model,
                density=args.density,
                distribution=args.distribution,
                skip=args.skip,
                include=args.include,
                inplace=True,
                warn_coverage=False,
                **settings,
            )
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        model = report.model
    return model, input_size, report


def emit_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")
