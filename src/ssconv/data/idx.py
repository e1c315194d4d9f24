"""Reading and writing the IDX format of MNIST and Fashion-MNIST (plain or gzip-compressed).

The format (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code
(``0x08`` for unsigned bytes), the number of dimensions, one big-endian uint32 per dimension,
then the data in C order. Reading validates every part and names the file in its errors, since
a truncated download is the usual way these files go wrong.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ssconv.data.base import DatasetError

__all__ = ["parse_idx", "read_idx", "write_idx"]

_UBYTE = 0x08


def parse_idx(raw: bytes, *, source: str, ndim: int | None = None, hint: str = "") -> np.ndarray:
    """Parse the (decompressed) bytes of an IDX file of unsigned bytes.

    Args:
        raw: the file's content.
        source: the file's name, for error messages.
        ndim: the number of dimensions the file must have.
        hint: what the user should do if the file is bad, appended to errors.
    """
    suffix = f"; {hint}" if hint else ""
    if len(raw) < 4:
        raise DatasetError(f"{source}: file is truncated ({len(raw)} bytes){suffix}")
    zero, dtype, nd = raw[0:2], raw[2], raw[3]
    if zero != b"\x00\x00" or dtype != _UBYTE or (ndim is not None and nd != ndim):
        want = f"00 00 08 {ndim:02x}" if ndim is not None else "00 00 08 xx"
        raise DatasetError(
            f"{source}: bad magic number {raw[:4].hex(' ')} (expected {want}); not an IDX "
            f"file of unsigned bytes{' with ' + str(ndim) + ' dimensions' if ndim else ''}{suffix}"
        )
    header = 4 + 4 * nd
    if len(raw) < header:
        raise DatasetError(f"{source}: file is truncated inside its header{suffix}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(nd))
    expected = int(np.prod(shape, dtype=np.int64))
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "too long"
        raise DatasetError(
            f"{source}: file is {what}: its header says shape {shape} ({expected} bytes of "
            f"data) but it holds {found} bytes{suffix}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: str | Path, *, ndim: int | None = None, hint: str = "") -> np.ndarray:
    """Read an IDX file of unsigned bytes, gzip-compressed when its name ends in ``.gz``.

    Raises:
        DatasetError: the file is missing, truncated, not gzip, or not a valid IDX file; the
            message names the file and ends with ``hint``.
    """
    path = Path(path)
    suffix = f"; {hint}" if hint else ""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: file not found{suffix}") from e
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DatasetError(f"{path}: truncated or corrupt gzip file ({e}){suffix}") from e
    return parse_idx(raw, source=str(path), ndim=ndim, hint=hint)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, gzip-compressed (reproducibly) if ``path`` ends .gz."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 255:
        raise ValueError(f"write_idx needs a uint8 array, got {array.dtype} {array.shape}")
    raw = bytes([0, 0, _UBYTE, array.ndim])
    raw += b"".join(int(n).to_bytes(4, "big") for n in array.shape) + array.tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        # mtime=0 and no file name in the header: the same array always gives the same bytes.
        raw = gzip.compress(raw, compresslevel=9, mtime=0)
    path.write_bytes(raw)
