"""Checkpoints that survive crashes: atomic writes, newest-valid resume, safe loading, rotation.

* A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then
  renamed over its final name (``os.replace`` is atomic on POSIX); the folder is fsync'ed too.
* Loading always uses ``torch.load(..., weights_only=True)``: a checkpoint can never run code.
  There is no fallback to unsafe loading.
* :func:`latest_checkpoint` returns the newest checkpoint that loads, skipping (and naming)
  truncated or corrupt files.
* Rotation deletes old checkpoints only after the new one is safely on disk, and never the one
  just written.
* A write that fails (disk full, permission denied, read-only file system) raises an
  :class:`OSError` that keeps its ``errno`` and names the file (torch's zip writer would replace
  it by an obscure ``RuntimeError``); the half-written temporary file is removed.
* :func:`atomic_write_text` writes small state files (``final.json``, ``config.yaml``, ...) the
  same way: a reader, or a resume after ``kill -9``, sees the old file or the new one, never a
  torn one.
* :func:`save_weights` writes a weights-only file (``best.safetensors``, ``model.safetensors``)
  the same way: the model's state_dict in the `safetensors <https://github.com/huggingface/
  safetensors>`_ format (tensors only: loading it can run no code, and other tools read it),
  with what is needed to rebuild the model (its config, input size, classes) as metadata;
  :func:`load_weights` reads it back.

Test hook: ``SSCONV_TEST_WRITE_DELAY_S=SECONDS[@GLOB]`` makes every write of this module (of
the files whose name matches ``GLOB``) pause once in its middle, after part of the temporary file
is on disk, so that fault-injection tests can kill a process inside a checkpoint write. It is
read only from the environment and does nothing unless set.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "checkpoint_name",
    "atomic_write_text",
    "save_weights",
    "load_weights",
    "BEST_WEIGHTS",
    "FINAL_WEIGHTS",
    "WEIGHTS_FORMAT",
    "fsync_path",
    "with_filename",
    "remove_temporaries",
    "TEST_DELAY_ENV",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-e(\d+)-s(\d+)\.pt$")
#: Temporary files of writes that never finished (a kill inside ``save_checkpoint``).
_TEMPORARY = re.compile(r"^\..+\.tmp$")
TEST_DELAY_ENV = "SSCONV_TEST_WRITE_DELAY_S"
#: File names of a run folder's weights-only files: the weights of the epoch with the best
#: validation top-1 so far, and the final weights.
BEST_WEIGHTS = "best.safetensors"
FINAL_WEIGHTS = "model.safetensors"
#: The ``format`` metadata entry of the weights-only files this version writes.
WEIGHTS_FORMAT = "ssconv-weights-1"


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
    """Atomically write ``state`` to ``folder/name``, then delete all but the newest ``keep``.

    The checkpoint just written is never deleted by the rotation, even when the folder holds
    checkpoints with more progress (left unusable by a crash of the run being resumed).
    """
    folder = Path(folder)
    _mkdir(folder)
    final = folder / name

    def write(fh) -> None:
        sink = _Sink(fh, name)
        try:
            torch.save({"format_version": FORMAT_VERSION, **state}, sink)
        except RuntimeError:
            if sink.error is not None:  # the OSError torch's zip writer swallowed
                raise sink.error from None
            raise

    _write_atomic(final, write)
    for old in [p for p in list_checkpoints(folder) if p != final][max(keep - 1, 0) :]:
        old.unlink(missing_ok=True)
        log.debug("removed old checkpoint %s", old)
    return final


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, ``os.replace``)."""
    path = Path(path)
    data = text.encode()

    def write(fh) -> None:
        _Sink(fh, path.name).write(data)

    _write_atomic(path, write)
    return path


