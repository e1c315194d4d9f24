"""Per-layer SSC efficiency on the 3x3 layer shapes of CIFAR ResNet-32 and VGG-19 (batch 64).

    python benchmarks/layer_speed.py [--batch 64] [--repeats 11] [--device cpu]
                                     [--nchw] [--train] [--json out.json]
                                     [--shapes all|resnet32|vgg19] [--max-width N]

Prints a Markdown table (dense, masked, decomposed and split times side by side, measured
interleaved in one process) and the median efficiency over the rows at density <= 0.35.
``--train`` times forward + backward instead (CPU): dense, SSC as ``auto`` trains it (the fused
training kernels) and SSC on the stock backend choice, NCHW unless channels_last is asked for
(``--channels-last``). Speed is never asserted in tests; record the output in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from ssconv.bench.layers import (
    RESNET32_SHAPES,
    VGG19_SHAPES,
    format_markdown,
    format_train_markdown,
    run_layer_bench,
    run_layer_train_bench,
    summarize,
)
from ssconv.utils.malloc import tune_malloc
from ssconv.utils.timing import machine_info


def _emit(title, table, rows, summary, info, args, fmt) -> None:
    """Print the table and summary; with --json, also write them with the machine."""
    print(f"# {title}\n")
    print(table)
    print()
    print(json.dumps(summary, indent=2))
    if args.json:
        record = {"machine": info, "batch": args.batch, "memory_format": fmt}
        with open(args.json, "w") as fh:
            json.dump({**record, "rows": rows, "summary": summary}, fh, indent=2)


def main(argv=None) -> int:
    tune_malloc()  # as the ssconv command does (ssconv.utils.malloc)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--device", default="cpu")
    p.add_argument("--nchw", action="store_true", help="contiguous (NCHW) instead of channels_last")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--train", action="store_true", help="forward + backward (CPU)")
    p.add_argument("--channels-last", action="store_true", help="with --train")
    p.add_argument("--json", default=None, help="also write the rows and summary here")
    p.add_argument(
        "--shapes",
        choices=("all", "resnet32", "vgg19"),
        default="all",
        help="the layer shapes to time (default: both networks')",
    )
    p.add_argument(
        "--max-width",
        type=int,
        default=None,
        help="only the shapes of at most this many pixels per row (e.g. 8: VGG-19's last ones)",
    )
    p.add_argument(
        "--strided", action="store_true", help="only the strided shapes (ResNet-32's stage entries)"
    )
    args = p.parse_args(argv)
    shapes = {"resnet32": RESNET32_SHAPES, "vgg19": VGG19_SHAPES}.get(
        args.shapes, RESNET32_SHAPES + VGG19_SHAPES
    )
    if args.max_width is not None:
        shapes = [s for s in shapes if s.size <= args.max_width]
    if args.strided:
        shapes = [s for s in shapes if s.stride > 1]
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info(args.device)
    if args.train:
        rows = run_layer_train_bench(
            shapes,
            batch=args.batch,
            repeats=args.repeats,
            channels_last=args.channels_last,
            progress=lambda s: print(f"  measured {s.label()}", file=sys.stderr, flush=True),
        )
        summary = {
            **summarize(rows),
            "min_auto_eff": min(r["auto_eff"] for r in rows if r["density"] <= 0.35 + 1e-9),
        }
        fmt = "channels_last" if args.channels_last else "NCHW"
        title = f"layer training speed (forward + backward), batch {args.batch}, {fmt}, {info}"
        _emit(title, format_train_markdown(rows), rows, summary, info, args, fmt)
        return 0
    rows = run_layer_bench(
        shapes,
        batch=args.batch,
        repeats=args.repeats,
        device=args.device,
        channels_last=not args.nchw,
        progress=lambda s: print(f"  measured {s.label()}", file=sys.stderr, flush=True),
    )
    summary = summarize(rows)
    fmt = "NCHW" if args.nchw else "channels_last"
    title = f"layer speed, batch {args.batch}, {fmt}, {info}"
    _emit(title, format_markdown(rows), rows, summary, info, args, fmt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
