"""glibc ``malloc`` settings that keep a training process's tensor memory in its heap.

PyTorch's CPU tensors come from ``malloc``. By default glibc serves blocks above a threshold
that it raises as large blocks are freed (128 KiB at first, at most 32 MiB on 64-bit systems)
with a fresh ``mmap`` each, and gives freed memory at the top of the heap back to the kernel
beyond a trim threshold, so an activation of a few MiB can cost its whole size in page faults
again in a later step. Measured on a 2-core Zen 4 VM (docs/benchmarks.md, "glibc's malloc"):
one ``threshold_backward`` of a 1 MiB tensor took 351 us with the default settings and 50 us
with the thresholds raised; on whole CIFAR ResNet-32 training steps two measurements disagreed
(about 10 % for dense and SSC alike in one, no difference in the other).

:func:`tune_malloc` fixes the mmap threshold at its maximum (32 MiB) and raises the trim
threshold to 1 GiB, the settings of the ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` environment variables; the ``ssconv`` command calls it on start.
The cost: freed memory stays with the process (its resident size keeps its peak). Set
``SSCONV_NO_MALLOC_TUNING=1`` to leave ``malloc`` as it is. Elsewhere than glibc Linux it does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc", "tuned"]

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit systems)
TRIM_THRESHOLD = 1 << 30

_done: bool | None = None


def tune_malloc() -> bool:
    """Apply the settings above once per process; returns whether they are in force
    (False with ``SSCONV_NO_MALLOC_TUNING`` set, or where glibc's ``mallopt`` is missing)."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("SSCONV_NO_MALLOC_TUNING", "") not in ("", "0"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl's mallopt does nothing)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _done


def tuned() -> bool:
    """Whether :func:`tune_malloc` has put its settings in force in this process."""
    return bool(_done)
