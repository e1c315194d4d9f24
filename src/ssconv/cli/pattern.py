"""``ssconv pattern MODEL --layer NAME -o file.png``: draw one layer's kernel-type map."""

from __future__ import annotations

import argparse
import difflib

from torch import nn

from ssconv.cli.common import (
    CLIError,
    add_model_args,
    add_ssc_args,
    check_model,
    check_output_file,
    model_from_args,
)
from ssconv.report.pattern_plot import plot_pattern

SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")  # formats matplotlib always writes


def register(sub) -> None:
    p = sub.add_parser(
        "pattern",
        help="draw the kernel-type map (S / P / E) of one layer into an image",
        description="Draw the kernel-type map of one conv layer: output x input channels, "
        "coloured spatial (S), point (P) and empty (E), with checkerboard taps.",
    )
    add_model_args(p, weights=False)
    add_ssc_args(p)
    p.add_argument("--layer", required=True, help="layer name, as in `ssconv summary` (required)")
    p.add_argument(
        "-o", "--output", required=True, help=f"image file ({', '.join(SUFFIXES)}) (required)"
    )
    p.add_argument(
        "--max-channels",
        type=int,
        default=64,
        help="crop to this many output and input channels (0 = no crop)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_model(args.model)
    check_output_file(args.output, "-o/--output", SUFFIXES)
    model, _, _ = model_from_args(args)
    convs = {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) or type(m).__name__ == "SSConv2d"
    }
    if args.layer not in convs:
        close = difflib.get_close_matches(args.layer, list(convs), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise CLIError(f"--layer {args.layer!r} is not a conv layer of {args.model}{hint}")
    path = plot_pattern(
        convs[args.layer],
        args.output,
        title=f"{args.model}.{args.layer}",
        max_channels=args.max_channels or None,
    )
    print(f"wrote {path}")
    return 0
