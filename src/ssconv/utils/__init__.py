"""Helpers every floor may use and that import nothing else of ssconv: timing, module surgery,
text tables."""
