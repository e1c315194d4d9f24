"""``ssconv report RUNS...``: tables (Markdown, CSV) and plots from run folders."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ssconv.cli.common import CLIError, check_output_dir, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="tables and plots over run folders (mean ± std over seeds)",
        description="Collect finished runs under the given folders, group them by dataset, "
        "model, method and target density, and write results.md, results.csv and plots "
        "(accuracy vs density, vs effective MACs, vs measured latency; training curves). "
        "Reports are built only from the run folders.",
    )
    p.add_argument("runs", nargs="+", help="run folders or folders containing runs")
    p.add_argument(
        "-o", "--out", default=None, help="output folder (default: print the Markdown table only)"
    )
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="SEED",
        help="only the runs of these seeds (e.g. --seeds 0 1 2, so that every row rests on "
        "the same seeds); default: all",
    )
    p.add_argument(
        "--measure-latency",
        action="store_true",
        help="first measure the inference latency of runs that lack it (frozen "
        "model, one run after the other) and store it in their final.json; a sweep's "
        "recorded cell (no checkpoint) is timed on the structure its config.yaml builds",
    )
    p.add_argument(
        "--rename",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="show the runs labelled OLD as NEW (repeatable), e.g. to draw the cells of a "
        "sweep whose variants were named per density (ssc@0.02=ssc) on their method's line",
    )
    p.add_argument("--remeasure", action="store_true", help="with --measure-latency: all runs")
    p.add_argument(
        "--latency-batch",
        type=positive_int,
        default=64,
        help="batch size of --measure-latency",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ssconv.report.plots import plot_all
    from ssconv.report.results import (
        csv_table,
        find_runs,
        group_runs,
        markdown_table,
        seed_table,
    )

    if args.out:
        check_output_dir(args.out, "-o/--out")
    try:
        runs = find_runs(args.runs)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from None
    if not runs:
        raise CLIError(f"no finished runs (final.json with complete: true) under {args.runs}")
    if args.seeds is not None:
        found = sorted({r.config.get("seed") for r in runs}, key=str)
        wanted = set(args.seeds)
        runs = [r for r in runs if r.config.get("seed") in wanted]
        if not runs:
            raise CLIError(
                f"--seeds {' '.join(map(str, args.seeds))}: no finished run has these seeds "
                f"(the runs have seeds {', '.join(map(str, found))})"
            )
    for item in args.rename:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise CLIError(f"--rename {item}: expected OLD=NEW, e.g. --rename ssc@0.02=ssc")
        hits = [r for r in runs if r.label == old]
        if not hits:
            labels = ", ".join(sorted({r.label for r in runs}))
            raise CLIError(f"--rename {item}: no run is labelled {old!r} (labels: {labels})")
        for r in hits:
            r.config["label"] = new
    if args.measure_latency:
        from ssconv.report.latency import measure_run_latency

        todo = [r for r in runs if args.remeasure or r.final.get("latency_ms") is None]
        for i, r in enumerate(todo, 1):
            ms = measure_run_latency(r.folder, batch=args.latency_batch)
            # final.json now also holds the spread and the machine, which the plot shows.
            r.final.update(json.loads((Path(r.folder) / "final.json").read_text()))
            print(f"latency {i}/{len(todo)}: {ms:.1f} ms  {r.folder}", file=sys.stderr, flush=True)
    groups = group_runs(runs)
    table = markdown_table(groups) + "\n\nFinal test top-1 (%) per seed:\n\n" + seed_table(groups)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(table + "\n")
        (out / "results.csv").write_text(csv_table(groups))
        written = [out / "results.md", out / "results.csv"]
        if not args.no_plots:
            written += plot_all(groups, out)
        print(
            f"\n{len(runs)} runs in {len(groups)} groups; wrote "
            + ", ".join(str(p) for p in written)
        )
    return 0
