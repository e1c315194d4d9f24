"""Text formatting shared by the reports: counts, fixed-width tables."""

from __future__ import annotations

from collections.abc import Collection, Sequence

__all__ = ["format_count", "text_table"]


def format_count(n: float) -> str:
    """``1234567 -> '1.23M'``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n))


def text_table(
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    right: Collection[int] = (),
    footer: Sequence[object] | None = None,
) -> list[str]:
    """The lines of a fixed-width table: columns two spaces apart, a rule under the header
    (and above ``footer``, a last row such as totals); the columns in ``right`` right-aligned,
    the others left-aligned; no trailing spaces."""
    cells = [[str(c) for c in r] for r in [header, *rows, *([footer] if footer else [])]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [line(cells[0]), rule, *(line(r) for r in cells[1 : len(rows) + 1])]
    if footer:
        lines += [rule, line(cells[-1])]
    return lines
