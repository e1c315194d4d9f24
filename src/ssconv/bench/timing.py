"""The old home of the timing helpers (``ssconv.bench.timing``), kept as re-exports for
scripts: they live in :mod:`ssconv.utils.timing`."""

from ssconv.utils.timing import Stats, machine_info, measure

__all__ = ["Stats", "machine_info", "measure"]
