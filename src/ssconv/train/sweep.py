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

An optional ``extends`` names another sweep file (relative to this one) whose ``base`` this
file starts from; this file's ``base`` keys replace the inherited ones, and nothing else is
inherited (``out``, ``results``, ``grid`` and ``variants`` stay per file). A follow-up screen
then states only what it changes, and a change to the protocol cannot drift between screens::

    extends: ../fashion_mnist_regime.yaml
    base:
      epochs: 6                 # everything else as in the regime
    grid:
      method: [ssc, erk]

The cells' configs (and so their digests) are the resolved ones: moving a key from a file's
``base`` to the file it extends changes no cell.

Each cell is a normal run in ``out/<key>=<value>/...``. Finished cells are skipped, unfinished
ones resumed from their checkpoints.

An optional ``results`` folder keeps what a finished cell measured beyond the life of its run
folder: when a cell finishes, its ``config.yaml``, ``final.json``, ``metrics.jsonl``,
``profile.txt`` and ``method.json`` (:data:`RECORDED`, about 15 kB, no weights) are copied to
``results/<key>=<value>/...``, a folder meant to be committed
with the sweep file. A cell recorded there counts as done even where ``out`` is missing (a fresh
clone, another machine), so a grid spread over several machines or sessions is finished by
committing the records and running the same command; ``ssconv report RESULTS`` reads them like
run folders. :func:`record` copies a cell's files (``ssconv sweep --record`` does it for every
finished cell, e.g. those finished by an older version).

Several processes (or machines sharing the folder) can work on one grid: a cell is claimed by
creating its lock file atomically, so two workers never train the same cell; ``--shard K/N``
splits the grid statically instead.

Locks: a lock file is created complete (written to a temporary file, then hard-linked into
place, which fails if a lock exists), names its process (host, pid, the process's start time)
and a random token. A lock whose process is gone on this host (or whose pid now belongs to a
process started later) is stale and taken over; one of a live process is respected; one of
another host counts as stale after 6 h without any file of the cell changing. An empty or
unreadable lock (a worker of an older version killed while writing it) is stale once it is a
minute old. A worker only ever deletes its own lock.

A cell is done when its ``final.json`` is complete, has the cell's config digest and was
trained for the cell's ``epochs`` (that key is left out of the digest, so that more epochs can
continue a run; see :func:`ssconv.train.trainer.schedule_changes`). A finished or partial cell
whose ``epochs`` the sweep file changed so that resuming would mix two learning-rate schedules is
``changed``: it is reported and left alone (use another ``out`` for the new grid).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ssconv.train.config import ConfigError, TrainConfig, _check_items, read_config_file

__all__ = [
    "SweepSpec",
    "Cell",
    "load_sweep",
    "cell_status",
    "done_folder",
    "record",
    "schedule_change",
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
#: The files of a finished run that :func:`record` keeps: what ``ssconv report`` reads, and
#: the evidence of the budget (the per-layer profile; a pruning or structured method's report).
RECORDED = ("config.yaml", "final.json", "metrics.jsonl", "profile.txt", "method.json")


@dataclass(frozen=True)
class Cell:
    index: int
    values: dict[str, Any]  # the grid values of this cell
    config: TrainConfig
    folder: Path
    record: Path | None = None  # where the finished cell's results are kept (``results``)

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.values.items())


@dataclass
class SweepSpec:
    out: Path
    base: dict[str, Any]
    grid: dict[str, list]
    source: str
    variants: dict[str, dict[str, Any]] | None = None
    results: Path | None = None

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
            parts = [_slug(k, v) for k, v in values.items()]
            record = None if self.results is None else self.results.joinpath(*parts)
            cells.append(Cell(len(cells), values, config, self.out.joinpath(*parts), record))
        return cells


def _slug(key: str, value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in text)
    return f"{key}={safe}"


