"""Grids of ordinary training runs: models x methods x densities x seeds (any config key).

A sweep file (YAML or TOML)::

    out: runs/fmnist            # where the cells' run folders go
    base:                       # TrainConfig keys shared by every cell
      dataset: fashion_mnist
      epochs: 3
    grid:                       # TrainConfig keys with lists of values (cartesian product)
      method: [dense, ssc, snip]
      density: [0.1, 0.05]
      seed: [0, 1, 2]

An optional ``variants`` mapping names sets of keys that go together (a design study's rows);
each variant is crossed with the grid, and its name is the first part of the cell's folder::

    variants:
      ssc-dense-init: {method: ssc, init_scale: dense}
      erk: {method: erk}
    grid:
      density: [0.1]

Each cell is a normal run in ``out/<key>=<value>/...``. Finished cells are skipped, unfinished
ones resumed from their checkpoints. Several processes (or machines sharing the folder) can
work on one grid: a cell is claimed by creating its lock file atomically, so two workers never
train the same cell; ``--shard K/N`` splits the grid statically instead.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssconv.train.config import ConfigError, TrainConfig, _check_items, read_config_file

__all__ = [
    "SweepSpec",
    "Cell",
    "load_sweep",
    "cell_status",
    "run_cell",
    "claim",
    "release",
    "progress",
    "print_progress",
]

log = logging.getLogger(__name__)

LOCK = "sweep.lock"
SKIPPED = "skipped.json"
FAILED = "failed.json"


@dataclass(frozen=True)
class Cell:
    index: int
    values: dict[str, Any]  # the grid values of this cell
    config: TrainConfig
    folder: Path

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.values.items())


@dataclass
class SweepSpec:
    out: Path
    base: dict[str, Any]
    grid: dict[str, list]
    source: str
    variants: dict[str, dict[str, Any]] | None = None

    def cells(self) -> list[Cell]:
        """Every distinct cell (dense runs do not depend on density: one per other value)."""
        keys = list(self.grid)
        seen: set[str] = set()
        cells: list[Cell] = []
        variants = self.variants or {None: {}}
        for (variant, keys_of_variant), combo in itertools.product(
            variants.items(), itertools.product(*(self.grid[k] for k in keys))
        ):
            values = dict(zip(keys, combo))
            data = {**self.base, **keys_of_variant, **values}
            if data.get("method", TrainConfig.method) == "dense" and "density" in values:
                values = {k: v for k, v in values.items() if k != "density"}
                data["density"] = None
            if variant is not None:
                values = {"variant": variant, **values}
                data.setdefault("label", variant)
            config = TrainConfig.from_dict(data, source=f"{self.source} cell {values}")
            digest = config.digest()
            if digest in seen:
                continue
            seen.add(digest)
            folder = self.out.joinpath(*(_slug(k, v) for k, v in values.items()))
            cells.append(Cell(len(cells), values, config, folder))
        return cells


def _slug(key: str, value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in text)
    return f"{key}={safe}"


def load_sweep(
    path: str | Path, out: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> SweepSpec:
    """Read and validate a sweep file; every cell's config is checked up front.

    ``overrides`` replace keys of ``base`` (a key the grid or a variant sets cannot be
    overridden: that would silently change what the grid compares).
    """
    path = Path(path)
    data = read_config_file(path, "sweep file")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with out, base and grid")
    unknown = set(data) - {"out", "base", "grid", "variants", "description"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown top-level key(s) {sorted(unknown)}; expected out, "
            f"base, grid, variants, description"
        )
    base = data.get("base") or {}
    grid = data.get("grid") or {}
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{path}: grid must map config keys to lists of values")
    if overrides:
        _check_items(overrides, "--set")
        base = {**base, **overrides}
    _check_items(base, f"{path}: base")
    variants = data.get("variants")
    if variants is not None:
        if not isinstance(variants, dict) or not variants:
            raise ConfigError(f"{path}: variants must map names to mappings of config keys")
        for name, keys in variants.items():
            if not isinstance(keys, dict):
                raise ConfigError(f"{path}: variants.{name} must be a mapping of config keys")
            _check_items(keys, f"{path}: variants.{name}")
            overlap = set(keys) & set(grid)
            if overlap:
                raise ConfigError(
                    f"{path}: variants.{name} sets {sorted(overlap)}, which the grid also sets; "
                    "set each key in one place"
                )
    fixed = set(grid).union(*((variants or {}).values()))
    clash = sorted(set(overrides or {}) & fixed)
    if clash:
        raise ConfigError(
            f"--set {clash[0]}: {path} sets it per cell (grid or variants); edit the file instead"
        )
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid.{key} must be a non-empty list")
        for v in values:
            _check_items({key: v}, f"{path}: grid")
    folder = Path(out) if out is not None else Path(data.get("out") or "runs/sweep")
    spec = SweepSpec(folder, base, grid, str(path), variants)
    spec.cells()  # validate every combination now, not hours later
    return spec


def cell_status(cell: Cell) -> str:
    """done, running (locked), skipped, failed, partial (checkpoints) or pending."""
    final = cell.folder / "final.json"
    if final.is_file():
        data = json.loads(final.read_text())
        if data.get("complete") and data.get("config_digest") == cell.config.digest():
            return "done"
    if (cell.folder / SKIPPED).is_file():
        return "skipped"
    lock = cell.folder / LOCK
    if lock.is_file() and not _stale(lock):
        return "running"
    if (cell.folder / FAILED).is_file():
        return "failed"
    if any((cell.folder / "checkpoints").glob("ckpt-*.pt")):
        return "partial"
    return "pending"


def _stale(lock: Path, max_age_s: float = 6 * 3600) -> bool:
    """A lock whose process is gone (same host), or older than ``max_age_s`` without progress."""
    try:
        info = json.loads(lock.read_text())
    except (OSError, ValueError):
        return True
    if info.get("host") == socket.gethostname():
        try:
            os.kill(int(info["pid"]), 0)
        except (ProcessLookupError, ValueError, KeyError):
            return True
        except PermissionError:
            return False
        return False
    newest = max(
        (p.stat().st_mtime for p in lock.parent.rglob("*") if p.is_file()),
        default=lock.stat().st_mtime,
    )
    return time.time() - newest > max_age_s


def claim(cell: Cell) -> bool:
    """Atomically create the cell's lock; False if another live worker holds it."""
    cell.folder.mkdir(parents=True, exist_ok=True)
    lock = cell.folder / LOCK
    if lock.is_file() and _stale(lock):
        lock.unlink(missing_ok=True)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}, fh)
    return True


