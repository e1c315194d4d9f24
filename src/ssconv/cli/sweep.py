"""``ssconv sweep SWEEP_FILE``: run a grid of training runs (skip done, resume partial)."""

from __future__ import annotations

import argparse
import sys
import time

from ssconv.cli.common import CLI_NAMES, CLIError, check_model, user_message


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid of training runs (models x methods x densities x seeds)",
        description="Run the cells of a sweep file as ordinary training runs. Finished cells "
        "are skipped and unfinished ones resumed. Several processes or machines sharing the "
        "output folder can work on the same grid: each claims a cell with a lock file "
        "(--next runs exactly one cell), or use --shard K/N for a static split.",
        epilog="Exit codes: 0 every selected cell done or skipped (the budget cannot be met by "
        "that structure); 1 some cell failed (see its failed.json) or was trained with other "
        "epochs than the file now says (status 'changed': use another --out); 2 bad sweep file, "
        "or the output folder cannot be written (disk full, permissions); 130/143 interrupted "
        "(the running cell saved a checkpoint; run again to resume).",
    )
    p.add_argument(
        "sweep_file",
        help="YAML or TOML file with out, base and grid (optional: results, variants, "
        "extends: another sweep file whose base this one starts from)",
    )
    p.add_argument(
        "--out", default=None, help="override the file's output folder (default: the file's out)"
    )
    p.add_argument(
        "--results",
        default=None,
        metavar="DIR",
        help="override the file's results folder, where each finished cell's config.yaml, "
        "final.json, metrics.jsonl, profile.txt and method.json are copied (to commit; a "
        "cell recorded there is done even without its run folder) (default: the file's "
        "results, if any)",
    )
    p.add_argument(
        "--record",
        action="store_true",
        help="copy every finished cell of the output folder to the results folder and exit "
        "(runs nothing; a normal run also records finished cells)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a base key of every cell (value parsed as YAML), e.g. device=cuda; "
        "repeatable. It changes the cells' digests, so use a separate --out",
    )
    p.add_argument("--list", action="store_true", help="list the cells and their status")
    p.add_argument(
        "--status",
        action="store_true",
        help="progress: cells done / running / left, epochs of unfinished cells, and an ETA "
        "from the finished cells' wall times (runs nothing)",
    )
    p.add_argument(
        "--cell",
        type=int,
        action="append",
        default=None,
        help="run only this cell index (repeatable) (default: every cell)",
    )
    p.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="run only cells with index %% N == K (default: no split)",
    )
    p.add_argument("--next", action="store_true", help="claim and run one pending cell")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: only when stderr is a terminal)",
    )
    p.set_defaults(func=run)


def _shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise CLIError(f"--shard expects K/N with integers, e.g. 0/4, got {text!r}") from None
    if not (n >= 1 and 0 <= k < n):
        raise CLIError(f"--shard {text}: need 0 <= K < N")
    return k, n


def run(args: argparse.Namespace) -> int:
    from ssconv.cli.train import console_logging, parse_set
    from ssconv.train.config import ConfigError
    from ssconv.train.sweep import (
        cell_status,
        claim,
        load_sweep,
        print_cells,
        print_progress,
        record,
        release,
        run_cell,
        schedule_change,
        write_failed,
    )
    from ssconv.train.trainer import (
        WRITE_ERRNOS,
        OutputError,
        TrainingInterrupted,
        describe_os_error,
    )

    try:
        spec = load_sweep(
            args.sweep_file, args.out, overrides=parse_set(args.set), results=args.results
        )
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    cells = spec.cells()
    for model in dict.fromkeys(c.config.model for c in cells):  # refused before any cell runs
        check_model(model, f"{args.sweep_file}: model")
    if args.cell is not None:
        bad = [i for i in args.cell if not 0 <= i < len(cells)]
        if bad:
            raise CLIError(f"--cell {bad[0]}: the grid has cells 0..{len(cells) - 1}")
        cells = [cells[i] for i in args.cell]
    if args.shard is not None:
        k, n = _shard(args.shard)
        cells = [c for c in cells if c.index % n == k]
    if args.list:
        print_cells(cells)
        return 0
    if args.status:
        print_progress(cells)
        return 0
    if args.record and spec.results is None:
        raise CLIError(
            f"--record: {args.sweep_file} names no results folder; add `results: DIR` to it "
            "or pass --results DIR"
        )

    def keep(cell) -> None:  # copy a finished cell to results; a failure loses nothing
        try:
            if record(cell):
                print(f"sweep: cell {cell.index} recorded in {cell.record}", flush=True)
        except OSError as exc:
            reason = describe_os_error(exc, cell.record, CLI_NAMES)
            print(
                f"sweep: could not record cell {cell.index} in {cell.record}: {reason}; its run "
                f"folder {cell.folder} still holds it (run `ssconv sweep --record` later)",
                file=sys.stderr,
                flush=True,
            )

    if args.record:
        for cell in cells:
            keep(cell)
        n = sum(cell_status(c) == "done" and c.record is not None for c in cells)
        print(f"sweep: {n} of {len(cells)} cells done and recorded in {spec.results}")
        return 0
    failed = 0
    ran = 0
    start = time.time()
    for cell in cells:
        status = cell_status(cell)
        if status == "done":
            keep(cell)
        if status in ("done", "skipped", "running"):
            continue
        if status == "changed":
            print(
                f"sweep: cell {cell.index} ({cell.label()}) in {cell.folder} was trained under "
                f"other settings: {schedule_change(cell)}; it is left alone: give the sweep "
                "another --out (or out:) for the new grid, or restore the old value",
                file=sys.stderr,
                flush=True,
            )
            failed += 1
            continue
        try:
            claimed = claim(cell)
        except OSError as exc:
            raise CLIError(describe_os_error(exc, cell.folder, CLI_NAMES)) from None
        if not claimed:
            continue
        print(f"[{cell.index + 1}/{len(spec.cells())}] {cell.label()} -> {cell.folder}", flush=True)
        try:
            with console_logging():
                status = run_cell(cell, progress=args.progress)
        except TrainingInterrupted as exc:
            print(f"sweep: {user_message(exc)}", flush=True)
            return 128 + int(exc.signum)
        except OutputError as exc:  # the disk, not the cell: every next cell would fail too
            raise CLIError(f"cell {cell.index}: {user_message(exc)}") from None
        except OSError as exc:
            if exc.errno not in WRITE_ERRNOS:
                raise
            message = describe_os_error(exc, cell.folder, CLI_NAMES)
            raise CLIError(f"cell {cell.index}: {message}") from None
        except Exception as exc:  # record and go on with the next cell
            write_failed(cell, f"{type(exc).__name__}: {exc}")
            print(
                f"sweep: cell {cell.index} failed: {type(exc).__name__}: {exc}",
                file=sys.stderr,
                flush=True,
            )
            status = "failed"
        finally:
            release(cell)
        if status == "done":
            keep(cell)
        ran += 1
        failed += status == "failed"
        print(f"[{cell.index + 1}] {status} after {time.time() - start:.0f} s total", flush=True)
        if args.next:
            break
    print_cells(spec.cells() if args.cell is None and args.shard is None else cells)
    return 1 if failed else 0
