"""Check image files once before training: every file fully decoded, in parallel, the verdicts
cached by ``(path, size, mtime)``.

A file Pillow cannot open (not an image) or decode to the end (truncated, corrupt) would
otherwise stop a run when the data loader first reaches it, possibly hours in, or never in a
short test run. :func:`verify_images` finds them all up front; it also returns each image's
Pillow mode, from which :func:`is_grey` tells whether a folder holds only grey images.

The cache is a small JSON file, ``.ssconv-verified.json`` in the dataset's folder, or, where
that folder is not writable, in ``$SSCONV_CACHE_DIR`` (default ``$XDG_CACHE_HOME/ssconv``,
else ``~/.cache/ssconv``). A file whose size or modification time changed is decoded again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ssconv.data.base import image_error

__all__ = ["CACHE_NAME", "ImageCheck", "is_grey", "verify_images"]

logger = logging.getLogger(__name__)

CACHE_NAME = ".ssconv-verified.json"
_CACHE_VERSION = 1
#: Pillow modes of one-channel images (grey, grey + alpha, 1 bit, 32-bit int / float, 16 bit).
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
#: Files left to decode from which a progress bar is shown (on a terminal).
PROGRESS_FROM = 1000

# Verdicts of this process, so that a second split of the same folder (or a folder whose cache
# cannot be written) is not decoded twice: (absolute path, size, mtime_ns) -> (mode, error).
# Bounded (a few tens of MB), as a sweep process trains many runs on the same data.
_MEMO: dict[tuple[str, int, int], tuple[str | None, str | None]] = {}
_MEMO_MAX = 100_000
_MEMO_LOCK = threading.Lock()


@dataclass(frozen=True)
class ImageCheck:
    """The verdict on one file: its Pillow ``mode`` when it decodes, else ``error``."""

    path: str
    mode: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def is_grey(checks: Iterable[ImageCheck]) -> bool:
    """Whether every readable image is one-channel (modes 1, L, LA, I, F, I;16...)."""
    modes = [c.mode for c in checks if c.ok]
    return bool(modes) and all(m in GREY_MODES for m in modes)


def _decode(path: str) -> tuple[str | None, str | None]:
    try:
        with Image.open(path) as img:
            mode = img.mode
            img.load()  # the whole image: a truncated file fails here, not at open
        return mode, None
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ... by format
        return None, image_error(e)


def _cache_files(folder: Path) -> list[Path]:
    """Where the cache of ``folder`` may live, in order of preference."""
    base = os.environ.get("SSCONV_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "ssconv",
    )
    key = hashlib.sha1(str(folder).encode()).hexdigest()[:16]
    return [folder / CACHE_NAME, Path(base) / "verified" / f"{key}.json"]


def _read_cache(folder: Path) -> dict[str, list]:
    for path in _cache_files(folder):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("version") == _CACHE_VERSION:
            files = data.get("files")
            if isinstance(files, dict):
                return files
    return {}


def _write_cache(folder: Path, files: dict[str, list]) -> Path | None:
    """Write the cache atomically (a temporary file, then a rename); None when no place is
    writable (verification then simply runs again next time)."""
    text = json.dumps({"version": _CACHE_VERSION, "folder": str(folder), "files": files})
    for path in _cache_files(folder):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text)
            os.replace(tmp, path)
            return path
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
    return None


def _workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(16, cpus))


def verify_images(
    paths: Sequence[str | Path],
    *,
    folder: str | Path,
    what: str = "",
    progress: bool | None = None,
    workers: int | None = None,
) -> list[ImageCheck]:
    """Decode every file of ``paths`` once (in a thread pool: Pillow's decoders release the
    GIL) and return a verdict per file, in order.

    Args:
        paths: image files, under ``folder``.
        folder: the dataset's folder; the cache lives there (or in the cache dir) and holds
            the paths relative to it.
        what: the dataset's name in log lines and on the progress bar.
        progress: a tqdm bar on stderr: ``None`` when at least ``PROGRESS_FROM`` files are
            to be decoded and stderr is a terminal; ``True`` / ``False`` force it.
        workers: threads (default: one per CPU core, at most 16).
    """
    folder = Path(folder).absolute()
    cached = _read_cache(folder)
    stats: dict[str, tuple[str, int, int]] = {}  # relative path -> (absolute, size, mtime)
    verdicts: dict[str, tuple[str | None, str | None]] = {}
    for p in paths:
        absolute = os.path.abspath(p)
        rel = os.path.relpath(absolute, folder)
        try:
            st = os.stat(absolute)
        except OSError as e:
            verdicts[rel] = (None, image_error(e))
            continue
        if st.st_size == 0:
            verdicts[rel] = (None, "empty file (0 bytes)")
            continue
        stats[rel] = (absolute, st.st_size, st.st_mtime_ns)
        entry = cached.get(rel)
        if (
            isinstance(entry, list)
            and len(entry) == 4
            and entry[:2] == [st.st_size, st.st_mtime_ns]
        ):
            verdicts[rel] = (entry[2], entry[3])
            continue
        with _MEMO_LOCK:
            memo = _MEMO.get(stats[rel])
        if memo is not None:
            verdicts[rel] = memo
    todo = [rel for rel in stats if rel not in verdicts]
    if todo:
        start = time.perf_counter()
        bar = None
        if progress is not False and (progress or len(todo) >= PROGRESS_FROM):
            from tqdm.auto import tqdm

            bar = tqdm(
                total=len(todo),
                desc=f"verifying {what or folder}",
                unit="img",
                file=sys.stderr,
                disable=None if progress is None else False,
                dynamic_ncols=True,
                leave=False,
            )
        try:
            with ThreadPoolExecutor(max_workers=workers or _workers()) as pool:
                for rel, verdict in zip(todo, pool.map(_decode, [stats[r][0] for r in todo])):
                    verdicts[rel] = verdict
                    with _MEMO_LOCK:
                        if len(_MEMO) >= _MEMO_MAX:
                            _MEMO.clear()
                        _MEMO[stats[rel]] = verdict
                    if bar is not None:
                        bar.update()
        finally:
            if bar is not None:
                bar.close()
        files = dict(cached)
        files.update({rel: [*stats[rel][1:], *verdicts[rel]] for rel in todo})
        written = _write_cache(folder, files)
        logger.info(
            "%s: decoded %d image file(s) in %.1f s (%d already verified); verdicts cached in %s",
            what or folder,
            len(todo),
            time.perf_counter() - start,
            len(paths) - len(todo),
            written or "nowhere (no writable place)",
        )
    else:
        logger.info("%s: %d image file(s) verified before (cached)", what or folder, len(paths))
    out = []
    for p in paths:
        rel = os.path.relpath(os.path.abspath(p), folder)
        mode, error = verdicts[rel]
        out.append(ImageCheck(str(p), mode, error))
    return out