def release(cell: Cell) -> None:
    (cell.folder / LOCK).unlink(missing_ok=True)


def run_cell(cell: Cell, *, progress: bool | None = None) -> str:
    """Train (or resume) one claimed cell; returns its new status."""
    from ssconv.train.trainer import NonFiniteLossError, Trainer, TrainingInterrupted

    folder = cell.folder
    (folder / FAILED).unlink(missing_ok=True)
    trainer = None
    try:
        trainer = Trainer(cell.config, folder, resume=True, progress=progress, ignore=(LOCK,))
        trainer.run()
    except ValueError as exc:
        if "cannot be met" in str(exc) or "no conv layer" in str(exc):
            # The structure cannot reach this budget ("where shapes allow"): not a failure.
            (folder / SKIPPED).write_text(json.dumps({"reason": str(exc)}, indent=2))
            return "skipped"
        raise
    except NonFiniteLossError as exc:
        (folder / FAILED).write_text(json.dumps({"reason": str(exc)}, indent=2))
        return "failed"
    if trainer is not None and trainer.stop_signal is not None:
        # A stop request that came after the last step (during the final evaluation): the
        # cell is done, and the sweep must still stop instead of starting the next cell.
        raise TrainingInterrupted(trainer.stop_signal, None)
    return "done"