def load_sweep(
    path: str | Path,
    out: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    results: str | Path | None = None,
) -> SweepSpec:
    """Read and validate a sweep file; every cell's config is checked up front.

    ``overrides`` replace keys of ``base`` (a key the grid or a variant sets cannot be
    overridden: that would silently change what the grid compares). ``out`` and ``results``
    replace the file's folders.
    """
    path = Path(path)
    data = _read_sweep_file(path)
    base = _resolved_base(path, data, ())
    grid = data.get("grid") or {}
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{path}: grid must map config keys to lists of values")
    if overrides:
        _check_items(overrides, "--set")
        base = {**base, **overrides}
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
    if results is None:
        results = data.get("results")
        if results is not None and not isinstance(results, str):
            raise ConfigError(f"{path}: results must be a folder path, got {results!r}")
    kept = None if results is None else Path(results)
    if kept is not None and kept.resolve() == folder.resolve():
        raise ConfigError(
            f"{path}: results ({kept}) must differ from out: it keeps copies of the finished "
            "run folders"
        )
    spec = SweepSpec(folder, base, grid, str(path), variants, kept)
    spec.cells()  # validate every combination now, not hours later
    return spec


_TOP_KEYS = ("out", "results", "base", "grid", "variants", "description", "extends")


def _read_sweep_file(path: Path) -> dict:
    data = read_config_file(path, "sweep file")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with out, base and grid")
    unknown = set(data) - set(_TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown top-level key(s) {sorted(unknown)}; expected " + ", ".join(_TOP_KEYS)
        )
    return data


def _resolved_base(path: Path, data: dict, chain: tuple[Path, ...]) -> dict:
    """``data``'s ``base`` on top of the ``base`` of the file it ``extends`` (recursively)."""
    base = data.get("base") or {}
    _check_items(base, f"{path}: base")  # checked per file, so that errors name the file
    parent = data.get("extends")
    if parent is None:
        return dict(base)
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{path}: extends must be the path of another sweep file")
    target = (path.parent / parent).resolve()
    chain = (*chain, path.resolve())
    if target in chain:
        names = " -> ".join(str(p) for p in (*chain, target))
        raise ConfigError(f"{path}: extends forms a cycle ({names}); remove one of them")
    if not target.is_file():
        raise ConfigError(
            f"{path}: extends {parent!r}: no such file ({target}); the path is relative to "
            f"{path.parent}"
        )
    inherited = _resolved_base(target, _read_sweep_file(target), chain)
    return {**inherited, **base}


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or torn by an older version's non-atomic write
        return None
    return data if isinstance(data, dict) else None


