"""Checkpoints that survive crashes: atomic writes, newest-valid resume, safe loading, rotation.

* A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then
  renamed over its final name (``os.replace`` is atomic on POSIX); the folder is fsync'ed too.
* Loading always uses ``torch.load(..., weights_only=True)``: a checkpoint can never run code.
  There is no fallback to unsafe loading.
* :func:`latest_checkpoint` returns the newest checkpoint that loads, skipping (and naming)
  truncated or corrupt files.
* Rotation deletes old checkpoints only after the new one is safely on disk.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "checkpoint_name",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-e(\d+)-s(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (missing, corrupt, wrong format)."""


def checkpoint_name(epoch: int, step: int) -> str:
    """``ckpt-e{epoch}-s{global step}.pt``: sorts by training progress."""
    return f"ckpt-e{epoch:04d}-s{step:09d}.pt"


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoint files in ``folder``, newest (most progress) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        m = _NAME.match(path.name)
        if m:
            found.append(((int(m.group(1)), int(m.group(2))), path))
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint(state: dict[str, Any], folder: str | Path, name: str, *, keep: int = 2) -> Path:
    """Atomically write ``state`` to ``folder/name``, then delete all but the newest ``keep``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save({"format_version": FORMAT_VERSION, **state}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    for old in list_checkpoints(folder)[keep:]:
        old.unlink(missing_ok=True)
        log.debug("removed old checkpoint %s", old)
    return final


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); :class:`CheckpointError` if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, unpickling refused, ...
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be loaded ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}); it may be truncated or not an ssconv checkpoint"
        ) from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"checkpoint {str(path)!r} is not an ssconv checkpoint")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format {state['format_version']}, newer than this "
            f"ssconv understands ({FORMAT_VERSION}); upgrade ssconv"
        )
    return state


def latest_checkpoint(
    folder: str | Path, map_location: Any = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``folder`` that loads, skipping broken ones (logged by name)."""
    for path in list_checkpoints(folder):
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as exc:
            log.warning("skipping unusable checkpoint: %s", exc)
    return None
