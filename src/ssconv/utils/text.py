"""Text formatting shared by the reports."""

from __future__ import annotations

__all__ = ["format_count"]


def format_count(n: float) -> str:
    """``1234567 -> '1.23M'``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n))
