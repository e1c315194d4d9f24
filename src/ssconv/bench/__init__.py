"""Speed measurements: timing helpers, the per-layer benchmark and model benchmarks."""

from ssconv.utils.timing import Stats, machine_info, measure

__all__ = ["Stats", "machine_info", "measure"]