def print_cells(cells: list[Cell], out=None) -> None:
    out = out or sys.stdout
    counts: dict[str, int] = {}
    for cell in cells:
        status = cell_status(cell)
        counts[status] = counts.get(status, 0) + 1
        print(f"{cell.index:4d}  {status:8s}  {cell.label()}", file=out)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"{len(cells)} cells: {summary}", file=out)


def _epochs_done(cell: Cell) -> int:
    metrics = cell.folder / "metrics.jsonl"
    if not metrics.is_file():
        return 0
    done = 0
    for line in metrics.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a torn last line while the run appends
            continue
        if isinstance(row, dict) and row.get("kind") == "epoch":
            done = max(done, int(row.get("epoch", 0)))
    return done


def progress(cells: list[Cell]) -> dict[str, Any]:
    """Counts of cells by status and an ETA from the finished cells' wall times.

    The cost of a cell still to run is the mean wall time of finished cells with the same
    label (variant or method), else of all finished cells; running cells count their finished
    epochs. The ETA divides the work left by the number of running workers (at least one).
    """
    status = {cell.index: cell_status(cell) for cell in cells}
    epochs = {c.index: _epochs_done(c) for c in cells if status[c.index] != "done"}
    label = {cell.index: cell.config.label or cell.config.method for cell in cells}
    walls: dict[str, list[float]] = {}
    for cell in cells:
        if status[cell.index] == "done":
            try:
                final = json.loads((cell.folder / "final.json").read_text())
            except (OSError, ValueError):
                continue
            if final.get("wall_time_s"):
                walls.setdefault(label[cell.index], []).append(float(final["wall_time_s"]))
    every = [w for ws in walls.values() for w in ws]
    left_s: float | None = 0.0 if every else None
    running = 0
    for cell in cells:
        st = status[cell.index]
        if st in ("done", "skipped", "failed"):
            continue
        running += st == "running"
        if left_s is None:
            continue
        ws = walls.get(label[cell.index]) or every
        cost = sum(ws) / len(ws)
        if st in ("running", "partial"):
            cost *= max(0.0, 1.0 - epochs[cell.index] / cell.config.epochs)
        left_s += cost
    counts: dict[str, int] = {}
    for st in status.values():
        counts[st] = counts.get(st, 0) + 1
    workers = max(running, 1)
    return {
        "cells": len(cells),
        "counts": counts,
        "running": running,
        "work_left_s": left_s,
        "eta_s": None if left_s is None else left_s / workers,
        "status": status,
        "epochs_done": epochs,
    }


def _duration(seconds: float) -> str:
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def print_progress(cells: list[Cell], out=None) -> dict[str, Any]:
    """One line per cell (status, finished epochs) and a summary with the ETA."""
    out = out or sys.stdout
    info = progress(cells)
    for cell in cells:
        st = info["status"][cell.index]
        done = info["epochs_done"].get(cell.index)
        epochs = "" if done is None else f"{done}/{cell.config.epochs} epochs"
        print(f"{cell.index:4d}  {st:8s}  {epochs:12s}  {cell.label()}", file=out)
    counts = info["counts"]
    left = sum(n for s, n in counts.items() if s not in ("done", "skipped", "failed", "running"))
    parts = [
        f"{counts.get('done', 0)} done",
        f"{counts.get('running', 0)} running",
        f"{left} left",
    ]
    parts += [f"{counts[s]} {s}" for s in ("skipped", "failed") if counts.get(s)]
    if info["eta_s"] is None:
        eta = "ETA: unknown until a cell finishes"
    else:
        eta = (
            f"ETA {_duration(info['eta_s'])} with {max(info['running'], 1)} worker(s) "
            f"({_duration(info['work_left_s'])} of work left)"
        )
    print(f"{info['cells']} cells: {', '.join(parts)}; {eta}", file=out)
    return info