def save_weights(
    state: Mapping[str, Tensor], path: str | Path, *, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Atomically write ``state`` (a state_dict) to ``path`` as a safetensors file.

    The tensors are copied to the CPU (each into storage of its own: safetensors refuses
    tensors that share memory); every ``metadata`` value is stored JSON-encoded under its key,
    next to ``format`` (:data:`WEIGHTS_FORMAT`). Read it back with :func:`load_weights`.
    """
    from safetensors.torch import save

    path = Path(path)
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise TypeError(f"save_weights: entries {bad[:5]} of the state_dict are not tensors")
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    meta = {"format": WEIGHTS_FORMAT}
    meta.update({k: json.dumps(v) for k, v in (metadata or {}).items()})
    data = save(tensors, metadata=meta)
    _mkdir(path.parent)

    def write(fh) -> None:
        _Sink(fh, path.name).write(data)

    _write_atomic(path, write)
    return path


def load_weights(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(state_dict, metadata)`` of a file written by :func:`save_weights`, on the CPU.

    Raises :class:`CheckpointError` when the file is missing, truncated or not one of ssconv's
    weights files (a plain safetensors file without ssconv's metadata: load it with
    ``safetensors.torch.load_file``).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (no dict)
    except Exception as exc:  # truncated header or data, not a safetensors file
        raise CheckpointError(
            f"weights file {str(path)!r} cannot be loaded ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); it may be truncated"
        ) from None
    if raw.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not an ssconv weights file (format {raw.get('format')!r}, "
            f"expected {WEIGHTS_FORMAT!r})"
        )
    try:
        metadata = {k: json.loads(v) for k, v in raw.items() if k != "format"}
    except ValueError as exc:
        raise CheckpointError(f"{str(path)!r}: unreadable metadata ({exc})") from None
    return state, metadata


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files of writes that never finished (after a kill); returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        if _TEMPORARY.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder)) from None


def _write_atomic(final: Path, write) -> None:
    """``write(fh)`` into a temporary file next to ``final``, fsync, rename over ``final``.

    An :class:`OSError` (ENOSPC, EACCES, EROFS, ...) is re-raised with ``final`` as its file
    name, after removing the temporary file; ``final`` itself is untouched.
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as exc:
        raise with_filename(exc, final.parent) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise with_filename(exc, final) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(final.parent)


def with_filename(exc: OSError, path: Path) -> OSError:
    """``exc`` with ``path`` as its file name (a failed ``write()`` carries none)."""
    if exc.filename is not None or exc.errno is None:
        return exc
    named = type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))
    named.__cause__ = exc.__cause__
    return named


class _Sink:
    """A file wrapper that remembers the ``OSError`` of a failed write (see save_checkpoint)
    and honours the fault-injection delay of ``SSCONV_TEST_WRITE_DELAY_S``."""

    def __init__(self, fh, name: str) -> None:
        self.fh, self.name = fh, name
        self.error: OSError | None = None
        self.delay = _test_delay(name)

    def write(self, data) -> int:
        if self.delay > 0:  # test hook: half of the data on disk, then a pause
            view = memoryview(data).cast("B")
            half = len(view) // 2
            self._write(view[:half])
            self.flush()
            time.sleep(self.delay)
            self.delay = 0.0
            return half + self._write(view[half:])
        return self._write(data)

    def _write(self, data) -> int:
        try:
            n = self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise
        return len(data) if n is None else n

    def flush(self) -> None:
        try:
            self.fh.flush()
        except OSError as exc:
            self.error = exc
            raise


def _test_delay(name: str) -> float:
    text = os.environ.get(TEST_DELAY_ENV)
    if not text:
        return 0.0
    seconds, _, pattern = text.partition("@")
    if pattern and not fnmatch.fnmatchcase(name, pattern):
        return 0.0
    try:
        return max(0.0, float(seconds))
    except ValueError:
        return 0.0


def fsync_path(path: Path) -> None:
    """fsync a file or folder by path (best effort: errors are ignored)."""
    try:
        fd = os.open(path, os.O_RDONLY)
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