def schedule_change(cell: Cell, folder: Path | None = None) -> str | None:
    """Why the run in ``folder`` (default: the cell's run folder) cannot continue as this cell
    (its saved ``epochs`` differ in a way that changes the learning-rate schedule of what it
    trained), else None."""
    from ssconv.train.trainer import schedule_changes

    folder = cell.folder if folder is None else folder
    try:
        saved = yaml.safe_load((folder / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(saved, dict):
        return None
    final = _read_json(folder / "final.json") or {}
    trained = _epochs_done(cell) if folder == cell.folder else 0
    started = max(int(final.get("epochs") or 0), trained)
    changes = schedule_changes(saved, cell.config, started)
    return "; ".join(changes) or None


def _finished_in(folder: Path, cell: Cell) -> bool:
    """Whether ``folder`` holds a complete run of exactly this cell (digest and epochs)."""
    final = _read_json(folder / "final.json")
    return (
        final is not None
        and bool(final.get("complete"))
        and final.get("config_digest") == cell.config.digest()
        and final.get("epochs", cell.config.epochs) == cell.config.epochs
        and schedule_change(cell, folder) is None
    )


def done_folder(cell: Cell) -> Path | None:
    """The folder holding the cell's finished run: its run folder, else its record (the
    sweep's ``results``), else None."""
    if _finished_in(cell.folder, cell):
        return cell.folder
    if cell.record is not None and _finished_in(cell.record, cell):
        return cell.record
    return None


def cell_status(cell: Cell) -> str:
    """done (in the run folder or recorded in ``results``), running (locked), skipped, failed,
    changed (see the module docstring), partial (checkpoints) or pending."""
    final = _read_json(cell.folder / "final.json")
    has_checkpoints = any((cell.folder / "checkpoints").glob("ckpt-*.pt"))
    if done_folder(cell) is not None:
        return "done"
    if (cell.folder / SKIPPED).is_file():
        return "skipped"
    lock = cell.folder / LOCK
    if lock.is_file() and not _stale(lock):
        return "running"
    if (final is not None or has_checkpoints) and schedule_change(cell) is not None:
        return "changed"
    if (cell.folder / FAILED).is_file():
        return "failed"
    if has_checkpoints:
        return "partial"
    return "pending"


def record(cell: Cell) -> bool:
    """Copy the finished run's :data:`RECORDED` files to the cell's record folder.

    Returns False when there is nothing to do (no ``results`` folder, the run folder holds no
    finished run, or the record is already up to date). Each file is written atomically and
    ``final.json`` last, so a record torn by a kill never counts as done.
    """
    from ssconv.train.checkpoint import atomic_write_text

    if cell.record is None or not _finished_in(cell.folder, cell):
        return False
    kept = cell.record / "final.json"
    if kept.is_file() and kept.read_bytes() == (cell.folder / "final.json").read_bytes():
        return False
    cell.record.mkdir(parents=True, exist_ok=True)
    (cell.record / "final.json").unlink(missing_ok=True)
    for name in sorted(RECORDED, key=lambda n: n == "final.json"):
        source = cell.folder / name
        if source.is_file():
            atomic_write_text(cell.record / name, source.read_text())
    return True


#: An empty or unreadable lock younger than this may be one being written (older versions
#: created the file first and wrote it next): respected until then.
TORN_LOCK_GRACE_S = 60.0


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux /proc, clock ticks), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _lock_info(content: bytes) -> dict | None:
    try:
        info = json.loads(content.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _stale(lock: Path, max_age_s: float = 6 * 3600, content: bytes | None = None) -> bool:
    """A lock whose process is gone (same host), or older than ``max_age_s`` without progress
    (another host); an empty or torn one once it is :data:`TORN_LOCK_GRACE_S` old."""
    try:
        if content is None:
            content = lock.read_bytes()
        mtime = lock.stat().st_mtime
    except FileNotFoundError:
        return True
    except OSError:
        return False  # cannot tell: leave it alone
    info = _lock_info(content)
    if info is None:
        return time.time() - mtime > TORN_LOCK_GRACE_S
    if info.get("host") == socket.gethostname():
        try:
            pid = int(info["pid"])
            os.kill(pid, 0)
        except (ProcessLookupError, ValueError, KeyError, TypeError, OverflowError):
            return True
        except PermissionError:
            pass  # alive, another user's
        started = info.get("start")
        now = _process_start(pid)
        # The pid was reused by a process started after the lock's.
        return started is not None and now is not None and str(started) != now
    newest = max(
        (p.stat().st_mtime for p in lock.parent.rglob("*") if p.is_file()),
        default=mtime,
    )
    return time.time() - newest > max_age_s


def _create_lock(lock: Path, content: bytes) -> bool:
    """Create ``lock`` with ``content`` complete, atomically; False if it exists."""
    tmp = lock.with_name(f"{LOCK}.new-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, lock)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create, then write
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _my_lock() -> bytes:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.time(),
        "start": _process_start(os.getpid()),
        "token": uuid.uuid4().hex,
    }
    return json.dumps(info).encode()


_held: dict[Path, bytes] = {}  # lock path -> the content this process wrote


def claim(cell: Cell) -> bool:
    """Atomically create the cell's lock; False if another live worker holds it.

    A stale lock is taken over: moved aside under a unique name (only one worker can move a
    given file), checked to be the stale one judged (else put back), then replaced by ours.
    """
    cell.folder.mkdir(parents=True, exist_ok=True)
    lock = cell.folder / LOCK
    mine = _my_lock()
    for _ in range(3):
        if _create_lock(lock, mine):
            _held[lock] = mine
            return True
        try:
            content = lock.read_bytes()
        except FileNotFoundError:
            continue  # released meanwhile: try again
        if not _stale(lock, content=content):
            return False
        aside = lock.with_name(f"{LOCK}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(lock, aside)
        except FileNotFoundError:
            continue  # another worker took it over first
        try:
            if aside.read_bytes() != content:
                # A fresh lock replaced the stale one between our read and the move: restore.
                with contextlib.suppress(FileExistsError):
                    os.link(aside, lock)
                return False
        finally:
            aside.unlink(missing_ok=True)
        log.warning("%s: took over a stale lock (%s)", lock, content.decode(errors="replace"))
    return False


def release(cell: Cell) -> None:
    """Delete the cell's lock if this process holds it (never another worker's)."""
    lock = cell.folder / LOCK
    mine = _held.pop(lock, None)
    try:
        content = lock.read_bytes()
    except OSError:
        return
    if mine is None or content == mine:
        if mine is None:
            info = _lock_info(content) or {}
            if info.get("pid") != os.getpid() or info.get("host") != socket.gethostname():
                return
        lock.unlink(missing_ok=True)


def run_cell(cell: Cell, *, progress: bool | None = None) -> str:
    """Train (or resume) one claimed cell; returns its new status."""
    from ssconv.errors import BudgetInfeasibleError, NoConvertibleLayerError
    from ssconv.train.checkpoint import atomic_write_text
    from ssconv.train.trainer import NonFiniteLossError, Trainer, TrainingInterrupted

    folder = cell.folder
    (folder / FAILED).unlink(missing_ok=True)
    trainer = None
    try:
        trainer = Trainer(cell.config, folder, resume="auto", progress=progress, ignore=(LOCK,))
        trainer.run()
    except (BudgetInfeasibleError, NoConvertibleLayerError) as exc:
        # The structure cannot reach this budget ("where shapes allow"): not a failure.
        atomic_write_text(folder / SKIPPED, json.dumps({"reason": str(exc)}, indent=2))
        return "skipped"
    except NonFiniteLossError as exc:
        write_failed(cell, str(exc))
        return "failed"
    if trainer is not None and trainer.stop_signal is not None:
        # A stop request that came after the last step (during the final evaluation): the
        # cell is done, and the sweep must still stop instead of starting the next cell.
        raise TrainingInterrupted(trainer.stop_signal, None)
    return "done"


def write_failed(cell: Cell, reason: str) -> None:
    """Record why a cell failed (atomically; best effort: the disk may be what failed)."""
    from ssconv.train.checkpoint import atomic_write_text

    try:
        atomic_write_text(cell.folder / FAILED, json.dumps({"reason": reason}, indent=2))
    except OSError as exc:
        log.warning("could not write %s: %s", cell.folder / FAILED, exc)


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
    accuracy: dict[int, float] = {}
    for cell in cells:
        folder = done_folder(cell) if status[cell.index] == "done" else None
        if folder is not None:
            final = _read_json(folder / "final.json")
            if final and final.get("wall_time_s"):
                walls.setdefault(label[cell.index], []).append(float(final["wall_time_s"]))
            if final and final.get("final_acc1") is not None:
                accuracy[cell.index] = float(final["final_acc1"])
    every = [w for ws in walls.values() for w in ws]
    left_s: float | None = 0.0 if every else None
    running = 0
    for cell in cells:
        st = status[cell.index]
        if st in ("done", "skipped", "failed", "changed"):
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
        "final_acc1": accuracy,
    }


def _duration(seconds: float) -> str:
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def print_progress(cells: list[Cell], out=None) -> dict[str, Any]:
    """One line per cell (status; finished epochs, or a finished cell's final test top-1)
    and a summary with the ETA."""
    out = out or sys.stdout
    info = progress(cells)
    for cell in cells:
        st = info["status"][cell.index]
        done = info["epochs_done"].get(cell.index)
        acc = info["final_acc1"].get(cell.index)
        epochs = "" if done is None else f"{done}/{cell.config.epochs} epochs"
        if acc is not None:
            epochs = f"{100 * acc:.2f} %"
        print(f"{cell.index:4d}  {st:8s}  {epochs:12s}  {cell.label()}", file=out)
    counts = info["counts"]
    left = sum(
        n for s, n in counts.items() if s not in ("done", "skipped", "failed", "changed", "running")
    )
    parts = [
        f"{counts.get('done', 0)} done",
        f"{counts.get('running', 0)} running",
        f"{left} left",
    ]
    parts += [f"{counts[s]} {s}" for s in ("skipped", "failed", "changed") if counts.get(s)]
    if info["eta_s"] is None:
        eta = "ETA: unknown until a cell finishes"
    else:
        eta = (
            f"ETA {_duration(info['eta_s'])} with {max(info['running'], 1)} worker(s) "
            f"({_duration(info['work_left_s'])} of work left)"
        )
    print(f"{info['cells']} cells: {', '.join(parts)}; {eta}", file=out)
    return info
